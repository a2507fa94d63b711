"""How a run's examples reach its compiled programs: held on the devices, or streamed.

Both feeds answer the same questions for `kdjax.train.loop`: how many
training examples and steps an epoch has, how to compile and run one epoch of
the train step, and the logits of every evaluation split.

- `DeviceFeed`: the whole (filtered) training set is put on the devices once;
  an epoch is one compiled program that shuffles, batches and scans the step
  (`step.make_epoch`). The teacher's logits may be cached beside the images.
- `StreamFeed`: tf.data reads, decodes and shuffles each epoch on the host
  (`kdjax.data.stream`), batches go to the devices ahead of use, and the
  compiled step runs once per batch. The teacher runs inside the step.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import data as data_lib
from kdjax.errors import ConfigError
from kdjax.train import step as step_lib


def replicated(mesh: Mesh, tree):
  """Places host arrays on every device of the mesh (works across processes)."""
  sharding = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree.map(put, tree)


def build(config, mesh: Mesh):
  """The dataset (held or described) and the feed `config.input.pipeline` asks for."""
  if data_lib.catalog.input_pipeline(config) == 'device':
    dataset = data_lib.load(config.dataset, data_dir=config.data_dir or None,
                            validation_fraction=config.validation_fraction,
                            validation_seed=config.validation_seed)
    return dataset, DeviceFeed(config, dataset, training_examples(dataset.train, config), mesh)
  info = data_lib.stream.describe(config.dataset, data_dir=config.data_dir or None,
                                  image_size=config.input.image_size,
                                  validation_fraction=config.validation_fraction)
  return info, StreamFeed(config, info, mesh)


def training_examples(split: data_lib.Split, config) -> data_lib.Split:
  """The training examples the config asks for: class filters, then the subset."""
  keep = np.ones(len(split.labels), bool)
  if len(config.omit_classes):
    keep &= ~np.isin(split.labels, list(config.omit_classes))
  if len(config.keep_classes):
    keep &= np.isin(split.labels, list(config.keep_classes))
  indices = np.flatnonzero(keep)
  if config.train_examples:
    if config.train_examples > len(indices):
      raise ConfigError(f'config.train_examples={config.train_examples} exceeds the '
                        f'{len(indices)} training examples available')
    # The subset is part of what the data is, like the validation split: it
    # stays put when data_seed (the example order) changes with a member's seed.
    chosen = np.random.default_rng(config.validation_seed).permutation(len(indices))
    indices = np.sort(indices[chosen[:config.train_examples]])
  return data_lib.Split(images=split.images[indices], labels=split.labels[indices])


def _check_batch_sizes(config, num_examples: int) -> int:
  """The steps per epoch (preflight has refused batch sizes that cannot be split)."""
  steps = num_examples // config.batch_size
  if steps == 0:  # a guard for direct callers; runs are refused in preflight
    raise ConfigError(f'config.batch_size={config.batch_size} exceeds the '
                      f'{num_examples} training examples')
  return steps


def _stack_members(logits: np.ndarray, num_members: int) -> np.ndarray:
  """Logits as [M, N, K], M = 1 for a plain run."""
  return logits if num_members else logits[None]


class DeviceFeed:
  """The training set held on the devices; one compiled program per epoch."""

  mode = 'device'

  def __init__(self, config, dataset: data_lib.Dataset, train_split: data_lib.Split,
               mesh: Mesh):
    self._config, self._mesh = config, mesh
    self.num_train_examples = len(train_split.labels)
    self.steps_per_epoch = _check_batch_sizes(config, self.num_train_examples)
    self._train_images = train_split.images
    self.train_labels = train_split.labels.astype(np.int32)
    # `index`: each example's position in the (filtered) training split, which
    # methods with per-example state (CRD's memory banks) address.
    self.data = replicated(mesh, {'images': train_split.images, 'labels': self.train_labels,
                                  'index': np.arange(self.num_train_examples, dtype=np.int32)})
    splits = {'test': dataset.test}
    if dataset.validation is not None:
      splits['validation'] = dataset.validation
    self.labels = {name: split.labels for name, split in splits.items()}
    self._eval_images = {
        name: replicated(mesh, step_lib.pad_to_multiple(split.images, config.eval_batch_size))
        for name, split in splits.items()}
    self._epoch = None
    self.step_flops = None  # XLA's count of one train step, once compiled

  def cache_teacher_logits(self, teacher_predict, teacher_variables) -> None:
    """Adds the teacher's logits of every training image to the on-device data."""
    padded = replicated(self._mesh, step_lib.pad_to_multiple(self._train_images,
                                                             self._config.eval_batch_size))
    self.data['teacher_logits'] = teacher_predict(teacher_variables,
                                                  padded)[:self.num_train_examples]

  def batch_shapes(self, member_orders: bool = False, num_members: int = 0) -> dict:
    """Shapes and dtypes of one training batch (for cost analysis).

    With `member_orders`, one batch per member (a leading member axis).
    """
    lead = (num_members, self._config.batch_size) if member_orders else (
        self._config.batch_size,)
    return {k: jax.ShapeDtypeStruct((*lead, *v.shape[1:]), v.dtype)
            for k, v in self.data.items()}

  def compile(self, train_step, *, num_members: int, state, teacher_variables, hparams,
              data_rng, member_orders: bool = False,
              input_groups: tuple[int, ...] | None = None) -> float:
    """Compiles the epoch program; returns the seconds it took."""
    epoch_fn = step_lib.make_epoch(train_step, mesh=self._mesh,
                                   batch_size=self._config.batch_size,
                                   steps_per_epoch=self.steps_per_epoch, num_members=num_members,
                                   member_orders=member_orders, input_groups=input_groups)
    start = time.perf_counter()
    lowered = epoch_fn.lower(state, self.data, teacher_variables, hparams, data_rng)
    # XLA's cost analysis counts a loop's body once: the scanned step's count
    # (plus the epoch's shuffle, a sort of the example indices).
    self.step_flops = step_lib.lowered_flops(lowered)
    self._epoch = lowered.compile()
    return time.perf_counter() - start

  def run_epoch(self, state, teacher_variables, hparams, data_rng, epoch: int, stop_requested):
    """One epoch. Returns (state, per-step metrics as numpy [steps, M], finished=True)."""
    del stop_requested  # an epoch is one program: it always runs to its end
    if data_rng.ndim > 1:  # one key per member
      order_rng = jax.vmap(jax.random.fold_in, in_axes=(0, None))(data_rng, epoch)
    else:
      order_rng = jax.random.fold_in(data_rng, epoch)
    state, metrics = self._epoch(state, self.data, teacher_variables, hparams, order_rng)
    return state, _metrics_table(metrics, self.steps_per_epoch), True

  def eval_logits(self, predict, variables, num_members: int) -> dict:
    """Split name -> logits [M, N, K] of every example, as numpy."""
    out = {}
    for name, images in self._eval_images.items():
      logits = _stack_members(np.asarray(predict(variables, images)), num_members)
      out[name] = logits[:, :len(self.labels[name])]
    return out


class StreamFeed:
  """Batches streamed from TFDS through tf.data; one compiled step per batch."""

  mode = 'stream'

  def __init__(self, config, info: 'data_lib.stream.StreamInfo', mesh: Mesh):
    self._config, self._info, self._mesh = config, info, mesh
    processes = jax.process_count()
    if config.batch_size % processes or config.eval_batch_size % processes:
      raise ConfigError(f'config.batch_size and eval_batch_size must be divisible by the '
                        f'{processes} processes')
    self.num_train_examples = info.num_train_examples
    _check_batch_sizes(config, info.num_train_examples)
    # Each process reads its own share (at least floor(N / P) examples).
    self.steps_per_epoch = ((info.num_train_examples // processes)
                            // (config.batch_size // processes))
    if self.steps_per_epoch == 0:
      raise ConfigError(f'config.batch_size={config.batch_size} exceeds the share of the '
                        f'{info.num_train_examples} training examples each process reads')
    self._sharding = NamedSharding(mesh, P('data'))
    self.labels = {}
    self.train_labels = None  # batches carry no example index (refused for CRD in config)
    self._step = None
    self.step_flops = None  # XLA's count of one train step, once compiled

  def batch_shapes(self, member_orders: bool = False, num_members: int = 0) -> dict:
    del member_orders, num_members  # streamed members share the batches
    shape = (self._config.batch_size, *self._info.image_shape)
    return {'images': jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=self._sharding),
            'labels': jax.ShapeDtypeStruct(shape[:1], jnp.int32, sharding=self._sharding)}

  def compile(self, train_step, *, num_members: int, state, teacher_variables, hparams,
              data_rng, member_orders: bool = False,
              input_groups: tuple[int, ...] | None = None) -> float:
    del data_rng  # tf.data orders the examples
    if member_orders:  # refused earlier by config validation; a guard for direct callers
      raise ConfigError('streamed members share one data order; set '
                        "sweep.couple_data_seed=False or sweep.mode='loop'")
    step_fn = train_step
    if num_members:
      step_fn = step_lib.vectorise(train_step, input_groups=input_groups)
    start = time.perf_counter()
    lowered = jax.jit(step_fn, donate_argnums=0).lower(
        state, self.batch_shapes(), teacher_variables, hparams)
    self.step_flops = step_lib.lowered_flops(lowered)
    self._step = lowered.compile()
    return time.perf_counter() - start

  def run_epoch(self, state, teacher_variables, hparams, data_rng, epoch: int, stop_requested):
    """One epoch, or its start when `stop_requested()` turns true.

    Returns (state, per-step metrics as numpy [steps, M], finished).
    """
    del data_rng
    config = self._config
    batches = data_lib.stream.train_batches(
        self._info, data_dir=config.data_dir or None, global_batch_size=config.batch_size,
        steps=self.steps_per_epoch, seed=config.data_seed, epoch=epoch,
        shuffle_buffer=config.input.shuffle_buffer)
    step_metrics, finished = [], True
    for batch in data_lib.stream.device_batches(batches, self._sharding, config.input.prefetch):
      state, metrics = self._step(state, batch, teacher_variables, hparams)
      step_metrics.append(metrics)
      if stop_requested() and len(step_metrics) < self.steps_per_epoch:
        finished = False
        break
    metrics = jax.tree.map(lambda *xs: jnp.stack(xs), *step_metrics)
    return state, _metrics_table(metrics, len(step_metrics)), finished

  def eval_logits(self, predict, variables, num_members: int) -> dict:
    config = self._config
    processes, index = jax.process_count(), jax.process_index()
    local = config.eval_batch_size // processes
    out = {}
    for name, split in self._info.eval_splits.items():
      logits, labels = [], []
      for batch, valid in data_lib.stream.eval_batches(
          self._info, split, data_dir=config.data_dir or None,
          batch_size=config.eval_batch_size):
        images = jax.make_array_from_process_local_data(
            self._sharding, batch['images'][index * local:(index + 1) * local])
        batch_logits = predict(variables, images)
        if processes > 1:
          batch_logits = multihost_utils.process_allgather(batch_logits, tiled=True)
        batch_logits = _stack_members(np.asarray(batch_logits), num_members)
        logits.append(batch_logits[:, :valid])
        labels.append(batch['labels'][:valid])
      out[name] = np.concatenate(logits, axis=1)
      self.labels[name] = np.concatenate(labels)
    return out


def _metrics_table(metrics: dict, steps: int) -> dict:
  """Per-step metrics as numpy arrays of shape [steps, M]."""
  return {k: np.asarray(v).reshape(steps, -1) for k, v in metrics.items()}
