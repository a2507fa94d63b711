"""Train state and the compiled programs of a run: train step, epoch, eval.

The state is an immutable pytree. The teacher is a separate frozen pytree
passed into the step: it gets no gradient, has no optimizer state and is not
part of the student's checkpoint. What the step minimises is an `Objective`
value (kdjax.objectives): the step never names a loss. Every per-run
hyper-parameter that a sweep may vary (temperature, alpha) travels in
`hparams` as an array, so one compiled program can train a `jax.vmap`-ed
stack of students.
"""

import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kdjax.data import augment
from kdjax import objectives as objective_lib
from kdjax.errors import ConfigError
from kdjax.objective_registry import MEMBER_AXIS
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
  opt_state: Any  # of the trainable pair {'student': params, 'objective': objective_params}
  rng: jax.Array  # base key; step keys are fold_in(rng, step)
  objective_params: Any  # the objective's own trainable parts ({} for none)
  # 0 while every loss so far was finite; else the step whose loss was not.
  # Only sweeps set it: a member that diverged keeps its last finite state.
  diverged_step: jax.Array  # int32 scalar
  # The objective's non-gradient state (memory banks, connectors' BatchNorm
  # statistics; {} for none): saved with the student, updated by the step,
  # never seen by the optimizer.
  objective_state: Any = flax.struct.field(default_factory=dict)


def init_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
               image_shape, objective: objective_lib.Objective | None = None,
               teacher_outputs=None) -> TrainState:
  """Initialises parameters, model state, the objective's parameters and state, and the
  optimizer state.

  `teacher_outputs`: the teacher's `{'logits', 'features'}` as ShapeDtypeStructs
  (`output_shapes`), for an objective whose parts are shaped after the networks.
  """
  init_rng, state_rng = jax.random.split(rng)
  images = jnp.zeros((1, *image_shape), jnp.float32)
  variables = model.init({'params': init_rng, 'dropout': init_rng}, images, train=False)
  params = variables.pop('params') if isinstance(variables, dict) else variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params'}
  objective_params, objective_state = {}, {}
  if objective is not None:
    student_outputs = (output_shapes(model, {'params': params, **model_state}, image_shape)
                       if objective.init_with is not None else None)
    objective_params, objective_state = objective.init_parts(
        jax.random.fold_in(init_rng, 1), student_outputs, teacher_outputs)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=model_state,
                    opt_state=tx.init(_trainable(params, objective_params)), rng=state_rng,
                    objective_params=objective_params,
                    diverged_step=jnp.zeros((), jnp.int32), objective_state=objective_state)


def output_shapes(model: nn.Module, variables, image_shape, batch: int = 2) -> dict:
  """`{'logits', 'features'}` of `model` as ShapeDtypeStructs (nothing is computed)."""
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, jnp.zeros((batch, *image_shape), jnp.float32), train=False,
                            return_features=True), variables)
  return {'logits': logits, 'features': features}


def _trainable(params, objective_params) -> dict:
  """What the optimizer updates: the student and the objective's own parts."""
  return {'student': params, 'objective': objective_params}


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
                    objective: objective_lib.Objective | None = None,
                    max_norm: float = 0.0, freeze_on_divergence: bool = False,
                    mixup: float = 0.0) -> Callable:
  """Builds `train_step(state, batch, teacher_variables, hparams) -> (state, metrics)`.

  `batch` holds uint8 `images` and int `labels`, and `teacher_logits` when
  the teacher's outputs are cached. With `teacher_model` and no cached
  logits, the teacher runs inside the step, in eval mode, on the same
  augmented inputs. Without either, the objective sees no teacher.

  `objective` is what the step minimises (default: Hinton's logit KD with
  soft loss `soft_kind`; None there means the kind is traced in `hparams`).
  Gradients flow to the student's parameters and the objective's own, never
  to the teacher.

  With a `tx` that takes split gradients (`optim.SplitGradientTransformation`: DOT),
  the step gives it the gradients of the objective's task term and of its
  distillation terms, from one forward pass, as `{'task': g, 'kd': g}`.

  `hparams` holds what the objective reads (`temperature`, `alpha`, maybe
  `kind`: scalars, or traced per member under vmap), and optionally
  `lr_scale` (the updates are multiplied by it: every optimizer here is
  linear in its learning rate, so this trains with learning rate × lr_scale).

  An objective with a `strong_shift` (MLKD) sees a second view of each batch,
  augmented with its own key and that largest translation: the student (in
  train mode, a second forward pass that updates its BatchNorm statistics again)
  and the teacher run on it as well, their logits under 'strong_logits'.

  `mixup` > 0 mixes each batch of augmented images with itself rolled by one example
  (`mix_images`) before both networks see it (function matching, Beyer et al. 2022).

  With `freeze_on_divergence` (sweeps), a step whose loss is not finite
  leaves the state as it was and records the step in `state.diverged_step`,
  and every later step leaves it alone too: the other members of a
  vectorised sweep train on, and this one keeps its last finite weights.
  """
  if objective is None:
    objective = objective_lib.logit_kd(soft_kind)
  strong_shift = objective.strong_shift
  if strong_shift is not None and teacher_model is None:
    raise ConfigError(f'objective {objective.name!r} sees a second augmented view of each '
                      'batch: the teacher must run in the step (no cached logits)')
  # The step in three parts, so that members of a vectorised sweep that see
  # the same inputs can share the teacher's forward pass (`vectorise`).
  inputs = _inputs_fn(mean=mean, std=std, max_shift=max_shift, flip=flip,
                      strong_shift=strong_shift, mixup=mixup)
  teacher_outputs_of = _teacher_outputs_fn(teacher_model, objective.taps_features,
                                           strong_shift)
  update = _update_fn(model=model, tx=tx, objective=objective, max_norm=max_norm,
                      freeze_on_divergence=freeze_on_divergence)

  def train_step(state: TrainState, batch, teacher_variables, hparams):
    images = inputs(state.rng, state.step, batch)
    return update(state, batch, images, teacher_outputs_of(images, batch, teacher_variables),
                  hparams)

  train_step.parts = StepParts(inputs=inputs, teacher_outputs=teacher_outputs_of, update=update,
                               teacher_in_step=teacher_model is not None)
  return train_step


def _inputs_fn(*, mean, std, max_shift: int, flip: bool,
               strong_shift: int | None = None, mixup: float = 0.0) -> Callable:
  """`inputs(rng, step, batch)`: the first part of a train step."""

  def inputs(rng, step, batch):
    """The augmented, normalised (and, with `mixup`, mixed) images of this step (a
    function of rng, step, batch); with a second view (`Objective.strong_shift`), the pair
    (weak, strong)."""
    augment_rng, _ = _step_keys(rng, step)
    images = augment.augment(augment_rng, batch['images'], max_shift=max_shift, flip=flip)
    images = augment.normalize(images, mean, std)
    if mixup > 0:
      images = mix_images(jax.random.fold_in(augment_rng, 2), images, mixup)
    if strong_shift is None:
      return images
    strong = augment.augment(jax.random.fold_in(augment_rng, 1), batch['images'],
                             max_shift=strong_shift, flip=flip)
    return images, augment.normalize(strong, mean, std)

  return inputs


def mix_images(rng, images, alpha: float):
  """Mixup within the batch: λ · images + (1 − λ) · images rolled by one example.

  One λ ~ Beta(alpha, alpha) for the batch, as big_vision's distillation trainer mixes.
  Normalisation is affine, so mixing normalised images equals normalising mixed ones.
  """
  lam = jax.random.beta(rng, alpha, alpha).astype(images.dtype)
  return lam * images + (1 - lam) * jnp.roll(images, 1, axis=0)


def _teacher_outputs_fn(teacher_model, taps: bool, strong_shift: int | None) -> Callable:
  """`teacher_outputs_of(images, batch, teacher_variables)`: the second part of a train
  step; with a second view, the teacher's logits on it too, under 'strong_logits'."""

  def teacher_outputs_of(images, batch, teacher_variables):
    if strong_shift is None:
      return _teacher_outputs(teacher_model, taps, images, batch, teacher_variables)
    weak, strong = images
    outputs = _teacher_outputs(teacher_model, taps, weak, batch, teacher_variables)
    return dict(outputs, strong_logits=teacher_model.apply(teacher_variables, strong,
                                                           train=False))

  return teacher_outputs_of


def _update_fn(*, model: nn.Module, tx: optax.GradientTransformation,
               objective: objective_lib.Objective, max_norm: float,
               freeze_on_divergence: bool) -> Callable:
  """`update(state, batch, images, teacher_outputs, hparams) -> (state, metrics)`: the
  last part of a train step, from the step's images and the teacher's outputs on them."""
  taps = objective.taps_features
  split_gradients = isinstance(tx, optim.SplitGradientTransformation)

  def update(state: TrainState, batch, images, teacher_outputs, hparams):
    _, dropout_rng = _step_keys(state.rng, state.step)
    images, strong_images = images if objective.strong_shift is not None else (images, None)
    labels = batch['labels']
    teacher = None
    if teacher_outputs is not None:
      teacher = jax.tree.map(lambda x: jax.lax.stop_gradient(x.astype(jnp.float32)),
                             teacher_outputs)
    objective_hparams = dict(hparams, step=state.step, objective_state=state.objective_state,
                             example_index=batch.get('index'),
                             objective_rng=jax.random.fold_in(dropout_rng, 1))
    loss_fn = _loss_fn(model, objective, taps, state, (images, strong_images), dropout_rng,
                       teacher, labels, objective_hparams)
    trainable = _trainable(state.params, state.objective_params)
    if split_gradients:
      loss, (logits, new_model_state, terms, objective_state), grads = _split_gradients(
          loss_fn, trainable, objective.name)
    else:
      (loss, (logits, new_model_state, terms, objective_state, _)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(trainable)
    trainable, opt_state = _apply_gradients(tx, trainable, grads, state.opt_state,
                                            hparams.get('lr_scale'))
    params = trainable['student']
    if max_norm > 0:
      params = optim.max_norm(params, max_norm)
    metrics = {
        'loss': loss,
        'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
        **terms,
    }
    new_state = state.replace(step=state.step + 1, params=params,
                              model_state=dict(new_model_state), opt_state=opt_state,
                              objective_params=trainable['objective'],
                              objective_state=objective_state)
    if freeze_on_divergence:
      new_state = _frozen_if_diverged(new_state, state, loss)
    return new_state, metrics

  return update


def _loss_fn(model: nn.Module, objective: objective_lib.Objective, taps: bool,
             state: TrainState, images, dropout_rng, teacher, labels,
             objective_hparams) -> Callable:
  """`loss_fn(trainable) -> (loss, (logits, model_state, terms, objective_state, task))`:
  the objective of one step as a function of what the optimizer updates. `images` is the
  pair (images, second view or None)."""
  images, strong_images = images

  def loss_fn(trainable):
    outputs, new_model_state = model.apply(
        {'params': trainable['student'], **state.model_state}, images, train=True,
        rngs={'dropout': dropout_rng}, mutable=list(state.model_state),
        **({'return_features': True} if taps else {}))
    student = ({'logits': outputs[0], 'features': outputs[1]} if taps
               else {'logits': outputs})
    if strong_images is not None:  # a second forward pass, as the authors' (MLKD)
      strong, new_model_state = model.apply(
          {'params': trainable['student'], **new_model_state}, strong_images, train=True,
          rngs={'dropout': jax.random.fold_in(dropout_rng, 2)}, mutable=list(state.model_state))
      student['strong_logits'] = strong
    loss, terms = objective.loss(student, teacher, labels, objective_hparams,
                                 trainable['objective'])
    terms = dict(terms)
    objective_state = terms.pop(objective_lib.STATE, state.objective_state)
    task = terms.pop(objective_lib.TASK, None)
    return loss, (student['logits'], new_model_state, terms, objective_state, task)

  return loss_fn


def _teacher_outputs(teacher_model, taps: bool, images, batch, teacher_variables):
  """{'logits'} (cached or computed in eval mode), with 'features' when `taps`; None
  without a teacher."""
  if 'teacher_logits' in batch:
    return {'logits': batch['teacher_logits']}
  if teacher_model is None:
    return None
  if taps:
    logits, features = teacher_model.apply(teacher_variables, images, train=False,
                                           return_features=True)
    return {'logits': logits, 'features': features}
  return {'logits': teacher_model.apply(teacher_variables, images, train=False)}


def _split_gradients(loss_fn, trainable, objective_name: str):
  """One forward pass and the gradients of the task term and of the rest (distillation)
  of the loss: `(loss, aux, {'task': g, 'kd': g})`, `aux` without the task term."""

  def parts(trainable):
    loss, (logits, model_state, terms, objective_state, task) = loss_fn(trainable)
    if task is None:
      raise ConfigError(f'config.optimizer.name=\'dot\': objective {objective_name!r} does not '
                        'say which part of its loss is the task term')
    return jnp.stack([task, loss - task]), (loss, (logits, model_state, terms, objective_state))

  values, pullback, (loss, aux) = jax.vjp(parts, trainable, has_aux=True)
  # Both backward passes at once: the rows of the Jacobian of (task, kd).
  (rows,) = jax.vmap(pullback)(jnp.eye(2, dtype=values.dtype))
  return loss, aux, {'task': jax.tree.map(lambda g: g[0], rows),
                     'kd': jax.tree.map(lambda g: g[1], rows)}


def _apply_gradients(tx, trainable, grads, opt_state, lr_scale):
  """One optimizer update; with `lr_scale`, the update scaled by it (every optimizer here
  is linear in its learning rate). Returns (trainable, opt_state)."""
  updates, opt_state = tx.update(grads, opt_state, trainable)
  if lr_scale is not None:
    updates = jax.tree.map(lambda u: u * lr_scale, updates)
  return optax.apply_updates(trainable, updates), opt_state


def _step_keys(rng, step):
  """(augmentation, dropout) keys of one step: the state's key folded with the step."""
  return jax.random.split(jax.random.fold_in(rng, step))


def _frozen_if_diverged(new_state: TrainState, state: TrainState, loss) -> TrainState:
  """`new_state`, or `state` unchanged from the first step whose loss is not finite on
  (that step recorded in `diverged_step`)."""
  healthy = state.diverged_step == 0
  keep = healthy & jnp.isfinite(loss)
  new_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
  return new_state.replace(diverged_step=jnp.where(healthy & ~jnp.isfinite(loss),
                                                   state.step + 1, state.diverged_step))


@dataclasses.dataclass(frozen=True)
class StepParts:
  """A train step cut where members of a sweep may share work (see `vectorise`)."""
  inputs: Callable  # (rng, step, batch) -> images, or (weak, strong) for a two-view objective
  teacher_outputs: Callable  # (images, batch, teacher_variables) -> {'logits', ...} or None
  update: Callable  # (state, batch, images, teacher_outputs, hparams) -> (state, metrics)
  teacher_in_step: bool


def vectorise(train_step: Callable, *, member_orders: bool = False,
              input_groups: tuple[int, ...] | None = None) -> Callable:
  """The train step over a leading member axis of state and hparams.

  `batch` has a member axis too with `member_orders`. `input_groups[m]` names
  the first member whose inputs equal member m's (same seed, hence the same
  augmentation stream, and the same batches): with a teacher in the step,
  the teacher runs once per group instead of once per member (a T x alpha
  grid of one seed: once in all). Each member's own step is unchanged. The member
  axis is named `MEMBER_AXIS`: a loss may gather over it (kdjax.online).
  """
  in_axes = (0, 0 if member_orders else None, None, 0)
  parts = getattr(train_step, 'parts', None)
  if (parts is None or not parts.teacher_in_step or input_groups is None
      or len(set(input_groups)) == len(input_groups)):
    return jax.vmap(train_step, in_axes=in_axes, axis_name=MEMBER_AXIS)
  leaders = sorted(set(input_groups))
  leader_index = jnp.array(leaders, jnp.int32)
  member_group = jnp.array([leaders.index(g) for g in input_groups], jnp.int32)

  def step(state, batch, teacher_variables, hparams):
    take_leaders = lambda x: jnp.take(x, leader_index, axis=0)  # noqa: E731
    leader_batch = jax.tree.map(take_leaders, batch) if member_orders else batch
    # Members step together; one frozen by divergence keeps its old step and
    # discards its update, so the group's step is the furthest one.
    images = jax.vmap(parts.inputs, in_axes=(0, None, 0 if member_orders else None))(
        take_leaders(state.rng), jnp.max(state.step), leader_batch)
    teacher = jax.vmap(parts.teacher_outputs, in_axes=(0, 0 if member_orders else None, None))(
        images, leader_batch, teacher_variables)
    per_member = lambda x: jnp.take(x, member_group, axis=0)  # noqa: E731
    return jax.vmap(parts.update, in_axes=(0, 0 if member_orders else None, 0, 0, 0),
                    axis_name=MEMBER_AXIS)(
        state, batch, jax.tree.map(per_member, images), jax.tree.map(per_member, teacher),
        hparams)

  return step


def make_epoch(train_step: Callable, *, mesh: Mesh, batch_size: int,
               steps_per_epoch: int, num_members: int = 0,
               member_orders: bool = False,
               input_groups: tuple[int, ...] | None = None) -> Callable:
  """Compiles one whole epoch into a single program.

  `epoch(state, data, teacher_variables, hparams, order_rng)` shuffles the
  on-device `data` (a dict of arrays with a leading example axis) with
  `order_rng`, cuts `steps_per_epoch` batches and scans the train step over
  them; batches are sharded over the mesh's `data` axis. Returns the new
  state and per-step metrics (arrays of length `steps_per_epoch`).

  With `num_members` > 0 the state and hparams carry a leading member axis (a
  vectorised sweep). Every member trains on the same batches, or, with
  `member_orders`, on its own order of the examples: `order_rng` then holds
  one key per member (seeds that vary the data order with the init).
  `input_groups`: see `vectorise`.
  """
  batch_sharding = NamedSharding(mesh, P('data'))
  step_fn = train_step
  if num_members:
    step_fn = vectorise(train_step, member_orders=member_orders, input_groups=input_groups)
  if member_orders:
    batch_sharding = NamedSharding(mesh, P(None, 'data'))

  def batches(order_rng, num_examples):
    order = jax.random.permutation(order_rng, num_examples)
    return order[:steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)

  def epoch(state, data, teacher_variables, hparams, order_rng):
    num_examples = jax.tree.leaves(data)[0].shape[0]
    if member_orders:  # [steps, members, batch]
      order = jnp.swapaxes(jax.vmap(batches, in_axes=(0, None))(order_rng, num_examples), 0, 1)
    else:
      order = batches(order_rng, num_examples)

    def body(state, indices):
      batch = jax.tree.map(lambda x: jnp.take(x, indices, axis=0), data)
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      return step_fn(state, batch, teacher_variables, hparams)

    return jax.lax.scan(body, state, order)

  return jax.jit(epoch, donate_argnums=0)


def train_step_flops(train_step: Callable, state, batch, teacher_variables, hparams, *,
                     num_members: int = 0, member_orders: bool = False,
                     input_groups: tuple[int, ...] | None = None) -> float | None:
  """XLA's operation count of one train step (all members of a sweep together).

  Taken from the cost analysis of the step lowered for the CPU (nothing is compiled),
  whatever the default backend, so that convolutions are counted on GPUs too.
  `batch` gives the shapes and dtypes of one batch (`jax.ShapeDtypeStruct`s).
  """
  step_fn = train_step
  if num_members:
    step_fn = vectorise(train_step, member_orders=member_orders, input_groups=input_groups)
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  on_cpu = lambda tree: jax.tree.map(  # noqa: E731
      lambda v: jax.ShapeDtypeStruct(jnp.shape(v), jnp.result_type(v), sharding=cpu), tree)
  return lowered_flops(jax.jit(step_fn).lower(
      *map(on_cpu, (state, batch, teacher_variables, hparams))))


def lowered_flops(lowered) -> float | None:
  """XLA's operation count of a lowered program (a loop's body counted once); None if
  the backend gives none (GPUs count only compiled programs, without the convolutions
  they hand to cuDNN)."""
  cost = lowered.cost_analysis()
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
