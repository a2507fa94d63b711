r"""Distillation methods side by side: teacher/student pairs × methods, over seeds.

  python -m experiments.method_zoo --preset=repdistiller --workdir=runs/zoo_cifar100
  python -m experiments.method_zoo --preset=cpu --dataset=fashion_mnist --seeds=3 \
      --workdir=runs/zoo_fmnist

Stages, per pair: `teacher_<T>` (one run, shared by the pairs it teaches),
`<S>_alone` (one run per seed), then one stage per method, each student taught
by that teacher: `kd` (Hinton's loss, T = 4, alpha = 0.9, i.e. RepDistiller's
`-r 0.1 -a 0.9`) and `fitnet`, `at`, `sp`, `cc`, `vid`, `rkd`, `pkt`, `ab`,
`ft`, `fsp`, `nst`, `crd`, `reviewkd`, `dkd` (cross-entropy + the method at its
published weight, RepDistiller's `-a 0 -b β`; Review KD at its authors' weight for
the pair, else mdistiller's 1, with its 20-epoch warm-up; DKD with its own alpha,
beta, T and warm-up), and
`crd+kd` (RepDistiller's `-r 1 -a 1 -b 0.8`, here at half that scale with the
same proportions: alpha 0.5, CRD weight 0.4), and the later logit methods at
their authors' CIFAR-100 settings (see `METHODS`): `dist`, `ctkd`, `kd+dot` (KD
trained by the DOT optimizer), `kd+ls`, `dkd+ls` (logit standardisation),
`mlkd` and `mlkd+ls` (two augmented views per batch). AB, FT and FSP start with
RepDistiller's init stage of method-only training (`config.method.init_epochs`:
30 epochs before the preset's epochs for `repdistiller`, 1 for `cpu`; the
learning-rate schedule is shifted by it); AB's and FSP's main training has no
AB or FSP term, as in RepDistiller. `--methods=kd,crd` runs a subset.
A method that cannot pair a teacher and student (FSP needs equal channels, as
in RepDistiller) is reported n/a for that pair. Every run holds out the launchers' seeded 10 % of
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
  cpu           ResNet-20 teaching ResNet-8 (He's CIFAR layouts, widths
                16/16/32/64, with the ImageNet stem so that 28×28 images reach
                the stages at 7×7: every method has its taps, FSP included),
                4 epochs of Adam, 3 seeds; the teacher on the whole training
                split, the students on its first 5,000 images (Fashion-MNIST by
                default; --dataset=mnist): 18 stages.
                CRD keeps its 16,384 negatives, drawn with replacement from
                the about 4,500 training examples of other classes.
"""

import os

from absl import flags
import numpy as np

from experiments import common
from experiments.method_zoo_reference import REFERENCE, REFERENCE_ORDER, REVIEWKD_WEIGHTS
from kdjax import report
from kdjax.errors import ConfigError

METHODS = ('kd', 'fitnet', 'at', 'sp', 'cc', 'vid', 'rkd', 'pkt', 'ab', 'ft', 'fsp', 'nst',
           'crd', 'crd+kd', 'reviewkd', 'dkd', 'dist', 'ctkd', 'mlkd', 'kd+dot', 'kd+ls',
           'dkd+ls', 'mlkd+ls')
# What each method's stage sets, at its authors' CIFAR-100 settings (the KD, DKD and MLKD
# weights as mdistiller's: CE 0.1 + KD 0.9 at T 4 is alpha 0.9):
#   dist     CE 1 + DIST 2 at tau 4 (hunto/image_classification_sota,
#            configs/strategies/distill/dist_cifar.yaml: `kd: dist_t4`, kd_loss_weight 2)
#   ctkd     KD at alpha 0.9 with CTKD's learned temperature in (1, 21), its cosine
#            curriculum over 10 epochs (zhengli97/CTKD's CIFAR script)
#   kd+dot   KD (alpha 0.9, T 4) trained by DOT: momentum 0.9 -/+ delta 0.075, SGD 0.05
#            (megvii-research/mdistiller, configs/cifar100/dot/res32x4_res8x4.yaml)
#   kd+ls    KD of standardised logits at T 2 (sunshangquan/logit-standardization-KD's
#            README: `--logit-stand --base-temp 2 --kd-weight 9`, i.e. CE 0.1 + KD 9; as
#            kdjax's (1 - alpha) CE + alpha KD that is alpha 9 / 9.1 = 0.989, the whole
#            loss at 1 / 9.1 of theirs)
#   dkd+ls   DKD of standardised logits, its alpha and beta times 9 (9, 72) at T 2 (the
#            same flags: their tools/train.py multiplies DKD.ALPHA and DKD.BETA by kd-weight)
#   mlkd     CE 0.1 per view + MLKD 0.9, base T 4, SGD 0.025 on CIFAR-100
#            (Jin-Ying/Multi-Level-Logit-Distillation, configs/cifar100/ours/res32x4_res8x4.yaml
#            and mdistiller's KD defaults); the strong view is kdjax's (kdjax.methods.mlkd)
#   mlkd+ls  MLKD with standardised logits in its KD terms, weight 9, base T 2 (the same flags)
_STANDARDIZED = ('kd+ls', 'dkd+ls', 'mlkd+ls')
# The method (config.method.name) each stage runs; '' for logit KD alone.
METHOD_NAMES = {'kd': '', 'crd+kd': 'crd', 'kd+dot': '', 'kd+ls': '', 'dkd+ls': 'dkd',
                'mlkd+ls': 'mlkd'}
# The soft term's weight (distill.alpha) of each stage: 0 (cross-entropy + the method) where
# not listed.
ALPHAS = {'kd': 0.9, 'crd+kd': 0.5, 'ctkd': 0.9, 'kd+dot': 0.9, 'kd+ls': 0.989}


def method_name(method: str) -> str:
  """`config.method.name` of a zoo method's stage ('' for none)."""
  return METHOD_NAMES.get(method, method)
HOMOGENEOUS = (('wrn_40_2', 'wrn_16_2'), ('wrn_40_2', 'wrn_40_1'), ('resnet56', 'resnet20'),
               ('resnet110', 'resnet20'), ('resnet110', 'resnet32'),
               ('resnet32x4', 'resnet8x4'), ('vgg13', 'vgg8'))
HETEROGENEOUS = (('vgg13', 'mobilenetv2'), ('resnet50', 'mobilenetv2'), ('resnet50', 'vgg8'),
                 ('resnet32x4', 'shufflenetv1'), ('resnet32x4', 'shufflenetv2'),
                 ('wrn_40_2', 'shufflenetv1'))
# RepDistiller's CIFAR ResNets project their shortcuts (kdjax's shortcut 'B').
_B = {'shortcut': 'B'}
_LOW_LR = ('mobilenetv2', 'shufflenetv1', 'shufflenetv2')


METHODS_FLAG = flags.DEFINE_list(
    'methods', [], 'Run only these methods (comma-separated, from: ' + ', '.join(METHODS)
    + '); default: all of them.')


def chosen_methods(names) -> tuple[str, ...]:
  """The methods a run trains: `names` in the table's order, or all of them."""
  unknown = [m for m in names if m not in METHODS]
  if unknown:
    raise ConfigError(f'--methods: unknown {", ".join(unknown)}; known: {", ".join(METHODS)}')
  return tuple(m for m in METHODS if m in names) if names else METHODS


PRESETS = {
    'repdistiller': dict(recipe='repdistiller', dataset='cifar100', epochs=240, seeds=1,
                         batch_size=64, pairs=HOMOGENEOUS + HETEROGENEOUS,
                         model_options={m: _B for m in ('resnet20', 'resnet32', 'resnet56',
                                                        'resnet110')},
                         low_lr_students=_LOW_LR, init_epochs=30,
                         mlkd_learning_rate=0.025,  # MLKD's authors' SOLVER.LR (batch 64)
                         # --quick: one pair (the VGGs, which tests narrow)
                         quick_pairs=(('vgg13', 'vgg8'),)),
    # Small ResNets of He's CIFAR layout with the ImageNet stem (a 7×7 stride-2 conv and a
    # stride-2 max-pool: 28×28 images reach the stages at 7×7), so that 16 methods × 3 seeds
    # fit 2 CPU cores; equal channels (16/16/32/64), so FSP runs too. The teacher learns from
    # the whole training split (54,000 images), the students from the first 5,000.
    'cpu': dict(recipe='adam', dataset='fashion_mnist', epochs=4, seeds=3,
                train_examples=5000, teacher_train_examples=0,
                pairs=(('resnet20', 'resnet8'),), init_epochs=1,
                # DOT replaces Adam by SGD with two momenta, at the authors' CIFAR rate; CTKD's
                # curriculum over the first epoch (theirs: 10 of 240).
                dot_learning_rate=0.05, ctkd_epochs=1.0,
                model_options={'resnet20': {'stem': 'imagenet'}, 'resnet8': {'stem': 'imagenet'}},
                quick_seeds=1),  # --quick: one run per stage
}


def _recipe_changes(model: str, preset: dict) -> dict:
  """The preset's own learning rate for `model` (0.01 for the mobile nets), if any."""
  return ({'optimizer.learning_rate': 0.01}
          if model in preset.get('low_lr_students', ()) else {})


_INIT_STAGE = ('ab', 'ft', 'fsp')


def _method_changes(method: str, teacher: str, student: str, preset: dict,
                    setup: common.Setup) -> tuple[dict, tuple, tuple]:
  """(config changes, temperatures, alphas) of one method's stage."""
  changes = _recipe_changes(student, preset)
  if method == 'kd':
    return changes, (4.0,), (0.9,)
  alphas = (ALPHAS.get(method, 0.0),)
  if method in _STANDARDIZED:
    changes['distill.standardize'] = True
  if method == 'kd+dot':  # DOT is SGD with two momenta: an SGD learning rate
    changes.update({'optimizer.name': 'dot', 'optimizer.nesterov': False})
    if 'optimizer.learning_rate' not in changes and 'dot_learning_rate' in preset:
      changes['optimizer.learning_rate'] = preset['dot_learning_rate']
    return changes, (4.0,), alphas
  if method == 'kd+ls':
    return changes, (2.0,), alphas
  if method == 'dkd+ls':
    changes.update({'method.dkd_alpha': 9.0, 'method.dkd_beta': 72.0,
                    'method.dkd_temperature': 2.0})
  if method == 'mlkd+ls':
    changes.update({'method.weight': 9.0, 'method.mlkd_temperature': 2.0})
  if (method_name(method) == 'mlkd' and 'optimizer.learning_rate' not in changes
      and 'mlkd_learning_rate' in preset):
    changes['optimizer.learning_rate'] = preset['mlkd_learning_rate']
  if method == 'ctkd' and 'ctkd_epochs' in preset:
    changes['method.ctkd_epochs'] = preset['ctkd_epochs']
  if method == 'reviewkd' and (teacher, student) in REVIEWKD_WEIGHTS:
    changes['method.weight'] = REVIEWKD_WEIGHTS[(teacher, student)]
  changes.update(preset.get('method_options', {}))
  if setup.quick:  # a size, shrunk like the others: negatives gathered per example
    changes['method.crd_nce_k'] = 64
  if method == 'crd+kd':
    changes.update({'method.name': 'crd', 'method.weight': 0.4})
    return changes, (4.0,), (0.5,)
  changes['method.name'] = method_name(method)
  if method in _INIT_STAGE:
    changes.update(_init_stage(setup, preset, student))
  return changes, (4.0,), alphas


def _init_stage(setup: common.Setup, preset: dict, student: str) -> dict:
  """RepDistiller's init stage before the run's epochs; the schedule moves with it. In a
  quick run it is the first of the shrunk run's epochs."""
  if setup.quick:
    return {'method.init_epochs': 1}
  init = int(preset.get('init_epochs', 30))
  config = setup.config(student)
  changes = {'method.init_epochs': init, 'num_epochs': config.num_epochs + init}
  if len(config.schedule.boundaries):
    changes['schedule.boundaries'] = tuple(b + init for b in config.schedule.boundaries)
  return changes


def _pairs_with(method: str, teacher: str, student: str, setup: common.Setup) -> bool:
  """Whether `method` can pair the two networks (traced abstractly, nothing runs)."""
  if not method_name(method):
    return True
  from kdjax.data import catalog  # pylint: disable=import-outside-toplevel
  from kdjax.train import teacher as teacher_lib  # pylint: disable=import-outside-toplevel
  info = catalog.get_info(setup.dataset)
  config, teacher_config = setup.config(student), setup.config(teacher)
  config.method.name = method_name(method)
  try:
    teacher_lib._check_method(  # pylint: disable=protected-access
        config, teacher_config, info.num_classes, tuple(info.image_shape))
  except ConfigError as e:
    print(f'{method} is n/a for {teacher} -> {student}: {e}', flush=True)
    return False
  return True


def _label(student: str, teacher: str, method: str, changes: dict) -> str:
  """What the stage trained with, in words `tests/test_presets.py` reads back (T=, alpha=,
  method=)."""
  head = f'{student} from {teacher}:'
  if method == 'kd':
    return f'{head} kd, T=4, alpha=0.9'
  if method == 'crd+kd':
    return f'{head} method=crd, weight 0.4, T=4, alpha=0.5'
  if method == 'kd+dot':
    return (f'{head} kd trained by optimizer dot (delta 0.075, lr '
            f'{changes.get("optimizer.learning_rate", "of the recipe")}), T=4, alpha=0.9')
  if method == 'kd+ls':
    return f'{head} kd of standardized logits, T=2, alpha={ALPHAS[method]:g}'
  if method == 'ctkd':
    return f'{head} method=ctkd (learned temperature in 1 to 21), alpha=0.9'
  if method == 'dkd+ls':
    return (f'{head} method=dkd of standardized logits (DKD alpha 9, beta 72 at its T 2), '
            'alpha=0')
  if method_name(method) == 'mlkd':
    stand = ' of standardized logits' if method == 'mlkd+ls' else ''
    weight = changes.get('method.weight', 0.9)
    base = changes.get('method.mlkd_temperature', 4.0)
    lr = (f', lr {changes["optimizer.learning_rate"]:g}' if 'optimizer.learning_rate' in changes
          else '')
    return (f'{head} method=mlkd{stand} (weight {weight:g}, CE 0.1 per view, base '
            f'temperature {base:g}, two views{lr}), alpha=0')
  weight = (f', weight {changes["method.weight"]:g}' if 'method.weight' in changes
            else '')
  return f'{head} method={method}{weight}, alpha=0'


def _cell(runs: list[dict] | None) -> str:
  """'best-validation-epoch accuracy (last epoch)' over seeds; n/a for a pair the method
  cannot compare."""
  if runs is None:
    return 'n/a'
  return (f'{common.accuracy_text(runs, "test_accuracy_at_best_validation")} '
          f'({common.accuracy_text(runs)})')


def _per_epoch_seconds(stage: dict | None) -> float:
  if stage is None:
    return float('nan')
  runs = common.members(stage)
  return stage.get('train_seconds', 0.0) / max(1, len(runs) * stage.get('epochs', 1))


def _members(stage: dict | None) -> list[dict] | None:
  return None if stage is None else common.members(stage)


def _stage_name(student: str, teacher: str, method: str) -> str:
  return f'{student}_from_{teacher}_{method.replace("+", "_")}'


def _model_text(model: str, preset: dict) -> str:
  """A model's name in the table, with its stem where it is not the CIFAR one."""
  stem = preset.get('model_options', {}).get(model, {}).get('stem', 'cifar')
  return model if stem == 'cifar' else f'{model} ({stem} stem)'


def _published(pair: tuple, column: str) -> str:
  value = REFERENCE.get(pair, {}).get(column)
  return '' if value is None else f'{value:.2f}'


def _cost_rows(workdir: str, pairs, methods, taught: dict) -> list[list[str]]:
  """Per method: wall minutes over its stages, seconds per epoch per run, and that cost
  relative to KD's."""
  kd_cost = np.mean([_per_epoch_seconds(taught[(t, s, 'kd')]) for t, s in pairs])
  seconds_path = os.path.join(workdir, 'stage_seconds.json')
  seconds = report.read_json(seconds_path) if os.path.exists(seconds_path) else {}
  costs = []
  for method in methods:
    ran = [(t, s) for t, s in pairs if taught[(t, s, method)] is not None]
    if not ran:
      costs.append([method, 'n/a', 'n/a', 'n/a'])
      continue
    per_epoch = np.mean([_per_epoch_seconds(taught[(t, s, method)]) for t, s in ran])
    wall = sum(seconds.get(_stage_name(s, t, method), 0.0) for t, s in ran)
    costs.append([method, f'{wall / 60:.1f}', f'{per_epoch:.2f}', f'{per_epoch / kd_cost:.2f}'])
  return costs


def body(stages: common.Stages, preset: dict) -> str:
  pairs = preset['pairs']
  methods = chosen_methods((METHODS_FLAG.value if flags.FLAGS.is_parsed() else None)
                           or preset.get('methods', ()))
  teachers, alone, taught, report_rows = {}, {}, {}, []
  for teacher, student in pairs:
    if teacher not in teachers:
      changes, label = _recipe_changes(teacher, preset), f'teacher {teacher}'
      if 'teacher_train_examples' in preset:
        changes['train_examples'] = preset['teacher_train_examples']
        label += (' (whole training split)' if not preset['teacher_train_examples'] else
                  f' ({preset["teacher_train_examples"]} training images)')
      teachers[teacher] = stages.alone(f'teacher_{teacher}', teacher, seeds=1, changes=changes)
      report_rows.append(common.row(label, common.members(teachers[teacher]),
                                    stage=f'teacher_{teacher}'))
    if student not in alone:
      alone[student] = stages.alone(f'{student}_alone', student,
                                    changes=_recipe_changes(student, preset))
      report_rows.append(common.row(f'{student} alone', common.members(alone[student]),
                                    stage=f'{student}_alone'))
    for method in methods:
      if not _pairs_with(method, teacher, student, stages.setup):
        taught[(teacher, student, method)] = None
        continue
      changes, temperatures, alphas = _method_changes(method, teacher, student, preset,
                                                      stages.setup)
      name = _stage_name(student, teacher, method)
      taught[(teacher, student, method)] = stages.distill(
          name, student, stages.teacher_of(f'teacher_{teacher}'), temperatures=temperatures,
          alphas=alphas, changes=changes)
      report_rows.append(common.row(_label(student, teacher, method, changes),
                                    common.members(taught[(teacher, student, method)]),
                                    stage=name, method_name=method))

  header = ['method'] + [f'{_model_text(t, preset)} → {_model_text(s, preset)}'
                         for t, s in pairs]
  table = [['teacher'] + [common.accuracy_text(common.members(teachers[t])) for t, _ in pairs],
           ['student alone'] + [_cell(common.members(alone[s])) for _, s in pairs]]
  for method in methods:
    table.append([method] + [_cell(_members(taught[(t, s, method)])) for t, s in pairs])
  reference = [[column] + [_published(pair, column) for pair in pairs]
               for column in REFERENCE_ORDER]
  costs = _cost_rows(stages.workdir, pairs, methods, taught)
  sections = [('Test accuracy at the epoch chosen on validation (last epoch in brackets)',
               header, table),
              ('Cost', ['method', 'wall minutes (all pairs and seeds)', 's per epoch per run',
                        '× KD'], costs)]
  if any(pair in REFERENCE for pair in pairs):
    sections.append(('Published (CIFAR-100; RepDistiller README, and for DKD, DIST, CTKD, DOT, '
                     'MLKD and logit standardisation (LS) their authors\' READMEs)',
                     header, reference))
  curves = {'alone': common.members(alone[pairs[0][1]])}
  curves.update({m: common.members(taught[(pairs[0][0], pairs[0][1], m)]) for m in methods
                 if taught[(pairs[0][0], pairs[0][1], m)] is not None})
  common.plot_curves(f'{stages.workdir}/curves.png', curves,
                     f'{pairs[0][0]} → {pairs[0][1]} on {stages.setup.dataset}')
  data = {'pairs': [list(p) for p in pairs], 'methods': list(methods),
          'accuracy': {f'{t}->{s}': {m: [r['test_accuracy'] for r in common.members(
              taught[(t, s, m)])] for m in methods if taught[(t, s, m)] is not None}
                       for t, s in pairs},
          'reference': {f'{t}->{s}': REFERENCE[(t, s)] for t, s in pairs if (t, s) in REFERENCE}}
  return common.write_report(
      stages, title=f'Distillation methods, preset {preset["name"]}',
      command=common.command_line(), sections=sections, data=data, rows=report_rows,
      notes='Nothing is chosen across runs: every method runs at its published weight. '
      'Within a run the reported epoch is the one with the best validation accuracy; the '
      'bracketed number is the last epoch, as the references report it. crd+kd weighs '
      'CE, KD and CRD 0.5 : 0.5 : 0.4 (RepDistiller: 1 : 1 : 0.8). AB, FT and FSP begin with '
      'their init stage (method-only training), counted in their cost. kd+dot is KD trained '
      'by DOT (SGD with momenta 0.9 ∓ 0.075); kd+ls is KD of standardised logits at T 2 with '
      'alpha 0.989 (its authors\' CE 0.1 : KD 9); dkd+ls and mlkd+ls standardise the logits '
      'of DKD\'s and MLKD\'s KD terms at their authors\' LS weights. MLKD trains on a second, '
      'strongly augmented view of each batch: kdjax\'s translation at twice the run\'s shift '
      '(at least 4 pixels), not the authors\' RandAugment-style policy.\n'
      'Figure: `curves.png` (the first pair).\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
