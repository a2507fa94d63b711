r"""Distillation between architectures, both ways (seed 002: VGG-13 ↔ ResNet-18).

  python -m experiments.heterogeneous_kd --preset=seed002 --workdir=runs/hetero_seed002
  python -m experiments.heterogeneous_kd --preset=cpu --dataset=fashion_mnist \
      --workdir=runs/hetero_fmnist

Stages: `<A>_alone`, `<B>_alone` (one run per seed, vectorised), then
`<A>_from_<B>` and `<B>_from_<A>`, each student taught by the other family's
seed-0 run. Writes report.md, report.json and curves.png.

Presets:
  seed002  VGG-13 ↔ ResNet-18 on CIFAR-10 (the seed reports > 90% both ways).
  cpu      LightNN (conv net) ↔ an 800-800 MLP on 10,000 Fashion-MNIST
           training images, 3 seeds.
"""

from experiments import common


PRESETS = {
    'seed002': dict(dataset='cifar10', epochs=200, models=('vgg13', 'resnet18'),
                    reference={'vgg13_from_resnet18': '> 90% (seed 002)',
                               'resnet18_from_vgg13': '> 90% (seed 002)'}),
    'cpu': dict(recipe='adam', dataset='fashion_mnist',
                epochs=8, seeds=3, train_examples=10000,
                models=('lightnn', 'mlp'), reference={}),
}


def body(stages: common.Stages, preset: dict) -> str:
  a, b = preset['models']
  ref = preset['reference']
  alone = {m: common.members(stages.alone(f'{m}_alone', m)) for m in (a, b)}
  taught = {}
  for student, teacher in ((a, b), (b, a)):
    taught[student] = common.members(stages.distill(
        f'{student}_from_{teacher}', student, stages.teacher_of(f'{teacher}_alone'),
        temperatures=(common.TEMPERATURE.value,), alphas=(common.ALPHA.value,)))
  rows, data, curves, report_rows = [], {}, {}, []
  setting = f'T={common.TEMPERATURE.value:g}, alpha={common.ALPHA.value:g}'
  for student, teacher in ((a, b), (b, a)):
    gain = 100 * (common.mean_accuracy(taught[student]) - common.mean_accuracy(alone[student]))
    report_rows.append(common.row(f'{student} alone', alone[student], stage=f'{student}_alone'))
    report_rows.append(common.row(f'{student} taught by {teacher}, {setting}', taught[student],
                                  stage=f'{student}_from_{teacher}', gain_points=gain))
    rows.append([f'{student} alone', common.accuracy_text(alone[student]), '', '',
                 f'`{student}_alone`'])
    rows.append([f'{student} taught by {teacher} ({common.accuracy_text(alone[teacher][:1])})',
                 common.accuracy_text(taught[student]), f'{gain:+.2f}',
                 ref.get(f'{student}_from_{teacher}', ''), f'`{student}_from_{teacher}`'])
    data[student] = {'alone': [r['test_accuracy'] for r in alone[student]],
                     f'from_{teacher}': [r['test_accuracy'] for r in taught[student]],
                     'gain_points': gain}
    curves[f'{student} alone'] = alone[student]
    curves[f'{student} from {teacher}'] = taught[student]
  common.plot_curves(f'{stages.workdir}/curves.png', curves,
                     f'{a} <-> {b} on {stages.setup.dataset}')
  return common.write_report(
      stages, title=f'Heterogeneous distillation {a} ↔ {b}, preset {preset["name"]}',
      command=common.command_line(),
      sections=[(f'Both directions (T={common.TEMPERATURE.value:g}, alpha={common.ALPHA.value:g}; '
                 'each teacher is the seed-0 run of the other family)',
                 ['model', 'test accuracy', 'gain (points)', 'seed reports', 'sub-workdir'],
                 rows)],
      data=dict(data, temperature=common.TEMPERATURE.value, alpha=common.ALPHA.value),
      rows=report_rows, notes='Nothing is chosen: T and alpha are fixed by the flags, each '
      "teacher is the other family's first seed.\nFigure: `curves.png`.\n")


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='seed002')
