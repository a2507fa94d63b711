r"""Teacher-assistant distillation (TAKD; Mirzadeh et al., "Improved Knowledge Distillation
via Teacher Assistant", AAAI 2020) on seed 003's ResNet family.

  python -m experiments.takd --preset=cpu --workdir=runs/takd_cpu
  python -m experiments.takd --preset=cpu --dataset=mnist --workdir=runs/takd_cpu_mnist
  python -m experiments.takd --preset=fashion_mnist --workdir=runs/takd_fmnist
  python -m experiments.takd --preset=mnist --workdir=runs/takd_mnist

Seed 003 distils a ResNet-10 into ResNet-3, -4, -5 and -6 (kdjax.models.resnet: k basic
blocks over He's three CIFAR stages) and finds that KD helps the middle sizes most and
ResNet-6 not at all. Mirzadeh et al. put the gap itself in question: a student too small
for its teacher learns better through a teacher assistant (TA) of intermediate size,
teacher → TA → student, each step Hinton's KD.

Stages: `teacher` (ResNet-10 on the labels, one run), `student_alone` and `student_kd`
(the student on the labels, and taught by the teacher directly; one run per seed), and
per candidate chain of TAs: `ta_<A>` (TA A taught by the teacher, one run),
`ta_<A>_<B>` (B taught by A, for a chain of two) and `student_via_<A>[_<B>]` (the
student taught by the chain's last TA, one run per seed). Chains with a common first
part share its stages. Which chain (the TA's size, or two TAs) is chosen on the
student's validation accuracy; its test accuracy is the number reported beside direct KD
and the student alone. Every step is KD at --temperature and --alpha (T = 4, alpha = 0.9:
the seed does not give its own). The teacher learns from the whole training split; the
TAs and the students from the preset's training examples.

`--quick` trains two chains: the first (one TA) and the last (two).

Presets:
  cpu            Fashion-MNIST (or --dataset=mnist), the ImageNet stem (a 7×7 stride-2
                 conv and a stride-2 max-pool, so that 28×28 images reach the stages at
                 7×7 and 2 CPU cores finish it): teacher 4 epochs on 54,000 images, TAs
                 and students 8 epochs of Adam on 5,000; student ResNet-3, TA chains
                 ResNet-6, -5, -4 and -6 → -4; 3 seeds.
  fashion_mnist  the same chains at the CIFAR stem (the stages at 28×28, seed 003's
                 layouts as they are), teacher 10 epochs, TAs and students 15 epochs on
                 10,000 images, 3 seeds.
  mnist          the fashion_mnist preset on MNIST.
"""

from experiments import common

_IMAGENET_STEM = {m: {'stem': 'imagenet'}
                  for m in ('resnet3', 'resnet4', 'resnet5', 'resnet6', 'resnet10')}
_CHAINS = (('resnet6',), ('resnet5',), ('resnet4',), ('resnet6', 'resnet4'))

PRESETS = {
    'cpu': dict(recipe='adam', dataset='fashion_mnist', epochs=8, teacher_epochs=4, seeds=3,
                train_examples=5000, teacher='resnet10', student='resnet3', chains=_CHAINS,
                model_options=_IMAGENET_STEM),
    'fashion_mnist': dict(recipe='adam', dataset='fashion_mnist', epochs=15, teacher_epochs=10,
                          seeds=3, train_examples=10000, teacher='resnet10',
                          student='resnet3', chains=_CHAINS),
    'mnist': dict(recipe='adam', dataset='mnist', epochs=15, teacher_epochs=10, seeds=3,
                  train_examples=10000, teacher='resnet10', student='resnet3',
                  chains=_CHAINS),
}


def _kd(stages: common.Stages, name: str, model: str, teacher_stage: str, **kwargs) -> dict:
  """`model` taught by a finished stage at the flags' T and alpha."""
  return stages.distill(name, model, stages.teacher_of(teacher_stage),
                        temperatures=(common.TEMPERATURE.value,),
                        alphas=(common.ALPHA.value,), **kwargs)


def chain_stages(chain: tuple) -> tuple[list[str], str]:
  """The TA stages of a chain, teacher side first, and its student's stage: ('resnet6',
  'resnet4') -> (['ta_resnet6', 'ta_resnet6_resnet4'], 'student_via_resnet6_resnet4')."""
  return ([f'ta_{"_".join(chain[:i + 1])}' for i in range(len(chain))],
          f'student_via_{"_".join(chain)}')


def _train_chain(stages: common.Stages, preset: dict, chain: tuple) -> dict:
  """The chain's TAs (one run each, reused where chains share a start) and its student."""
  teacher_stage = 'teacher'
  ta_names, student_name = chain_stages(chain)
  for model, name in zip(chain, ta_names):
    if name not in stages.results:
      _kd(stages, name, model, teacher_stage, seeds=1)
    teacher_stage = name
  return _kd(stages, student_name, preset['student'], teacher_stage)


def _chain_text(preset: dict, chain: tuple) -> str:
  return ' → '.join((preset['teacher'], *chain, preset['student']))


def body(stages: common.Stages, preset: dict) -> str:
  teacher_model, student = preset['teacher'], preset['student']
  teacher = common.members(stages.alone('teacher', teacher_model, seeds=1,
                                        epochs=preset['teacher_epochs'],
                                        changes={'train_examples': 0}))
  alone = common.members(stages.alone('student_alone', student))
  direct = common.members(_kd(stages, 'student_kd', student, 'teacher'))
  candidates = tuple(preset['chains'])
  if stages.setup.quick:  # a smoke test: one TA, and two (the longest path)
    candidates = (candidates[0], candidates[-1])
  chains = {chain: common.members(_train_chain(stages, preset, chain))
            for chain in candidates}
  keys = {' → '.join(chain): chain for chain in chains}
  chosen, selection, _ = common.select(
      f'{student}: the teacher-assistant chain', {(k,): chains[c] for k, c in keys.items()},
      ('chain',))
  best = chains[keys[chosen[0]]]
  params = {name: result['params'] for name, result in stages.results.items()}
  setting = f'T={common.TEMPERATURE.value:g}, alpha={common.ALPHA.value:g}'
  report_rows = [common.row(f'teacher {teacher_model}', teacher, stage='teacher'),
                 common.row(f'student {student} alone', alone, stage='student_alone'),
                 common.row(f'student {student} taught by {teacher_model}, {setting}', direct,
                            stage='student_kd')]
  table = [[f'teacher {teacher_model}', f'{params["teacher"]:,}', '',
            common.accuracy_text(teacher), ''],
           [f'student {student} alone', f'{params["student_alone"]:,}',
            common.accuracy_text(alone, 'validation_accuracy'), common.accuracy_text(alone),
            ''],
           [_chain_text(preset, ()), f'{params["student_kd"]:,}',
            common.accuracy_text(direct, 'validation_accuracy'), common.accuracy_text(direct),
            'direct KD']]
  for chain, runs in chains.items():
    ta_names, name = chain_stages(chain)
    tas = ', '.join(f'{model} {common.accuracy_text(common.members(stages.results[stage]))}'
                    for model, stage in zip(chain, ta_names))
    report_rows.append(common.row(
        f'student {student} taught by {chain[-1]} (chain {_chain_text(preset, chain)}), '
        f'{setting}', runs, stage=name, chain=list(chain)))
    table.append([f'{_chain_text(preset, chain)} (TA: {tas})', f'{params[name]:,}',
                  common.accuracy_text(runs, 'validation_accuracy'), common.accuracy_text(runs),
                  'chosen on validation' if chain == keys[chosen[0]] else ''])
  gains = {'over_alone_points': 100 * (common.mean_accuracy(best) - common.mean_accuracy(alone)),
           'over_direct_kd_points': 100 * (common.mean_accuracy(best)
                                            - common.mean_accuracy(direct))}
  common.plot_curves(f'{stages.workdir}/curves.png',
                     {'student alone': alone, 'direct KD': direct, f'via {chosen[0]}': best},
                     f'TAKD, {student} on {stages.setup.dataset}')
  return common.write_report(
      stages, title=f'Teacher-assistant distillation, preset {preset["name"]}',
      command=common.command_line(),
      sections=[(f'{teacher_model} → {student}: directly, and through teacher assistants '
                 '(last epoch; mean ± std over the student\'s seeds)',
                 ['chain', 'student params', 'validation', 'test', ''], table)],
      data={'params': params, 'chains': [list(c) for c in chains], 'chosen': list(
          keys[chosen[0]]), 'alone': [r['test_accuracy'] for r in alone],
            'direct_kd': [r['test_accuracy'] for r in direct],
            'via': {k: [r['test_accuracy'] for r in chains[c]] for k, c in keys.items()},
            **gains},
      rows=report_rows, selections=[selection],
      notes=f'Each step is KD at {setting} (fixed, not chosen). The chain is chosen on the '
      'student\'s mean validation accuracy; the chosen chain gains '
      f'{gains["over_alone_points"]:+.2f} points over the student alone and '
      f'{gains["over_direct_kd_points"]:+.2f} over direct KD (test). The teacher and each TA '
      'are one run; the student runs once per seed.\nFigure: `curves.png`.\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
