"""The config schema every run starts from: plain data, and the checks that need no more.

`default()` holds every field a run reads, with its default; files in
`configs/` start from it and change a few fields. `check_fields()` checks the
fields whose ranges the schema alone knows; the dataset, model, objective,
method and evaluator sections are checked by the registries that own them, and
`kdjax.checks.validate()` runs every check before anything is loaded or
written, raising `ConfigError` with one line that names the field and what it
accepts. This module imports nothing of kdjax but its errors: the registries
import it, never the other way.
"""

import json
import math
from typing import Any

import ml_collections
from ml_collections import config_dict

from kdjax.errors import ConfigError

OPTIMIZERS = ('sgd', 'adam', 'adamw', 'dot')
SCHEDULES = ('constant', 'exponential', 'step', 'cosine')
SUMMARY_WRITERS = ('tensorboard', 'clu', 'none')
TEACHER_CACHE = ('auto', True, False)
TEACHER_ENSEMBLES = ('probs', 'logits')
PIPELINES = ('auto', 'device', 'stream')

# Fields that change how a run is executed or logged, not what it computes;
# they may differ when a run is resumed.
_EXECUTION_FIELDS = ('overwrite', 'data_dir', 'log_every_epochs')


SWEEP_AXES = ('temperature', 'alpha', 'seed', 'learning_rate', 'kind', 'method_weight')


def default() -> ml_collections.ConfigDict:
  """The full schema with defaults. Locked: unknown fields are errors."""
  c = ml_collections.ConfigDict()
  c.dataset = 'mnist'
  c.data_dir = ''  # '' = $TFDS_DATA_DIR or tfds' default
  c.validation_fraction = 0.0  # carved from train with validation_seed
  c.validation_seed = 0  # also seeds the train_examples subset: how the data is split
  # The transfer set: train examples of these classes are dropped / kept.
  c.omit_classes = ()
  c.keep_classes = ()
  # Train on a seeded random subset of this many examples (after the class
  # filters; 0 = all): small transfer sets, learning curves, quick checks.
  c.train_examples = 0

  # Datasets of one's own (docs/custom.md): config.dataset='folder:PATH' (a folder of
  # class folders of images) or 'tfds:NAME[:VERSION]' (a TFDS dataset in data_dir).
  c.data = ml_collections.ConfigDict()
  c.data.image_size = 0  # square side the images are decoded to (0: as stored; folder: 32)
  c.data.test_fraction = 0.2  # folder without PATH/test: each class's share held out as test
  c.data.split_seed = 0  # folder: seeds that held-out test split
  c.data.image_key = ''  # tfds: the image feature ('' = its one Image feature)
  c.data.label_key = ''  # tfds: the label feature ('' = its one ClassLabel feature)
  c.data.train_split = 'train'  # tfds: the split trained on
  c.data.test_split = 'test'  # tfds: the split test accuracy is reported on

  # How training examples reach the devices. 'device': the whole training set
  # is put on the devices once and an epoch is one compiled program; 'stream':
  # batches are read, decoded and prefetched by tf.data every epoch (datasets
  # too large to hold: ImageNet); 'auto': 'device' for datasets that fit in
  # memory, 'stream' otherwise.
  c.input = ml_collections.ConfigDict()
  c.input.pipeline = 'auto'
  c.input.image_size = 0  # streamed: square side to crop / resize to (0 = as stored)
  c.input.shuffle_buffer = 16_384  # streamed: examples in tf.data's shuffle buffer
  c.input.prefetch = 2  # streamed: batches put on the devices ahead of the step

  c.augment = ml_collections.ConfigDict()
  c.augment.max_shift = 0  # random translation ("jitter") / pad-and-crop, in pixels
  c.augment.flip = False  # random horizontal flip
  # Mirrored digits and clothes are not the same classes: flips on 1-channel
  # datasets (MNIST, Fashion-MNIST) are refused unless this says they are meant.
  c.augment.allow_flip = False
  # Mixup (Beyer et al. 2022's function matching): each step mixes the batch with itself
  # rolled by one, lam ~ Beta(mixup, mixup) per batch; 0 = off. Needs distill.consistent.
  c.augment.mixup = 0.0

  # `name` picks the registered model; the other fields are that family's options.
  c.model = ml_collections.ConfigDict({'name': 'mlp', 'hidden': (800, 800)})

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.momentum = 0.9  # sgd, dot
  # dot (Zhao et al.'s Distillation-Oriented Trainer): SGD with momentum − dot_delta on the
  # task gradient and momentum + dot_delta on the distillation gradient.
  c.optimizer.dot_delta = 0.075
  c.optimizer.nesterov = False  # sgd
  c.optimizer.b1 = 0.9  # adam, adamw
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.0  # L2 added to the gradient (sgd, adam) or decoupled (adamw)
  c.optimizer.max_norm = 0.0  # > 0: cap on the L2 norm of each unit's incoming weights
  c.optimizer.grad_clip_norm = 0.0  # > 0: clip the global gradient norm

  c.schedule = ml_collections.ConfigDict()
  c.schedule.name = 'constant'
  c.schedule.decay_rate = 0.95  # exponential: lr × decay_rate per epoch
  c.schedule.boundaries = ()  # step: epochs at which lr is multiplied by step_factor
  c.schedule.step_factor = 0.1
  c.schedule.warmup_epochs = 0  # linear warm-up (cosine, step, exponential)

  c.batch_size = 128
  c.num_epochs = 10
  c.eval_every = 1  # epochs
  c.eval_batch_size = 1000
  c.seed = 0  # initialisation, dropout and augmentation
  c.data_seed = 0  # example order
  # Softmax temperature of the training loss's label term (defensive
  # distillation, distill.objective='defensive'); evaluation is always at T = 1.
  c.train_temperature = 1.0

  c.teacher = ml_collections.ConfigDict()
  c.teacher.workdir = ''  # '' = train without a teacher
  # 'auto': cache the teacher's logits once when the student's inputs are not
  # augmented; otherwise run the teacher inside the train step.
  c.teacher.cache = ml_collections.FieldReference('auto', field_type=object)
  # A teacher trained on another dataset (same classes and image shape) is
  # refused unless this marks the run as a deliberate transfer experiment.
  c.teacher.allow_other_dataset = False
  # An ensemble: teacher.workdir names a sweep's directory (all its members) or a
  # comma-separated list of run directories. 'probs': the mean of the members'
  # probabilities at distill.temperature (the loss sees logits whose softmax at T
  # is that mean; kdjax.train.teacher.combine); 'logits': the mean logits.
  c.teacher.ensemble = 'probs'
  c.teacher.weights = ()  # one weight per member (normalised to sum 1); () = equal

  c.distill = ml_collections.ConfigDict()
  c.distill.temperature = 4.0
  c.distill.alpha = 0.9  # weight of the soft-target term
  c.distill.kind = 'kl'
  # What the train step minimises (kdjax.objectives' registry): 'logit_kd'
  # (Hinton's mixture) or 'defensive' (Papernot's, at train_temperature).
  c.distill.objective = 'logit_kd'
  # The loss as named weighted terms (kdjax.terms), e.g. ('0.1*ce', '0.9*kd'); () = the
  # terms distill.objective and method.name stand for.
  c.distill.terms = ()
  # Seed 004's way to write the same mixture; when set they replace alpha.
  c.distill.distillation_weight = config_dict.placeholder(float)
  c.distill.ce_weight = config_dict.placeholder(float)
  # Logit standardisation (Sun et al. 2024): z-score both networks' logits inside
  # the soft-target term of logit KD (and of DKD, and of MLKD's KD terms); the
  # cross-entropy keeps raw logits.
  c.distill.standardize = False
  # Function matching (Beyer et al. 2022): the teacher runs in the step on the very
  # images the student sees (augmented, and mixed with augment.mixup), never cached.
  c.distill.consistent = False

  # Online distillation (kdjax.online): a cohort of students, the members of a
  # vectorised seed sweep (config.sweep.seed), that teach each other. 'dml' (Zhang et
  # al. 2018): each member minimises CE + weight · T² · KL(mean of the others'
  # predictions at T, detached ‖ its own); 'codistill' (Anil et al. 2018): the same with
  # the others' predictions from copies of their parameters refreshed every
  # refresh_steps steps. None: off.
  c.online = ml_collections.ConfigDict()
  c.online.kind = config_dict.placeholder(str)
  c.online.weight = 1.0
  c.online.temperature = 1.0
  c.online.refresh_steps = 100

  # A vectorised sweep: every combination of the non-empty tuples below trains
  # as one member of a single compiled program (shared data and teacher).
  c.sweep = ml_collections.ConfigDict()
  c.sweep.temperature = ()
  c.sweep.alpha = ()
  c.sweep.seed = ()
  c.sweep.learning_rate = ()
  c.sweep.kind = ()  # soft-loss kinds
  c.sweep.method_weight = ()  # weights of config.method's loss (not for crd)
  # 'vmap': all members in one vectorised program; 'loop': one run after
  # another (each its own program); 'auto': vmap for fully connected models
  # or off the CPU, loop for conv nets on the CPU, where XLA runs a vmapped
  # (grouped) convolution slower than the members one by one.
  c.sweep.mode = 'auto'
  # A member of a seed sweep also gets its own example order:
  # data_seed = config.data_seed + (member seed − config.seed).
  c.sweep.couple_data_seed = True

  # A distillation method beside the logit objective (kdjax.methods):
  # loss = objective + method.weight x method. '' for none.
  c.method = ml_collections.ConfigDict()
  c.method.name = ''  # a method of kdjax.methods: 'at', 'sp', ..., 'fitnet', 'crd', 'ft'
  c.method.weight = -1.0  # < 0: the published weight (RepDistiller's -b; DKD 1, DIST 2, MLKD 0.9)
  c.method.at_p = 2.0
  c.method.pkt_eps = 1e-7
  c.method.rkd_distance_weight = 25.0
  c.method.rkd_angle_weight = 50.0
  c.method.dkd_alpha = 1.0
  c.method.dkd_beta = 8.0
  c.method.dkd_temperature = 4.0
  c.method.dkd_warmup_epochs = 20.0  # the DKD term ramps in linearly over these epochs
  c.method.dist_beta = 1.0  # DIST's inter-class weight (its authors' 1; the method weight is 2)
  c.method.dist_gamma = 1.0  # DIST's intra-class weight
  c.method.dist_temperature = 4.0  # the authors' CIFAR-100 tau (1 on ImageNet)
  # CTKD: the soft term's temperature t_start + t_end · sigmoid(θ), θ learned with its
  # gradient reversed, times λ rising from 0 to ctkd_max_strength over ctkd_epochs epochs.
  c.method.ctkd_t_start = 1.0
  c.method.ctkd_t_end = 20.0
  c.method.ctkd_epochs = 10.0
  c.method.ctkd_max_strength = 1.0
  c.method.ctkd_instance = False  # one temperature per example, from a small MLP
  c.method.ctkd_instance_hidden = 128  # that MLP's hidden width
  # MLKD (kdjax.methods.mlkd): CE on both views at mlkd_ce_weight, plus method.weight x the
  # multi-level terms at the base temperature and the extra ones (the authors' order).
  c.method.mlkd_temperature = 4.0
  c.method.mlkd_temperatures = (3.0, 5.0, 2.0, 6.0)
  c.method.mlkd_ce_weight = 0.1
  # Multipliers of the class- and batch-level terms inside the method (1: the authors';
  # see kdjax.methods.mlkd.mlkd_loss for when they matter).
  c.method.mlkd_class_weight = 1.0
  c.method.mlkd_batch_weight = 1.0
  c.method.mlkd_strong_shift = -1  # the strong view's translation; < 0: max(2 x max_shift, 4)
  # Epochs of method-only training at the start of the run (RepDistiller's
  # init stage, counted in num_epochs); < 0: 30 for ab, fsp and ft, else 0.
  c.method.init_epochs = -1
  c.method.fitnet_hint_layer = 2  # RepDistiller's feat[2]: stem, stage1, stage2, ...
  c.method.crd_feat_dim = 128
  c.method.crd_nce_k = 16384  # negatives per example, from the other classes
  c.method.crd_nce_t = 0.07
  c.method.crd_momentum = 0.5
  c.method.cc_feat_dim = 128
  c.method.ft_k = 0.5  # the factor's channels, a fraction of the teacher's
  c.method.ab_margin = 1.0
  c.method.reviewkd_warmup_epochs = 20.0  # the Review KD term ramps in over these epochs
  c.method.reviewkd_max_mid_channels = 512  # the fusion width: min(this, the student's)
  c.method.reviewkd_student_preact = False  # fuse the student's pre-activation maps

  c.checkpoint_every = 1  # epochs
  c.keep_checkpoints = 2
  c.log_every_epochs = 1
  # TensorBoard event files: 'tensorboard' (kdjax's own writer, no
  # TensorFlow), 'clu' (clu's writer; imports TensorFlow) or 'none'.
  c.summary_writer = 'tensorboard'
  c.overwrite = False  # allow a different config in a workdir that holds a run
  # What is measured after training (kdjax.evaluators), each in its own section of
  # results.json: 'auto' = every evaluator that applies to the run ('exits' for a
  # multi-exit model, 'agreement' with a teacher); add others by name, e.g.
  # ('auto', 'calibration').
  c.evaluators = ('auto',)

  # Be Your Own Teacher (distill.objective='byot', model.name='multi_exit'):
  # every shallow exit learns from the labels, the deepest exit's soft
  # targets and its feature map (kdjax.byot; defaults from its PyTorch code).
  c.byot = ml_collections.ConfigDict()
  c.byot.alpha = 0.1  # weight of the soft term (1 - alpha on a shallow exit's labels)
  c.byot.temperature = 3.0
  c.byot.feature_weight = 1.28e-4  # lambda: per-example squared L2 of the hint distance
  c.byot.t_squared = True  # the soft term times T^2, as the PyTorch code has it
  c.byot.deepest_weight = 1.0  # the deepest exit's cross-entropy (that code: 1 - alpha)
  c.lock()
  return c


def fail(field: str, value: Any, requirement: str):
  """Raises the one-line ConfigError every check gives: `config.FIELD=VALUE: requirement`."""
  raise ConfigError(f'config.{field}={value!r}: {requirement}')


def check_positive(c, field: str, integer: bool = False):
  """Raises ConfigError unless the dotted `field` holds a finite number > 0 (whole if `integer`)."""
  value = c
  for part in field.split('.'):
    value = value[part]
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    fail(field, value, 'must be a number')
  if integer and int(value) != value:
    fail(field, value, 'must be a whole number')
  if not value > 0 or (isinstance(value, float) and not math.isfinite(value)):
    fail(field, value, 'must be > 0')


def alpha(c: ml_collections.ConfigDict) -> float:
  """The soft-term weight, from `distill.alpha` or seed 004's weight pair."""
  dw, cw = c.distill.distillation_weight, c.distill.ce_weight
  if dw is None and cw is None:
    return float(c.distill.alpha)
  if dw is None or cw is None:
    raise ConfigError('config.distill.distillation_weight and config.distill.ce_weight '
                      'must be set together')
  if not (0 <= dw <= 1 and 0 <= cw <= 1 and math.isclose(dw + cw, 1.0, abs_tol=1e-6)):
    raise ConfigError(f'config.distill.distillation_weight={dw} and ce_weight={cw} '
                      'must lie in [0, 1] and sum to 1')
  return float(dw)


def check_fields(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line, naming the field) for a field outside its range.

  These are the checks that need nothing but the config; the dataset, model,
  objective and method sections are checked by their registries, and
  `kdjax.checks.validate` runs them all.
  """
  for field in ('batch_size', 'num_epochs', 'eval_every', 'eval_batch_size',
                'checkpoint_every', 'keep_checkpoints', 'log_every_epochs'):
    check_positive(c, field, integer=True)
  check_positive(c, 'optimizer.learning_rate')
  if not 0.0 <= c.validation_fraction < 1.0:
    fail('validation_fraction', c.validation_fraction, 'must be in [0, 1)')
  if c.optimizer.name not in OPTIMIZERS:
    fail('optimizer.name', c.optimizer.name, f'unknown; known: {", ".join(OPTIMIZERS)}')
  if c.schedule.name not in SCHEDULES:
    fail('schedule.name', c.schedule.name, f'unknown; known: {", ".join(SCHEDULES)}')
  for field in ('weight_decay', 'max_norm', 'grad_clip_norm'):
    if c.optimizer[field] < 0:
      fail(f'optimizer.{field}', c.optimizer[field], 'must be >= 0')
  if c.optimizer.name == 'dot':
    _validate_dot(c)
  if c.schedule.name == 'exponential' and not 0 < c.schedule.decay_rate <= 1:
    fail('schedule.decay_rate', c.schedule.decay_rate, 'must be in (0, 1]')
  if c.augment.max_shift < 0:
    fail('augment.max_shift', c.augment.max_shift, 'must be >= 0')
  _check_function_matching(c)
  if isinstance(c.train_examples, bool) or not isinstance(c.train_examples, int) or (
      c.train_examples < 0):
    fail('train_examples', c.train_examples, 'must be a whole number >= 0 (0 = all)')
  if set(c.omit_classes) and set(c.keep_classes):
    fail('keep_classes', c.keep_classes, 'cannot be combined with omit_classes')
  if c.teacher.cache not in TEACHER_CACHE:
    fail('teacher.cache', c.teacher.cache, "must be 'auto', True or False")
  if c.teacher.cache is True and (c.augment.max_shift > 0 or c.augment.flip):
    fail('teacher.cache', True, 'cached teacher logits are of un-augmented images while the '
         "student sees augmented ones; use teacher.cache='auto' (the teacher runs in the step)")
  _validate_teacher(c)
  if not isinstance(c.distill.standardize, bool):
    fail('distill.standardize', c.distill.standardize, 'must be True or False')
  for value in c.sweep.temperature:
    if not value > 0:
      fail('sweep.temperature', tuple(c.sweep.temperature), 'every temperature must be > 0')
  for value in c.sweep.alpha:
    if not 0 <= value <= 1:
      fail('sweep.alpha', tuple(c.sweep.alpha), 'every alpha must be in [0, 1]')
  for value in c.sweep.learning_rate:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
      fail('sweep.learning_rate', tuple(c.sweep.learning_rate),
           'every learning rate must be a number > 0')
  for value in c.sweep.method_weight:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
      fail('sweep.method_weight', tuple(c.sweep.method_weight),
           'every method weight must be a number >= 0')
  if len(c.sweep.method_weight) and not c.method.name:
    fail('sweep.method_weight', tuple(c.sweep.method_weight), 'needs config.method.name')
  if c.summary_writer not in SUMMARY_WRITERS:
    fail('summary_writer', c.summary_writer, f'unknown; known: {", ".join(SUMMARY_WRITERS)}')
  if c.sweep.mode not in ('auto', 'vmap', 'loop'):
    fail('sweep.mode', c.sweep.mode, "must be 'auto', 'vmap' or 'loop'")
  for axis in SWEEP_AXES:
    if len(set(c.sweep[axis])) != len(c.sweep[axis]):
      fail(f'sweep.{axis}', tuple(c.sweep[axis]), 'values must not repeat')
  if not c.teacher.workdir and any(len(c.sweep[k]) for k in ('temperature', 'alpha', 'kind')):
    fail('sweep', 'temperature/alpha/kind',
         'sweeping distillation settings needs teacher.workdir')


def _validate_teacher(c: ml_collections.ConfigDict) -> None:
  """An ensemble's settings (its members are checked in kdjax.train.teacher)."""
  if c.teacher.ensemble not in TEACHER_ENSEMBLES:
    fail('teacher.ensemble', c.teacher.ensemble, f'must be one of {TEACHER_ENSEMBLES}')
  weights = tuple(c.teacher.weights)
  if any(isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0
         for w in weights) or (weights and not sum(weights) > 0):
    fail('teacher.weights', weights, 'must be numbers >= 0 with a positive sum')


def _check_function_matching(c: ml_collections.ConfigDict) -> None:
  """`distill.consistent` and `augment.mixup`: the teacher sees the student's images."""
  if not isinstance(c.distill.consistent, bool):
    fail('distill.consistent', c.distill.consistent, 'must be True or False')
  mixup = c.augment.mixup
  if isinstance(mixup, bool) or not isinstance(mixup, (int, float)) or not (
      mixup >= 0 and math.isfinite(mixup)):
    fail('augment.mixup', mixup, 'must be a number >= 0 (0 = off)')
  if c.distill.consistent and not c.teacher.workdir:
    fail('distill.consistent', True, 'gives a teacher the student\'s images; it needs '
         'config.teacher.workdir')
  if c.distill.consistent and c.teacher.cache is True:
    fail('teacher.cache', True, 'distill.consistent=True runs the teacher in the step on the '
         "student's images; use teacher.cache='auto'")
  if mixup > 0 and not c.distill.consistent:
    fail('augment.mixup', mixup, 'mixes the student\'s images; the teacher must see the same '
         'ones: set config.distill.consistent=True')
  if mixup > 0 and (len(c.sweep.alpha) or alpha(c) != 1.0):
    fail('augment.mixup', mixup, 'a mixed image has no single label: function matching '
         'trains on the teacher alone; set config.distill.alpha=1')


def _validate_dot(c: ml_collections.ConfigDict) -> None:
  o = c.optimizer
  if not c.teacher.workdir:
    fail('optimizer.name', 'dot', 'DOT splits the task and distillation gradients; it needs '
         'a teacher (config.teacher.workdir)')
  bound = min(o.momentum, 1 - o.momentum)  # both momenta, μ ∓ Δ, in [0, 1)
  if not 0 <= o.dot_delta < bound:
    fail('optimizer.dot_delta', o.dot_delta,
         f'must be in [0, {bound:g}) with optimizer.momentum={o.momentum}')
  for field in ('nesterov', 'grad_clip_norm'):
    if o[field]:
      fail(f'optimizer.{field}', o[field], "is not part of optimizer.name='dot'")


def sweep_mode(c: ml_collections.ConfigDict) -> str:
  """'vmap' or 'loop': how a sweep's members train (`config.sweep.mode`, resolved)."""
  if c.sweep.mode != 'auto':
    return c.sweep.mode
  import jax
  dense = c.model.name == 'mlp'
  return 'vmap' if dense or jax.default_backend() != 'cpu' else 'loop'


def sweep_members(c: ml_collections.ConfigDict) -> list[dict]:
  """The members of `config.sweep` (cartesian product), [] when nothing is swept.

  Each member is a dict with `label` (its sub-directory name), one value
  per sweepable field (`temperature`, `alpha`, `seed`, `learning_rate`,
  `kind`, `method_weight`) and its `data_seed` (see `sweep.couple_data_seed`).
  """
  import itertools
  axes = {'temperature': tuple(c.sweep.temperature) or (c.distill.temperature,),
          'alpha': tuple(c.sweep.alpha) or (alpha(c),),
          'seed': tuple(c.sweep.seed) or (c.seed,),
          'learning_rate': tuple(c.sweep.learning_rate) or (c.optimizer.learning_rate,),
          'kind': tuple(c.sweep.kind) or (c.distill.kind,),
          'method_weight': tuple(c.sweep.method_weight) or (float(c.method.weight),)}
  label_prefix = {'temperature': 'T', 'alpha': 'alpha', 'seed': 'seed',
                  'learning_rate': 'lr', 'kind': '', 'method_weight': 'beta'}
  swept = [k for k in axes if len(c.sweep[k])]
  if not swept:
    return []
  members = []
  for values in itertools.product(*axes.values()):
    member = dict(zip(axes, values))
    member['label'] = '_'.join(
        label_prefix[k] + (member[k] if k == 'kind' else f'{member[k]:g}') for k in swept)
    member.update(temperature=float(member['temperature']), alpha=float(member['alpha']),
                  seed=int(member['seed']), learning_rate=float(member['learning_rate']),
                  method_weight=float(member['method_weight']))
    member['data_seed'] = int(c.data_seed) + (
        member['seed'] - int(c.seed) if c.sweep.couple_data_seed else 0)
    members.append(member)
  return members


def member_config(c: ml_collections.ConfigDict, member: dict) -> ml_collections.ConfigDict:
  """The plain (unswept) config that trains `member` alone."""
  m = ml_collections.ConfigDict(c.to_dict())
  for axis in SWEEP_AXES:
    m.sweep[axis] = ()
  m.distill.temperature = member['temperature']
  m.distill.alpha = member['alpha']
  m.distill.distillation_weight = None
  m.distill.ce_weight = None
  m.distill.kind = member['kind']
  m.optimizer.learning_rate = member['learning_rate']
  m.method.weight = member.get('method_weight', m.method.weight)
  m.seed = member['seed']
  m.data_seed = member['data_seed']
  m.lock()
  return m


def override(c: ml_collections.ConfigDict, changes: dict) -> ml_collections.ConfigDict:
  """Sets dotted fields (`{'distill.alpha': 0.9}`) in place, like --config.FIELD=VALUE; returns c."""
  for field, value in changes.items():
    target = c
    *parents, leaf = field.split('.')
    for part in parents:
      target = target[part]
    target[leaf] = value
  return c


def to_json_dict(c: ml_collections.ConfigDict) -> dict:
  """The config as plain JSON types (tuples become lists)."""
  return json.loads(c.to_json())


def from_json_dict(d: dict) -> ml_collections.ConfigDict:
  """Rebuilds a config saved by `to_json_dict`, on top of today's defaults."""
  c = default()
  c.unlock()
  d = dict(d)
  model = d.pop('model', None)
  c.update(ml_collections.ConfigDict(d))
  if model is not None:  # the model's options are its own: no defaults merged in
    c.model = ml_collections.ConfigDict(model)
  c.lock()
  return c


def differing_fields(saved: dict, current: dict, prefix: str = '') -> list[str]:
  """Names of the fields whose values differ, ignoring execution-only fields."""
  out = []
  for key in sorted(set(saved) | set(current)):
    name = f'{prefix}{key}'
    if not prefix and key in _EXECUTION_FIELDS:
      continue
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += differing_fields(a, b, prefix=f'{name}.')
    elif a != b:
      out.append(name)
  return out
