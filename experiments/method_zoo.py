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
# The same README's rows for the methods with parts of their own (FSP: homogeneous pairs
# only, and not wrn_40_2 -> wrn_40_1, which the README leaves at 0.00).
_MORE_COLUMNS = ('fitnet', 'cc', 'vid', 'ab', 'ft', 'fsp', 'crd')
_MORE_ROWS = {
    ('wrn_40_2', 'wrn_16_2'): (73.58, 73.56, 74.11, 72.50, 73.25, 72.91, 75.48),
    ('wrn_40_2', 'wrn_40_1'): (72.24, 72.21, 73.30, 72.38, 71.59, None, 74.14),
    ('resnet56', 'resnet20'): (69.21, 69.63, 70.38, 69.47, 69.84, 69.95, 71.16),
    ('resnet110', 'resnet20'): (68.99, 69.48, 70.16, 69.53, 70.22, 70.11, 71.46),
    ('resnet110', 'resnet32'): (71.06, 71.48, 72.61, 70.98, 72.37, 71.89, 73.48),
    ('resnet32x4', 'resnet8x4'): (73.50, 72.97, 73.09, 73.17, 72.86, 72.62, 75.51),
    ('vgg13', 'vgg8'): (71.02, 70.71, 71.23, 70.94, 70.58, 70.23, 73.94),
    ('vgg13', 'mobilenetv2'): (64.14, 64.86, 65.56, 66.06, 61.78, None, 69.73),
    ('resnet50', 'mobilenetv2'): (63.16, 65.43, 67.57, 67.20, 60.99, None, 69.11),
    ('resnet50', 'vgg8'): (70.69, 70.25, 70.30, 70.65, 70.29, None, 74.30),
    ('resnet32x4', 'shufflenetv1'): (73.59, 71.14, 73.38, 73.55, 71.75, None, 75.11),
    ('resnet32x4', 'shufflenetv2'): (73.54, 71.29, 73.40, 74.31, 72.50, None, 75.65),
    ('wrn_40_2', 'shufflenetv1'): (73.73, 71.38, 73.61, 73.34, 72.03, None, 76.05),
}
# DKD's CIFAR-100 accuracies in megvii-research/mdistiller's README (Zhao et al., CVPR 2022),
# for the pairs of this table that it lists.
_DKD = {('resnet56', 'resnet20'): 71.97, ('resnet110', 'resnet32'): 74.11,
        ('resnet32x4', 'resnet8x4'): 76.32, ('wrn_40_2', 'wrn_16_2'): 76.23,
        ('wrn_40_2', 'wrn_40_1'): 74.81, ('vgg13', 'vgg8'): 74.68,
        ('resnet32x4', 'shufflenetv1'): 76.45, ('wrn_40_2', 'shufflenetv1'): 76.70,
        ('vgg13', 'mobilenetv2'): 69.71, ('resnet50', 'mobilenetv2'): 70.35}
# The later logit methods' CIFAR-100 accuracies, for the pairs of this table their authors'
# READMEs list: DIST (hunto/DIST_KD, mean of their runs), KD+DOT (megvii-research/mdistiller),
# CTKD, KD+LS, DKD+LS, MLKD and MLKD+LS (sunshangquan/logit-standardization-KD's README
# tables).
_LATER_COLUMNS = ('dist', 'ctkd', 'kd+dot', 'kd+ls', 'dkd+ls', 'mlkd', 'mlkd+ls')
_LATER = {
    ('resnet32x4', 'resnet8x4'): (76.31, 73.39, 75.12, 76.62, 77.01, 77.08, 78.28),
    ('vgg13', 'vgg8'): (None, 73.52, 73.77, 74.36, 74.81, 75.18, 75.22),
    ('wrn_40_2', 'wrn_40_1'): (74.43, 73.93, None, 74.37, 74.89, 75.35, 75.56),
    ('wrn_40_2', 'wrn_16_2'): (None, 75.45, None, 76.11, 76.39, 76.63, 76.95),
    ('resnet56', 'resnet20'): (71.75, 71.19, None, 71.43, 72.32, 72.19, 72.33),
    ('resnet110', 'resnet32'): (None, 73.52, None, 74.17, 74.29, 74.11, 74.32),
    ('resnet110', 'resnet20'): (None, 70.99, None, 71.48, 71.85, 71.89, 72.27),
    ('resnet32x4', 'shufflenetv2'): (77.35, 75.37, 75.55, 75.56, 77.37, 78.44, 78.76),
    ('resnet32x4', 'shufflenetv1'): (76.34, None, None, None, None, None, None),
    ('vgg13', 'mobilenetv2'): (None, 68.50, None, 68.61, 69.98, 70.57, 70.94),
    ('resnet50', 'mobilenetv2'): (68.66, 68.67, None, 69.02, 70.45, 71.04, 71.19),
}
REFERENCE = {pair: {**dict(zip(_COLUMNS, values)), **dict(zip(_MORE_COLUMNS, _MORE_ROWS[pair])),
                    'dkd': _DKD.get(pair),
                    **dict(zip(_LATER_COLUMNS, _LATER.get(pair, (None,) * 7)))}
             for pair, values in _REFERENCE_ROWS.items()}
_REFERENCE_ORDER = ('teacher', 'alone', 'kd', 'fitnet', 'at', 'sp', 'cc', 'vid', 'rkd', 'pkt',
                    'ab', 'ft', 'fsp', 'nst', 'crd', 'dkd', *_LATER_COLUMNS)
# Review KD's weight per pair in its authors' CIFAR-100 script
# (dvlab-research/ReviewKD, CIFAR-100/script/reviewKD.sh); other pairs: mdistiller's default 1.
REVIEWKD_WEIGHTS = {('wrn_40_2', 'wrn_16_2'): 5.0, ('wrn_40_2', 'wrn_40_1'): 5.0,
                    ('wrn_40_2', 'shufflenetv1'): 5.0, ('resnet32x4', 'resnet8x4'): 5.0,
                    ('resnet32x4', 'shufflenetv1'): 5.0, ('resnet32x4', 'shufflenetv2'): 8.0,
                    ('resnet56', 'resnet20'): 0.6, ('resnet110', 'resnet32'): 1.0}

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
               for column in _REFERENCE_ORDER]
  kd_cost = np.mean([_per_epoch_seconds(taught[(t, s, 'kd')]) for t, s in pairs])
  seconds_path = os.path.join(stages.workdir, 'stage_seconds.json')
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
