"""How a launcher's runs are sized: recipes, `Setup`, and the smoke-test shrinking of `--quick`."""

import copy
import dataclasses
import json

import ml_collections

from kdjax.errors import ConfigError

# Every launcher holds out the same seeded images of the training split, for
# teachers and students alike: no teacher has trained on a student's
# validation images, and every choice a report makes is made on them.
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 0

QUICK_EXAMPLES = 48
QUICK_BATCH = 16
QUICK_WIDTH = 16


def base_config(recipe: str) -> ml_collections.ConfigDict:
  """A run config for `recipe`: 'sgd' (configs/cifar_resnet.py), 'adam' (seed 004),
  'repdistiller' (the CIFAR-100 distillation benchmark's SGD step schedule), 'byot'
  (a Be Your Own Teacher PyTorch implementation: SGD 0.1, /10 at epochs 75, 130, 180) or
  'papernot' (seed 001's defensive distillation: SGD 0.01, Nesterov, constant)."""
  from configs import cifar_resnet
  c = cifar_resnet.get_config()
  if recipe == 'adam':  # seed 004: Adam 1e-3, constant, no weight decay
    c.optimizer.name = 'adam'
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.0
    c.schedule.name = 'constant'
  elif recipe == 'repdistiller':  # CIFAR-100 benchmark: SGD 0.05, /10 at 150, 180, 210 of 240
    c.optimizer.learning_rate = 0.05
    c.optimizer.nesterov = False
    c.schedule.name = 'step'
    c.schedule.boundaries = (150, 180, 210)
    c.schedule.step_factor = 0.1
  elif recipe == 'papernot':  # seed 001's defensive distillation: SGD 0.01, Nesterov
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-6
    c.schedule.name = 'constant'
  elif recipe == 'byot':  # a BYOT PyTorch implementation: SGD 0.1, /10 at 75, 130, 180 of 200
    c.optimizer.learning_rate = 0.1
    c.optimizer.nesterov = False
    c.schedule.name = 'step'
    c.schedule.boundaries = (75, 130, 180)
    c.schedule.step_factor = 0.1
  elif recipe != 'sgd':
    raise ValueError(recipe)
  return c


@dataclasses.dataclass
class Setup:
  """How every run of an experiment is sized, from the preset and the flags."""
  dataset: str
  recipe: str = 'sgd'
  epochs: int = 200
  seeds: int = 1
  train_examples: int = 0
  validation_fraction: float = VALIDATION_FRACTION
  batch_size: int = 128
  model_options: dict = dataclasses.field(default_factory=dict)  # per model name
  quick: bool = False
  data_dir: str = ''
  sweep_mode: str = 'auto'  # config.sweep.mode of every run
  # A preset's model name -> (import path, options): `--swap_model`'s own modules.
  swaps: dict = dataclasses.field(default_factory=dict)

  def model_config(self, model: str, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `model` block that trains the preset's `model`: `base` with its name and the
    preset's options, or, where `--swap_model` replaces it, the user's import path and
    options only."""
    if model in self.swaps:
      path, options = self.swaps[model]
      return ml_collections.ConfigDict({'name': path, 'options': dict(options)})
    out = copy.deepcopy(base)
    out.name = model
    out.update(self.model_options.get(model, {}))
    return out

  def config(self, model: str, *, epochs: int | None = None) -> ml_collections.ConfigDict:
    """The config that trains `model` alone under this setup."""
    c = base_config(self.recipe)
    c.dataset = self.dataset
    c.data_dir = self.data_dir
    c.model = self.model_config(model, c.model)
    c.num_epochs = epochs or self.epochs
    c.eval_every = max(1, c.num_epochs // 10)
    c.checkpoint_every = c.eval_every
    c.train_examples = self.train_examples
    c.sweep.mode = self.sweep_mode
    c.validation_fraction = self.validation_fraction
    c.validation_seed = VALIDATION_SEED
    c.batch_size = self.batch_size
    from kdjax.data import catalog
    if catalog.get_info(self.dataset).image_shape[-1] == 1:
      # 28×28 grayscale digits and clothes: a smaller shift than CIFAR's 4,
      # and no mirror images (a mirrored digit is not the same digit).
      c.augment.max_shift = 2
      c.augment.flip = False
    return shrunk(c) if self.quick else c


def shrunk(config: ml_collections.ConfigDict, *, widths: bool = True) -> ml_collections.ConfigDict:
  """`config` at smoke-test size, on the code path of the full-size run.

  Only sizes change: epochs, training examples, batch sizes and, with
  `widths`, the hidden widths of MLPs (the one family with a width option;
  the depth is kept). Everything that picks a code path stays: optimizer,
  schedule (warm-up and step boundaries scaled with the epochs, every
  boundary still crossed), an evaluation and checkpoint cadence above one
  epoch where the full run's is, augmentation, the teacher and how it is
  run, sweep axes and mode, the validation split and class filters.

  Args:
    config: a run config.
    widths: narrow MLP hidden layers to QUICK_WIDTH units.

  Returns:
    A shrunk copy; `config` is left as it is.
  """
  c = copy.deepcopy(config)
  full_epochs = c.num_epochs
  # Three epochs with a cadence of two: epoch 1 trains without evaluating,
  # epoch 2 is on the cadence, epoch 3 is the off-cadence last one.
  c.num_epochs = 3 if c.eval_every > 1 else min(full_epochs, 2)
  c.eval_every = min(c.eval_every, 2)
  c.checkpoint_every = min(c.checkpoint_every, 2)
  scale = c.num_epochs / full_epochs
  if len(c.schedule.boundaries):
    c.schedule.boundaries = tuple(sorted({min(max(1, round(b * scale)), c.num_epochs - 1)
                                          for b in c.schedule.boundaries}))
  if c.schedule.warmup_epochs:
    c.schedule.warmup_epochs = min(max(1, round(c.schedule.warmup_epochs * scale)),
                                   c.num_epochs - 1)
  c.train_examples = QUICK_EXAMPLES
  c.batch_size = QUICK_BATCH
  c.eval_batch_size = 2 * QUICK_BATCH
  if widths and c.model.name == 'mlp':
    from kdjax import models
    hidden = c.model.get('hidden') or models.create('mlp', num_classes=10).hidden
    with c.model.unlocked():
      c.model.hidden = tuple(min(QUICK_WIDTH, h) for h in hidden)
  return c


def shrunk_preset(preset: dict) -> dict:
  """A preset at smoke-test size: every swept list cut to its first two values
  (a grid stays a grid, seeds stay a seed sweep), one student of a list."""
  out = dict(preset)
  for key in ('temperatures', 'alphas', 'kinds'):
    if key in out:
      out[key] = tuple(out[key])[:2]
  if 'students' in out:
    out['students'] = tuple(out['students'])[:1]
  if 'pairs' in out:  # the pairs a quick run keeps (default: the first)
    out['pairs'] = tuple(out.get('quick_pairs', out['pairs'][:1]))
  if 'extra' in out:
    out['extra'] = shrunk_preset(out['extra'])
  if 'seeds' in out:  # a preset may keep fewer (a long list of stages)
    out['seeds'] = min(out['seeds'], out.get('quick_seeds', 2))
  if 'generations' in out:
    out['generations'] = min(out['generations'], 2)
  return out


def preset_models(preset: dict) -> list[str]:
  """The registered model names a preset trains (as teacher, student, assistant...), in
  the order they first appear in it."""
  from kdjax import models
  known, found = set(models.names()), []

  def walk(value):
    if isinstance(value, str):
      if value in known and value not in found:
        found.append(value)
    elif isinstance(value, dict):
      for key, item in value.items():
        if key != 'model_options':  # keyed by model name, but names no model to train
          walk(item)
    elif isinstance(value, (list, tuple)):
      for item in value:
        walk(item)

  walk(preset)
  return found


def parse_swaps(values, preset: dict) -> dict:
  """`--swap_model` values, NAME=PACKAGE.MODULE:FACTORY[=JSON OPTIONS], as {NAME: (path,
  options)}; ConfigError (one line) for a NAME the preset does not train, a path that is
  not an import path, options that are not a JSON object, or a NAME given twice."""
  from kdjax.models import registry as models_lib
  models = preset_models(preset)
  out = {}
  for value in values or ():
    name, _, rest = value.partition('=')
    path, _, options = rest.partition('=')
    if name not in models:
      raise ConfigError(f'--swap_model={value}: {name!r} is not a model of this preset; '
                        f'its models: {", ".join(models)}')
    if ':' not in path or path.startswith(':') or path.endswith(':'):
      raise ConfigError(f'--swap_model={value}: give NAME=PACKAGE.MODULE:FACTORY, optionally '
                        'followed by =JSON options')
    try:
      parsed = json.loads(options) if options else {}
    except json.JSONDecodeError as e:
      raise ConfigError(f'--swap_model={value}: the options are not JSON ({e.msg})') from None
    if not isinstance(parsed, dict):
      raise ConfigError(f'--swap_model={value}: the options must be a JSON object')
    if name in out:
      raise ConfigError(f'--swap_model: {name!r} is swapped twice')
    try:  # imports the user's module now: a bad path fails before any stage writes
      models_lib.resolve(path)
    except ConfigError as e:
      raise ConfigError(f'--swap_model={value}: {str(e).split(": ", 1)[-1]}') from None
    out[name] = (path, parsed)
  return out


def make_setup(preset: dict, *, dataset: str | None = None, epochs: int = 0, seeds: int = 0,
               train_examples: int = -1, quick: bool = False, data_dir: str = '',
               sweep_mode: str = 'auto', swaps=()) -> tuple[Setup, dict]:
  """The Setup and the preset a launcher runs, from a preset and its flags' values.

  `quick` shrinks both (see `shrunk` and `shrunk_preset`); 0 / -1 / None
  take the preset's value. `swaps`: `--swap_model` values (see `parse_swaps`).
  """
  parsed_swaps = parse_swaps(swaps, preset)
  if quick:
    preset = shrunk_preset(preset)
  setup = Setup(
      dataset=dataset or preset['dataset'], recipe=preset.get('recipe', 'sgd'),
      epochs=epochs or preset['epochs'], seeds=seeds or preset.get('seeds', 1),
      train_examples=preset.get('train_examples', 0) if train_examples == -1 else train_examples,
      validation_fraction=preset.get('validation_fraction', VALIDATION_FRACTION),
      batch_size=preset.get('batch_size', 128), model_options=preset.get('model_options', {}),
      quick=quick, data_dir=data_dir, sweep_mode=sweep_mode, swaps=parsed_swaps)
  return setup, preset
