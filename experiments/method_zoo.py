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
                the about 4,500 training examples of other classes. MLKD and
                MLKD+LS train three times, their class- and batch-level weights
                at 1 (the authors'), 0.1 and 0.01, and keep the one chosen on
                validation (a quick run: the first two).
"""

from absl import flags

from experiments import common
from experiments import method_zoo_tables as tables
from experiments.method_zoo_reference import REFERENCE, REFERENCE_ORDER, REVIEWKD_WEIGHTS
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
# For both MLKDs a preset may name `mlkd_relation_weights`: candidates for the class- and
# batch-level terms' weights (method.mlkd_class_weight = mlkd_batch_weight; the authors': 1),
# one stage each, chosen on validation (kdjax.methods.mlkd.mlkd_loss says why).
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
                # At 10 classes and batch 128 MLKD's class-level term is ~400 times its
                # CIFAR-100 size; with LS's weight 9 it swamps the KD terms: 0.1 puts it and
                # the batch-level term at plain MLKD's weight, 1 is the authors'.
                mlkd_relation_weights=(1.0, 0.1, 0.01),
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
    relations = changes.get('method.mlkd_class_weight', 1.0)
    relations = (f', class- and batch-level weights {relations:g}' if relations != 1.0
                 else '')
    return (f'{head} method=mlkd{stand} (weight {weight:g}, CE 0.1 per view, base '
            f'temperature {base:g}, two views{lr}{relations}), alpha=0')
  weight = (f', weight {changes["method.weight"]:g}' if 'method.weight' in changes
            else '')
  return f'{head} method={method}{weight}, alpha=0'



def _relation_note(preset: dict) -> str:
  """The report's first note: what is chosen across runs."""
  if 'mlkd_relation_weights' not in preset:
    return 'Nothing is chosen across runs: every method runs at its published weight. '
  return ('Every method runs at its published weight, except MLKD\'s class- and batch-level '
          'terms (1 in its authors\' code), whose weight is chosen on validation from '
          + ', '.join(f'{w:g}' for w in preset['mlkd_relation_weights'])
          + ' per method and pair: the class-level term grows as (batch / classes)², and '
          'logit standardisation raises its weight from 0.9 to 9 without standardising it '
          '(kdjax.methods.mlkd). ')


def relation_weights(method: str, preset: dict, *, quick: bool = False) -> tuple:
  """The candidate class- and batch-level weights of an MLKD stage (the preset's
  `mlkd_relation_weights`, the first two in a quick run, else the authors' 1 alone);
  (None,) for other methods."""
  if method_name(method) != 'mlkd':
    return (None,)
  weights = tuple(float(w) for w in preset.get('mlkd_relation_weights', (1.0,)))
  return weights[:2] if quick else weights


def _train_method(stages: common.Stages, preset: dict, pair: tuple, method: str,
                  report_rows: list, choices: dict) -> dict:
  """One method's stage, or one per candidate relation weight (MLKD), returning the one
  chosen on validation; its rows, selection and candidates' table rows go to the lists."""
  teacher, student = pair
  changes, temperatures, alphas = _method_changes(method, teacher, student, preset,
                                                  stages.setup)
  candidates = relation_weights(method, preset, quick=stages.setup.quick)
  trained = {}
  for weight in candidates:
    these, name = dict(changes), tables.stage_name(student, teacher, method)
    if weight not in (None, 1.0):  # the authors' 1 keeps the stage's plain name
      these.update({'method.mlkd_class_weight': weight, 'method.mlkd_batch_weight': weight})
      name += f'_rw{weight:g}'
    trained[(weight,)] = stages.distill(
        name, student, stages.teacher_of(f'teacher_{teacher}'), temperatures=temperatures,
        alphas=alphas, changes=these)
    report_rows.append(common.row(_label(student, teacher, method, these),
                                  common.members(trained[(weight,)]), stage=name,
                                  method_name=method, relation_weight=weight))
  if len(candidates) == 1:
    return trained[(candidates[0],)]
  groups = {key: common.members(results) for key, results in trained.items()}
  chosen, selection, _ = common.select(
      f'{student} from {teacher}, {method}: class- and batch-level weight', groups,
      ('relation_weight',))
  choices['selections'].append(selection)
  choices['rows'] += [[method, f'{teacher} → {student}', f'{key[0]:g}',
                       common.accuracy_text(runs, 'validation_accuracy'),
                       common.accuracy_text(runs), 'chosen' if key == chosen else '']
                      for key, runs in groups.items()]
  return trained[chosen]


def body(stages: common.Stages, preset: dict) -> str:
  pairs = preset['pairs']
  methods = chosen_methods((METHODS_FLAG.value if flags.FLAGS.is_parsed() else None)
                           or preset.get('methods', ()))
  teachers, alone, taught, report_rows = {}, {}, {}, []
  choices = {'selections': [], 'rows': []}
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
      taught[(teacher, student, method)] = (
          _train_method(stages, preset, (teacher, student), method, report_rows, choices)
          if _pairs_with(method, teacher, student, stages.setup) else None)

  header = ['method'] + [f'{tables.model_text(t, preset)} → {tables.model_text(s, preset)}'
                         for t, s in pairs]
  table = [['teacher'] + [common.accuracy_text(common.members(teachers[t])) for t, _ in pairs],
           ['student alone'] + [tables.cell(common.members(alone[s])) for _, s in pairs]]
  for method in methods:
    table.append([method] + [tables.cell(tables.members_of(taught[(t, s, method)]))
                             for t, s in pairs])
  reference = [[column] + [tables.published(pair, column) for pair in pairs]
               for column in REFERENCE_ORDER]
  costs = tables.cost_rows(stages.workdir, pairs, methods, taught)
  sections = [('Test accuracy at the epoch chosen on validation (last epoch in brackets)',
               header, table),
              ('Cost', ['method', 'wall minutes (all pairs and seeds)', 's per epoch per run',
                        '× KD'], costs)]
  if choices['rows']:
    sections.append(('MLKD\'s class- and batch-level weight, chosen on validation (last epoch)',
                     ['method', 'pair', 'weight', 'validation', 'test', ''], choices['rows']))
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
      selections=choices['selections'],
      notes=_relation_note(preset) + 'Within a run the reported epoch is the one with the '
      'best validation accuracy; the bracketed number is the last epoch, as the references '
      'report it. crd+kd weighs CE, KD and CRD 0.5 : 0.5 : 0.4 (RepDistiller: 1 : 1 : 0.8). '
      'AB, FT and FSP begin with their init stage (method-only training), counted in their '
      'cost. kd+dot is KD trained by DOT (SGD with momenta 0.9 ∓ 0.075); kd+ls is KD of '
      'standardised logits at T 2 with alpha 0.989 (its authors\' CE 0.1 : KD 9); dkd+ls and '
      'mlkd+ls standardise the logits of DKD\'s and MLKD\'s KD terms at their authors\' LS '
      'weights. MLKD trains on a second, strongly augmented view of each batch: kdjax\'s '
      'translation at twice the run\'s shift (at least 4 pixels), not the authors\' '
      'RandAugment-style policy.\n'
      'Figure: `curves.png` (the first pair).\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
