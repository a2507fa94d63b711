r"""Distillation methods side by side: teacher/student pairs × methods, over seeds.

  python -m experiments.method_zoo --preset=repdistiller --workdir=runs/zoo_cifar100
  python -m experiments.method_zoo --preset=cpu --dataset=fashion_mnist --seeds=3 \
      --workdir=runs/zoo_fmnist

Stages, per pair: `teacher_<T>` (one run, shared by the pairs it teaches),
`<S>_alone` (one run per seed), then one stage per method, each student taught
by that teacher: `kd` (Hinton's loss, T = 4, alpha = 0.9, i.e. RepDistiller's
`-r 0.1 -a 0.9`) and `at`, `sp`, `nst`, `pkt`, `rkd`, `dkd` (cross-entropy +
the method at its published weight, RepDistiller's `-a 0 -b β`; DKD with its own
alpha, beta, T and warm-up). Every run holds out the launchers' seeded 10 % of
the training split. The table gives, per method and pair, the mean ± std test
accuracy at the epoch chosen on validation and, after it, the last epoch's (the
number the references report), with the references' published numbers beside
ours where the pair is theirs; per method, its wall time and its cost per epoch
relative to KD.

Presets:
  repdistiller  CIFAR-100, the benchmark's recipe (SGD 0.05, momentum 0.9,
                weight decay 5e-4, batch 64, 240 epochs, /10 at 150/180/210;
                0.01 for MobileNetV2 and ShuffleNets), its 7 homogeneous and 6
                heterogeneous pairs, 1 seed (raise with --seeds).
  cpu           LightNN teaching SimpleNN (two conv stages each, so every
                method has its taps) on 10,000 Fashion-MNIST training images,
                6 epochs of Adam, 3 seeds: every method in about half an hour
                on 2 CPU cores.
"""

import os

import numpy as np

from experiments import common
from kdjax import report

METHODS = ('kd', 'at', 'sp', 'nst', 'pkt', 'rkd', 'dkd')
HOMOGENEOUS = (('wrn_40_2', 'wrn_16_2'), ('wrn_40_2', 'wrn_40_1'), ('resnet56', 'resnet20'),
               ('resnet110', 'resnet20'), ('resnet110', 'resnet32'),
               ('resnet32x4', 'resnet8x4'), ('vgg13', 'vgg8'))
HETEROGENEOUS = (('vgg13', 'mobilenetv2'), ('resnet50', 'mobilenetv2'), ('resnet50', 'vgg8'),
                 ('resnet32x4', 'shufflenetv1'), ('resnet32x4', 'shufflenetv2'),
                 ('wrn_40_2', 'shufflenetv1'))
# RepDistiller's CIFAR ResNets project their shortcuts (kdjax's shortcut 'B').
_B = {'shortcut': 'B'}
_LOW_LR = ('mobilenetv2', 'shufflenetv1', 'shufflenetv2')

# The published CIFAR-100 test accuracies (%) of HobbitLong/RepDistiller's README
# (Tian et al., "Contrastive Representation Distillation", ICLR 2020, tables 1-2):
# teacher, student alone, then per method. DKD is not in those tables.
_COLUMNS = ('teacher', 'alone', 'kd', 'at', 'sp', 'rkd', 'pkt', 'nst')
_REFERENCE_ROWS = {
    ('wrn_40_2', 'wrn_16_2'): (75.61, 73.26, 74.92, 74.08, 73.83, 73.35, 74.54, 73.68),
    ('wrn_40_2', 'wrn_40_1'): (75.61, 71.98, 73.54, 72.77, 72.43, 72.22, 73.45, 72.24),
    ('resnet56', 'resnet20'): (72.34, 69.06, 70.66, 70.55, 69.67, 69.61, 70.34, 69.60),
    ('resnet110', 'resnet20'): (74.31, 69.06, 70.67, 70.22, 70.04, 69.25, 70.25, 69.53),
    ('resnet110', 'resnet32'): (74.31, 71.14, 73.08, 72.31, 72.69, 71.82, 72.61, 71.96),
    ('resnet32x4', 'resnet8x4'): (79.42, 72.50, 73.33, 73.44, 72.94, 71.90, 73.64, 73.30),
    ('vgg13', 'vgg8'): (74.64, 70.36, 72.98, 71.43, 72.68, 71.48, 72.88, 71.53),
    ('vgg13', 'mobilenetv2'): (74.64, 64.60, 67.37, 59.40, 66.30, 64.52, 67.13, 58.16),
    ('resnet50', 'mobilenetv2'): (79.34, 64.60, 67.35, 58.58, 68.08, 64.43, 66.52, 64.96),
    ('resnet50', 'vgg8'): (79.34, 70.36, 73.81, 71.84, 73.34, 71.50, 73.01, 71.28),
    ('resnet32x4', 'shufflenetv1'): (79.42, 70.50, 74.07, 71.73, 73.48, 72.28, 74.10, 74.12),
    ('resnet32x4', 'shufflenetv2'): (79.42, 71.82, 74.45, 72.73, 74.56, 73.21, 74.69, 74.68),
    ('wrn_40_2', 'shufflenetv1'): (75.61, 70.50, 74.83, 73.32, 74.52, 72.21, 73.89, 74.89),
}
REFERENCE = {pair: dict(zip(_COLUMNS, values)) for pair, values in _REFERENCE_ROWS.items()}

PRESETS = {
    'repdistiller': dict(recipe='repdistiller', dataset='cifar100', epochs=240, seeds=1,
                         batch_size=64, pairs=HOMOGENEOUS + HETEROGENEOUS,
                         model_options={m: _B for m in ('resnet20', 'resnet32', 'resnet56',
                                                        'resnet110')},
                         low_lr_students=_LOW_LR,
                         # --quick: one pair (the VGGs, which tests narrow)
                         quick_pairs=(('vgg13', 'vgg8'),)),
    'cpu': dict(recipe='adam', dataset='fashion_mnist', epochs=6, seeds=3,
                train_examples=10000, pairs=(('lightnn', 'simplenn'),),
                quick_seeds=1),  # --quick: nine stages of one run each
}


def _recipe_changes(model: str, preset: dict) -> dict:
  """The preset's own learning rate for `model` (0.01 for the mobile nets), if any."""
  return ({'optimizer.learning_rate': 0.01}
          if model in preset.get('low_lr_students', ()) else {})


def _method_changes(method: str, student: str, preset: dict) -> tuple[dict, tuple, tuple]:
  """(config changes, temperatures, alphas) of one method's stage."""
  changes = _recipe_changes(student, preset)
  if method == 'kd':
    return changes, (4.0,), (0.9,)
  changes['method.name'] = method
  return changes, (4.0,), (0.0,)


def _label(student: str, teacher: str, method: str) -> str:
  if method == 'kd':
    return f'{student} from {teacher}: kd, T=4, alpha=0.9'
  return f'{student} from {teacher}: method={method}, alpha=0'


def _cell(runs: list[dict]) -> str:
  """'best-validation-epoch accuracy (last epoch)' over seeds."""
  return (f'{common.accuracy_text(runs, "test_accuracy_at_best_validation")} '
          f'({common.accuracy_text(runs)})')


def _per_epoch_seconds(stage: dict) -> float:
  runs = common.members(stage)
  return stage.get('train_seconds', 0.0) / max(1, len(runs) * stage.get('epochs', 1))


def body(stages: common.Stages, preset: dict) -> str:
  pairs = preset['pairs']
  teachers, alone, taught, report_rows = {}, {}, {}, []
  for teacher, student in pairs:
    if teacher not in teachers:
      teachers[teacher] = stages.alone(f'teacher_{teacher}', teacher, seeds=1,
                                       changes=_recipe_changes(teacher, preset))
      report_rows.append(common.row(f'teacher {teacher}', common.members(teachers[teacher]),
                                    stage=f'teacher_{teacher}'))
    if student not in alone:
      alone[student] = stages.alone(f'{student}_alone', student,
                                    changes=_recipe_changes(student, preset))
      report_rows.append(common.row(f'{student} alone', common.members(alone[student]),
                                    stage=f'{student}_alone'))
    for method in METHODS:
      changes, temperatures, alphas = _method_changes(method, student, preset)
      name = f'{student}_from_{teacher}_{method}'
      taught[(teacher, student, method)] = stages.distill(
          name, student, stages.teacher_of(f'teacher_{teacher}'), temperatures=temperatures,
          alphas=alphas, changes=changes)
      report_rows.append(common.row(_label(student, teacher, method),
                                    common.members(taught[(teacher, student, method)]),
                                    stage=name, method_name=method))

  header = ['method'] + [f'{t} → {s}' for t, s in pairs]
  table = [['teacher'] + [common.accuracy_text(common.members(teachers[t])) for t, _ in pairs],
           ['student alone'] + [_cell(common.members(alone[s])) for _, s in pairs]]
  for method in METHODS:
    table.append([method] + [_cell(common.members(taught[(t, s, method)])) for t, s in pairs])
  reference = [[column] + [f'{REFERENCE[pair][column]:.2f}' if pair in REFERENCE else ''
                           for pair in pairs] for column in _COLUMNS]
  kd_cost = np.mean([_per_epoch_seconds(taught[(t, s, 'kd')]) for t, s in pairs])
  seconds_path = os.path.join(stages.workdir, 'stage_seconds.json')
  seconds = report.read_json(seconds_path) if os.path.exists(seconds_path) else {}
  costs = []
  for method in METHODS:
    per_epoch = np.mean([_per_epoch_seconds(taught[(t, s, method)]) for t, s in pairs])
    wall = sum(seconds.get(f'{s}_from_{t}_{method}', 0.0) for t, s in pairs)
    costs.append([method, f'{wall / 60:.1f}', f'{per_epoch:.2f}', f'{per_epoch / kd_cost:.2f}'])
  sections = [('Test accuracy at the epoch chosen on validation (last epoch in brackets)',
               header, table),
              ('Cost', ['method', 'wall minutes (all pairs and seeds)', 's per epoch per run',
                        '× KD'], costs)]
  if any(pair in REFERENCE for pair in pairs):
    sections.append(('Published (RepDistiller README, CIFAR-100, last epoch, one run)',
                     header, reference))
  curves = {'alone': common.members(alone[pairs[0][1]])}
  curves.update({m: common.members(taught[(pairs[0][0], pairs[0][1], m)]) for m in METHODS})
  common.plot_curves(f'{stages.workdir}/curves.png', curves,
                     f'{pairs[0][0]} → {pairs[0][1]} on {stages.setup.dataset}')
  data = {'pairs': [list(p) for p in pairs], 'methods': list(METHODS),
          'accuracy': {f'{t}->{s}': {m: [r['test_accuracy'] for r in common.members(
              taught[(t, s, m)])] for m in METHODS} for t, s in pairs},
          'reference': {f'{t}->{s}': REFERENCE[(t, s)] for t, s in pairs if (t, s) in REFERENCE}}
  return common.write_report(
      stages, title=f'Distillation methods, preset {preset["name"]}',
      command=common.command_line(), sections=sections, data=data, rows=report_rows,
      notes='Nothing is chosen across runs: every method runs at its published weight. '
      'Within a run the reported epoch is the one with the best validation accuracy; the '
      'bracketed number is the last epoch, as the references report it.\n'
      'Figure: `curves.png` (the first pair).\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
