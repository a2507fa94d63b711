"""Refuses, before anything is written, a run that cannot succeed.

`check(config)` makes every test a run can make up front and raises a
`KDError` whose message is one line naming the field and what it accepts:

  schema         `kdjax.checks.validate` (types, ranges, known names)
  seeds          whole numbers in [0, 2³¹), for every member of a sweep
  optimizer      schedule warm-up and boundaries, momentum and Adam's betas
  teacher        a finished, compatible run (`kdjax.train.teacher.check`)
                 with the checkpoint of its final epoch on disk
  augmentation   `augment.max_shift` smaller than the image
  model          the network builds on the dataset's images: its init, a
                 training-mode apply and the optimizer's init traced
                 abstractly (`jax.eval_shape`)
  dataset        prepared in `config.data_dir`
  examples       class filters name classes the dataset has and leave
                 examples; `train_examples` fits in what they leave
  batch sizes    divisible by the devices, no larger than the training set

Nothing is written and nothing is compiled. The dataset is read as the run
reads it: `kdjax.data.load` caches each split per process, so the run that
follows the check reads nothing twice.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import checks
from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax import models
from kdjax.errors import ConfigError, DataError, KDError
from kdjax.train import optim
from kdjax.train import teacher as teacher_lib

# Seeds become int32 JAX keys (`jnp.int32(seed)`) and numpy Generators
# (which refuse negative seeds).
_SEED_LIMIT = 2**31


@dataclasses.dataclass(frozen=True)
class _TrainingSet:
  """How many training examples a run will see, and why that many."""
  num_examples: int  # after the validation split, class filters and subset
  description: str  # how num_examples came about, for messages


def check(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line KDError for a config that cannot run; writes nothing.

  Args:
    config: a run config (`kdjax.config.default()` and its overrides).

  Raises:
    ConfigError: a field holds a value this run cannot use (the message
      names the field and what it accepts).
    DataError: the dataset is not prepared in the data directory.
    WorkdirError: the teacher's workdir is missing, unfinished or damaged.
  """
  checks.validate(config)
  _check_seeds(config)
  _check_optimizer(config)
  if config.teacher.workdir:
    teacher_lib.check(config)
    _check_teacher_model(config)
  # The model and the augmentation need only the image shape the catalog
  # knows, so their mistakes are found before the dataset is read.
  image_shape = data_lib.catalog.image_shape(config)
  _check_augment(config, image_shape)
  _check_model(config, image_shape)
  _check_batch_sizes(config, _training_set(config))


def _check_teacher_model(config) -> None:
  """Each teacher's model resolves here: an import path its run recorded must still import."""
  directories, _ = teacher_lib.resolve(config.teacher.workdir)
  for workdir in directories:
    teacher_config, _ = teacher_lib.read_run(workdir)
    try:
      models.check_config(teacher_config)
    except ConfigError as e:
      raise ConfigError(f'config.teacher.workdir={workdir}: the teacher\'s {e}') from None


def _is_whole(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _check_seed(field: str, value) -> None:
  if not _is_whole(value) or not 0 <= value < _SEED_LIMIT:
    raise ConfigError(f'config.{field}={value!r}: must be a whole number in [0, 2**31)')


def _check_seeds(config) -> None:
  for field in ('seed', 'data_seed', 'validation_seed'):
    _check_seed(field, config[field])
  for value in config.sweep.seed:
    _check_seed('sweep.seed', value)
  # A seed sweep may shift each member's data seed by its seed's offset
  # (sweep.couple_data_seed), which can fall below 0.
  for member in config_lib.sweep_members(config):
    data_seed = member.get('data_seed', config.data_seed)
    if not 0 <= data_seed < _SEED_LIMIT:
      raise ConfigError(
          f'config.sweep.seed={tuple(config.sweep.seed)} gives member {member["label"]} '
          f'data_seed {data_seed} (data_seed + member seed - seed), outside [0, 2**31); '
          'raise config.data_seed or set sweep.couple_data_seed=False')


def _check_optimizer(config) -> None:
  """Ranges `kdjax.checks.validate` leaves open and optax would accept silently."""
  schedule, optimizer = config.schedule, config.optimizer
  if isinstance(schedule.warmup_epochs, bool) or not isinstance(
      schedule.warmup_epochs, (int, float)) or schedule.warmup_epochs < 0:
    raise ConfigError(f'config.schedule.warmup_epochs={schedule.warmup_epochs!r}: '
                      'must be a number >= 0')
  if schedule.name == 'step':
    if any(not isinstance(b, (int, float)) or b <= 0 for b in schedule.boundaries):
      raise ConfigError(f'config.schedule.boundaries={tuple(schedule.boundaries)}: '
                        'every boundary must be an epoch > 0')
    if not schedule.step_factor > 0:
      raise ConfigError(f'config.schedule.step_factor={schedule.step_factor!r}: must be > 0')
  fields = {'sgd': ('momentum',), 'dot': ('momentum',), 'adam': ('b1', 'b2'), 'adamw': ('b1', 'b2')}
  for field in fields.get(optimizer.name, ()):
    if not 0 <= optimizer[field] < 1:
      raise ConfigError(f'config.optimizer.{field}={optimizer[field]!r}: must be in [0, 1)')
  if optimizer.name in ('adam', 'adamw') and not optimizer.eps >= 0:
    raise ConfigError(f'config.optimizer.eps={optimizer.eps!r}: must be >= 0')


def _check_data_dir(config) -> None:
  """A clearer message than 'not in DIR, import it there' when DIR is a file."""
  data_dir = config.data_dir
  if data_dir and os.path.isfile(data_dir):
    raise ConfigError(f'config.data_dir={data_dir!r}: is a file; give a TFDS data directory, '
                      "or '' for $TFDS_DATA_DIR (else ~/tensorflow_datasets)")


def _training_set(config) -> _TrainingSet:
  """Reads (or describes, when streamed) the dataset and counts the training examples."""
  # The directory is looked at only once TFDS has not found the data in it:
  # `tfds.testing.mock_data` serves datasets from directories that do not exist.
  if data_lib.catalog.input_pipeline(config) == 'stream':
    try:
      info = data_lib.stream.describe(config.dataset, data_dir=config.data_dir or None,
                                      image_size=config.input.image_size,
                                      validation_fraction=config.validation_fraction)
    except DataError:
      _check_data_dir(config)
      raise
    return _TrainingSet(info.num_train_examples, f'of {config.dataset} (streamed)')
  try:
    dataset = data_lib.load(config.dataset, data_dir=config.data_dir or None,
                            validation_fraction=config.validation_fraction,
                            validation_seed=config.validation_seed)
  except DataError:
    _check_data_dir(config)
    raise
  labels = dataset.train.labels
  description = f'of {config.dataset}'
  if dataset.validation is not None:
    description += (f' left by validation_fraction={config.validation_fraction:g} '
                    f'({len(dataset.validation)} held out)')
  keep, filters = np.ones(len(labels), bool), []
  for field in ('omit_classes', 'keep_classes'):
    classes = tuple(config[field])
    if not classes:
      continue
    if not all(_is_whole(k) and 0 <= k < dataset.num_classes for k in classes):
      raise ConfigError(f'config.{field}={classes}: classes must be whole numbers in '
                        f'[0, {dataset.num_classes}) ({config.dataset} has '
                        f'{dataset.num_classes} classes)')
    chosen = np.isin(labels, list(classes))
    keep &= ~chosen if field == 'omit_classes' else chosen
    if not keep.any():
      raise ConfigError(f'config.{field}={classes}: leaves none of the {len(labels)} '
                        f'training examples {description}')
    filters.append(f'{field}={classes}')
  if filters:
    description += f' with {" and ".join(filters)}'
  available = int(keep.sum())
  if config.train_examples > available:
    raise ConfigError(f'config.train_examples={config.train_examples}: exceeds the '
                      f'{available} training examples {description}; use at most {available} '
                      '(0 = all)')
  if config.train_examples:
    available = config.train_examples
    description = f'in the subset config.train_examples={available}'
  return _TrainingSet(available, description)


def _check_batch_sizes(config, training_set: _TrainingSet) -> None:
  """Batch sizes the devices can split and the training set can fill."""
  devices = jax.device_count()
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % devices:
      raise ConfigError(f'config.{field}={config[field]} is not divisible by the '
                        f'{devices} devices; use a multiple of {devices}')
  processes = jax.process_count()
  if data_lib.catalog.input_pipeline(config) == 'stream':
    # Each process reads its own share of the split.
    steps = (training_set.num_examples // processes) // (config.batch_size // processes)
  else:
    steps = training_set.num_examples // config.batch_size
  if steps == 0:
    raise ConfigError(f'config.batch_size={config.batch_size}: exceeds the '
                      f'{training_set.num_examples} training examples '
                      f'{training_set.description}; use at most '
                      f'{training_set.num_examples // devices * devices}')


def _check_augment(config, image_shape) -> None:
  side = min(image_shape[:2])
  if config.augment.max_shift >= side:
    raise ConfigError(f'config.augment.max_shift={config.augment.max_shift}: must be smaller '
                      f'than the {side}-pixel side of the {config.dataset} images')


def _describe_model(model_config) -> str:
  options = ', '.join(f'{k}={v!r}' for k, v in model_config.to_dict().items())
  return f'config.model ({options})'


def _check_model(config, shape: tuple[int, int, int]) -> None:
  """Builds the model and traces its init, a training step's apply and the optimizer's init.

  Abstract evaluation (`jax.eval_shape`) runs the shape logic of every layer
  without allocating or compiling, so a network the options cannot build
  (a width of 0, an input too small for its pools) fails here, in one line.
  """
  num_classes = data_lib.catalog.get_info(config.dataset).num_classes
  key = json.dumps([config.model.to_dict(), config.optimizer.to_dict(),
                    config.schedule.to_dict(), list(shape), num_classes],
                   sort_keys=True, default=str)
  if key in _MODELS_CHECKED:  # the seeds of a run, the stages of a launcher
    return
  _check_model_once(config, shape, num_classes)
  _MODELS_CHECKED.add(key)


# The model checks that passed in this process (a check depends only on its key's parts).
_MODELS_CHECKED: set = set()


def _check_model_once(config, shape: tuple[int, int, int], num_classes: int) -> None:
  where = f'{shape[0]}x{shape[1]}x{shape[2]} {config.dataset} images'
  try:
    model = models.from_config(config.model, num_classes=num_classes)
  except KDError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # a factory's own checks
    raise ConfigError(f'{_describe_model(config.model)} cannot be built: '
                      f'{_first_line(e)}') from None
  # The schedule's steps per epoch change no shape; 1 stands for the real count.
  tx = optim.optimizer(config, 1)

  def init_and_apply():
    rng = jax.random.PRNGKey(0)
    variables = model.init({'params': rng, 'dropout': rng},
                           jnp.zeros((1, *shape), jnp.float32), train=False)
    model_state = {k: v for k, v in variables.items() if k != 'params'}
    logits, _ = model.apply(variables, jnp.zeros((2, *shape), jnp.float32), train=True,
                            rngs={'dropout': rng}, mutable=list(model_state))
    return logits, tx.init(variables['params'])

  try:
    logits, _ = jax.eval_shape(init_and_apply)
  except KDError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # any layer's shape error
    raise ConfigError(f'{_describe_model(config.model)} cannot build a network on {where}: '
                      f'{_first_line(e)}') from None
  if not hasattr(logits, 'shape') or tuple(logits.shape) != (2, num_classes):
    raise ConfigError(f'{_describe_model(config.model)} gives outputs of shape '
                      f'{_output_shape(logits)} on {where}, not ({num_classes},) logits')


def _output_shape(outputs) -> str:
  """What a network gave for a batch of two: a logits shape, or the structure it returned."""
  if hasattr(outputs, 'shape'):
    return str(tuple(outputs.shape[1:]))
  return f'{type(outputs).__name__} ' + str(jax.tree.map(lambda x: tuple(x.shape), outputs))


def _first_line(error: Exception) -> str:
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0]}' if text else type(error).__name__
