"""Train state and the compiled programs of a run: train step, epoch, eval.

The state is an immutable pytree. The teacher is a separate frozen pytree
passed into the step: it gets no gradient, has no optimizer state and is not
part of the student's checkpoint. Every per-run hyper-parameter that a sweep
may vary (temperature, alpha) travels in `hparams` as an array, so one
compiled program can train a `jax.vmap`-ed stack of students.
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax import losses
from kdjax.data import augment
from kdjax.train import optim


def data_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all) with the batch axis `data`.

  The axis is of type Auto: the compiler propagates shardings from the
  batch constraint, so the same program runs on 1 device or many.
  """
  import numpy as np
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices, ('data',), axis_types=(jax.sharding.AxisType.Auto,))


@flax.struct.dataclass
class TrainState:
  """Everything a student run carries from step to step."""
  step: jax.Array  # int32 scalar
  params: Any
  model_state: Any  # non-trainable collections, e.g. {'batch_stats': ...}
  opt_state: Any
  rng: jax.Array  # base key; step keys are fold_in(rng, step)


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_shape) -> TrainState:
  """Initialises parameters, model state and optimizer state."""
  init_rng, state_rng = jax.random.split(rng)
  variables = model.init({'params': init_rng, 'dropout': init_rng},
                         jnp.zeros((1, *image_shape), jnp.float32), train=False)
  params = variables.pop('params') if isinstance(variables, dict) else variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=model_state, opt_state=tx.init(params), rng=state_rng)


def init_fast(init_fn: Callable, *args):
  """Runs a one-off initialisation program, compiled for compile speed.

  Parameter initialisers (threefry random bits for every weight) compile
  slowly at XLA's default optimisation level on CPU (seconds for a small
  conv net) while running in milliseconds either way, so on CPU the
  backend's optimisations are turned off for this program.
  """
  lowered = jax.jit(init_fn).lower(*args)
  options = ({'xla_backend_optimization_level': 0}
             if jax.default_backend() == 'cpu' else None)
  return lowered.compile(compiler_options=options)(*args)


def make_train_step(*, model: nn.Module, tx: optax.GradientTransformation,
                    mean, std, max_shift: int = 0, flip: bool = False,
                    teacher_model: nn.Module | None = None, soft_kind: str | None = 'kl',
                    max_norm: float = 0.0) -> Callable:
  """Builds `train_step(state, batch, teacher_variables, hparams) -> (state, metrics)`.

  `batch` holds uint8 `images` and int `labels`, and `teacher_logits` when
  the teacher's outputs are cached. With `teacher_model` and no cached
  logits, the teacher runs inside the step on the same augmented inputs.
  Without either, the student trains on the labels alone.

  `hparams` holds `temperature` and `alpha` (scalars, or traced per member
  under vmap), and optionally `lr_scale` (the updates are multiplied by it:
  every optimizer here is linear in its learning rate, so this trains with
  learning rate × lr_scale) and `kind` (an index into
  `losses.SOFT_LOSS_KINDS`, used when `soft_kind` is None).
  """

  def train_step(state: TrainState, batch, teacher_variables, hparams):
    step_rng = jax.random.fold_in(state.rng, state.step)
    augment_rng, dropout_rng = jax.random.split(step_rng)
    images = augment.augment(augment_rng, batch['images'], max_shift=max_shift, flip=flip)
    images = augment.normalize(images, mean, std)
    labels = batch['labels']

    teacher_logits = batch.get('teacher_logits')
    if teacher_logits is None and teacher_model is not None:
      teacher_logits = teacher_model.apply(teacher_variables, images, train=False)
    if teacher_logits is not None:
      teacher_logits = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))

    def loss_fn(params):
      logits, new_model_state = model.apply(
          {'params': params, **state.model_state}, images, train=True,
          rngs={'dropout': dropout_rng}, mutable=list(state.model_state))
      if teacher_logits is None:
        loss = jnp.mean(losses.cross_entropy(logits, labels))
      else:
        loss = losses.distillation_loss(
            logits, teacher_logits, labels, temperature=hparams['temperature'],
            alpha=hparams['alpha'],
            kind=hparams['kind'] if soft_kind is None else soft_kind)
      return loss, (logits, new_model_state)

    (loss, (logits, new_model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if 'lr_scale' in hparams:
      updates = jax.tree.map(lambda u: u * hparams['lr_scale'], updates)
    params = optax.apply_updates(state.params, updates)
    if max_norm > 0:
      params = optim.max_norm(params, max_norm)
    metrics = {
        'loss': loss,
        'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              model_state=dict(new_model_state), opt_state=opt_state)
    return new_state, metrics

  return train_step


def make_epoch(train_step: Callable, *, mesh: Mesh, batch_size: int,
               steps_per_epoch: int, num_members: int = 0) -> Callable:
  """Compiles one whole epoch into a single program.

  `epoch(state, data, teacher_variables, hparams, order_rng)` shuffles the
  on-device `data` (a dict of arrays with a leading example axis) with
  `order_rng`, cuts `steps_per_epoch` batches and scans the train step over
  them; batches are sharded over the mesh's `data` axis. Returns the new
  state and per-step metrics (arrays of length `steps_per_epoch`).

  With `num_members` > 0 the state and hparams carry a leading member axis and
  every member trains on the same batches (a vectorised sweep).
  """
  batch_sharding = NamedSharding(mesh, P('data'))
  step_fn = train_step
  if num_members:
    step_fn = jax.vmap(train_step, in_axes=(0, None, None, 0))

  def epoch(state, data, teacher_variables, hparams, order_rng):
    num_examples = jax.tree.leaves(data)[0].shape[0]
    order = jax.random.permutation(order_rng, num_examples)
    order = order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

    def body(state, indices):
      batch = jax.tree.map(lambda x: jnp.take(x, indices, axis=0), data)
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      return step_fn(state, batch, teacher_variables, hparams)

    return jax.lax.scan(body, state, order)

  return jax.jit(epoch, donate_argnums=0)


def train_step_flops(train_step: Callable, state, batch, teacher_variables, hparams, *,
                     num_members: int = 0) -> float | None:
  """XLA's operation count of one train step (all members of a sweep together).

  Taken from the lowered program's cost analysis, so nothing is compiled.
  `batch` gives the shapes and dtypes of one batch (`jax.ShapeDtypeStruct`s).
  """
  step_fn = jax.vmap(train_step, in_axes=(0, None, None, 0)) if num_members else train_step
  cost = jax.jit(step_fn).lower(state, batch, teacher_variables, hparams).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost['flops']) if cost and 'flops' in cost else None


def make_predict(model: nn.Module, *, mesh: Mesh, mean, std, batch_size: int,
                 num_members: int = 0) -> Callable:
  """Compiles `predict(variables, images) -> logits` over a whole split.

  `images` is a uint8 array whose length is a multiple of `batch_size`
  (pad with `pad_to_multiple`); it is processed in eval mode, `batch_size`
  examples at a time, sharded over the mesh's `data` axis. With
  `num_members` > 0, `variables` has a leading member axis and so do the
  logits.
  """
  batch_sharding = NamedSharding(mesh, P('data'))

  def logits_of(variables, images):
    images = jax.lax.with_sharding_constraint(images, batch_sharding)
    return model.apply(variables, augment.normalize(images, mean, std), train=False)

  if num_members:
    logits_of = jax.vmap(logits_of, in_axes=(0, None), out_axes=1)

  def predict(variables, images):
    batches = images.reshape(-1, batch_size, *images.shape[1:])
    logits = jax.lax.map(lambda x: logits_of(variables, x), batches)
    logits = logits.reshape(-1, *logits.shape[2:])
    return jnp.moveaxis(logits, 0, 1) if num_members else logits

  return jax.jit(predict)


def pad_to_multiple(array, multiple: int):
  """Pads the leading axis with zeros up to a multiple of `multiple`."""
  import numpy as np
  extra = (-array.shape[0]) % multiple
  if not extra:
    return array
  return np.concatenate([array, np.zeros((extra, *array.shape[1:]), array.dtype)])
