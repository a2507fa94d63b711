r"""Which soft loss, at which temperature: KL vs MSE vs cosine × T (seed 000).

  python -m experiments.soft_loss_study --preset=seed000 \
      --workdir=runs/soft_loss_seed000
  python -m experiments.soft_loss_study --preset=cpu --dataset=fashion_mnist \
      --workdir=runs/soft_loss_fmnist

Stages: `teacher`, `student_alone` (one run per seed) and `student_kd`: the
whole kind × temperature × seed grid as ONE vectorised program (the kind is a
traced branch index, so every member shares the data and the teacher).
Writes report.md (accuracy per kind and T), report.json, curves.png and
kinds.png (accuracy against T, one line per kind). The best kind and T are
chosen on the validation split (a seeded 10 % of the training split), by the
mean validation accuracy over seeds.

Kinds (kdjax.losses.soft_target_loss): `kl` (Hinton), `mse_logits` (the
high-temperature limit, T-free), `mse_probs` (MSE between softened
distributions), `cosine` (cosine-embedding distance, seed 000). `soft_ce`
has the same gradient as `kl` and is left out.

Presets:
  seed000  ResNet-20 → ResNet-11 on CIFAR-10; seed 000 found KL at T = 4.5 best.
  cpu      LightNN → a 100-100 MLP on 10,000 Fashion-MNIST training images,
           4 kinds × T ∈ {1, 2, 4.5, 8} × 3 seeds = 48 students in one program.
"""

import os

from experiments import common


KINDS = ('kl', 'mse_logits', 'mse_probs', 'cosine')
PRESETS = {
    'seed000': dict(dataset='cifar10', epochs=200, teacher='resnet20', student='resnet11',
                    kinds=KINDS, temperatures=(1.0, 2.0, 4.5, 8.0, 20.0),
                    reference='KL at T = 4.5 best (seed 000: 99.21% on MNIST)'),
    'cpu': dict(recipe='adam', dataset='fashion_mnist',
                epochs=8, seeds=3, train_examples=10000,
                teacher='lightnn', student='mlp', model_options={'mlp': {'hidden': (100, 100)}},
                kinds=KINDS, temperatures=(1.0, 2.0, 4.5, 8.0), reference=''),
}


def _plot(path, groups, kinds, temperatures, alone_accuracy, title):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  for kind in kinds:
    ax.plot(temperatures, [100 * common.mean_accuracy(groups[(kind, t)]) for t in temperatures],
            marker='o', label=kind)
  ax.axhline(100 * alone_accuracy, color='gray', ls='--', label='alone')
  ax.set_xscale('log')
  ax.set_xlabel('temperature T')
  common.save_figure(fig, ax, path, title)


def body(stages: common.Stages, preset: dict) -> str:
  temperatures = preset['temperatures']
  kinds = preset['kinds']
  teacher = common.members(stages.alone('teacher', preset['teacher'], seeds=1,
                                        epochs=preset.get('teacher_epochs')))
  alone = common.members(stages.alone('student_alone', preset['student']))
  kd = common.members(stages.distill(
      'student_kd', preset['student'], stages.teacher_of('teacher'),
      temperatures=temperatures, alphas=(common.ALPHA.value,), kinds=kinds))
  groups = common.group(kd, ('kind', 'temperature'))
  best, selection, oracle = common.select('soft-loss kind and T', groups, ('kind', 'temperature'))
  tables = [(f'Student {split} accuracy by kind and T (alpha={common.ALPHA.value:g}; '
             f'alone: {common.accuracy_text(alone, field)})',
             ['kind \\ T'] + [f'{t:g}' for t in temperatures],
             [[kind] + [common.accuracy_text(groups[(kind, t)], field) for t in temperatures]
              for kind in kinds])
            for split, field in (('validation', 'validation_accuracy'), ('test', 'test_accuracy'))]
  _plot(os.path.join(stages.workdir, 'kinds.png'), groups, kinds, temperatures,
        common.mean_accuracy(alone), f'{preset["student"]} on {stages.setup.dataset}')
  chosen = f'kind={best[0]}, T={best[1]:g}'
  common.plot_curves(f'{stages.workdir}/curves.png',
                     {'student alone': alone, f'chosen on validation: {chosen}': groups[best]},
                     f'{preset["student"]} on {stages.setup.dataset}')
  summary = [
      [f'teacher {preset["teacher"]}', common.accuracy_text(teacher), '`teacher`'],
      [f'student {preset["student"]} alone', common.accuracy_text(alone), '`student_alone`'],
      [f'student, kind and T chosen on validation: {chosen}',
       common.accuracy_text(groups[best]), '`student_kd`'],
  ]
  report_rows = [
      common.row(f'teacher {preset["teacher"]}', teacher, stage='teacher'),
      common.row(f'student {preset["student"]} alone', alone, stage='student_alone')]
  report_rows += [common.row(f'student {preset["student"]} from {preset["teacher"]}, '
                             f'kind={kind}, T={t:g}, alpha={common.ALPHA.value:g}',
                             groups[(kind, t)], stage='student_kd',
                             selected_on_validation=(kind, t) == best)
                  for kind in kinds for t in temperatures]
  notes = (f'Seed reports: {preset["reference"]}.\n' if preset['reference'] else '')
  notes += '\n' + common.oracle_text(groups, oracle, f'kind={oracle[0]}, T={oracle[1]:g}') + '\n'
  return common.write_report(
      stages, title=f'Soft-loss kind × temperature, preset {preset["name"]}',
      command=common.command_line(),
      sections=[('Summary', ['model', 'test accuracy', 'sub-workdir'], summary)] + tables,
      data={'teacher': [r['test_accuracy'] for r in teacher],
            'alone': [r['test_accuracy'] for r in alone], 'alpha': common.ALPHA.value,
            'grid': {f'{k},T={t:g}': [r['test_accuracy'] for r in groups[(k, t)]]
                     for k in kinds for t in temperatures},
            'chosen': selection},
      rows=report_rows, selections=[selection],
      notes=notes + '\nFigures: `kinds.png`, `curves.png`.\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='seed000')
