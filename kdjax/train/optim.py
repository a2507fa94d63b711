"""optax optimizers, learning-rate schedules and weight constraints from a config."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(c: ml_collections.ConfigDict, steps_per_epoch: int):
  """Learning rate as a function of the step, from `config.schedule`.

  exponential: lr · decay_rate^epoch, applied once per epoch (seed 001: 0.95).
  step: lr · step_factor^(number of `boundaries` epochs passed).
  cosine: lr · ½(1 + cos(π · progress)) over the whole run.
  Each may start with `warmup_epochs` of linear warm-up from 0.
  """
  lr = c.optimizer.learning_rate
  s = c.schedule
  warmup_steps = int(s.warmup_epochs * steps_per_epoch)
  total_steps = c.num_epochs * steps_per_epoch
  if s.name == 'constant':
    main = optax.constant_schedule(lr)
  elif s.name == 'exponential':
    main = optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                   decay_rate=s.decay_rate, staircase=True)
  elif s.name == 'step':
    main = optax.piecewise_constant_schedule(
        lr, {int(e * steps_per_epoch) - warmup_steps: s.step_factor for e in s.boundaries})
  elif s.name == 'cosine':
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup_steps, 1))
  else:
    raise ValueError(s.name)
  if warmup_steps == 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup_steps), main], [warmup_steps])


def optimizer(c: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
  """The optax transformation described by `config.optimizer` and `config.schedule`."""
  o = c.optimizer
  lr = learning_rate_schedule(c, steps_per_epoch)
  if o.name == 'dot':
    return dot(lr, momentum=o.momentum, delta=o.dot_delta, weight_decay=o.weight_decay,
               kd_only=objective_leaves)
  chain = []
  if o.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if o.name == 'adamw':
    chain.append(optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay))
    return optax.chain(*chain)
  if o.weight_decay > 0:
    # Coupled L2 (PyTorch's weight_decay for SGD and Adam): decay enters the gradient.
    chain.append(optax.add_decayed_weights(o.weight_decay))
  if o.name == 'sgd':
    chain.append(optax.sgd(lr, momentum=o.momentum or None, nesterov=o.nesterov))
  elif o.name == 'adam':
    chain.append(optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps))
  else:
    raise ValueError(o.name)
  return optax.chain(*chain)


class SplitGradientTransformation(optax.GradientTransformation):
  """A transformation that takes its gradient in two parts, `{'task': g, 'kd': g}`.

  The train step sees the type and gives it the gradient of the objective's task
  (label) term and that of the rest, its distillation terms, separately
  (`kdjax.objectives.TASK`); `update` returns updates shaped like the params.
  """


class DotState(NamedTuple):
  """DOT's two momentum buffers, each shaped like the params."""
  task: Any
  kd: Any


def scale_by_dot(*, momentum: float, delta: float, weight_decay: float = 0.0,
                 kd_only: Any = None) -> optax.GradientTransformation:
  """DOT's momentum directions, from gradients `{'task': g_t, 'kd': g_k}` (lr not applied).

  With μ = `momentum`, Δ = `delta`, λ = `weight_decay`, for a leaf w that both
  terms train:
    b_task ← (μ − Δ) b_task + g_t + λ w
    b_kd   ← (μ + Δ) b_kd + g_k
    direction = b_task + b_kd
  and for a leaf of `kd_only` (a pytree of bools, or a function of the params
  giving one; parts that only the distillation term trains) one buffer at μ:
    b_kd ← μ b_kd + g_k + g_t + λ w,  b_task = 0.
  Buffers start at 0, so the first step's buffers are the gradients themselves
  (PyTorch's SGD, the authors' `momentum_buffer`).
  """

  def init(params):
    zeros = jax.tree.map(jnp.zeros_like, params)
    return DotState(task=zeros, kd=zeros)

  def update(grads, state, params=None):
    if weight_decay and params is None:
      raise ValueError('scale_by_dot with weight_decay needs the params')
    mask = kd_only(params) if callable(kd_only) else kd_only
    if mask is None:
      mask = jax.tree.map(lambda _: False, state.task)
    decay = (jax.tree.map(lambda w: weight_decay * w, params) if weight_decay
             else jax.tree.map(jnp.zeros_like, state.task))
    task = jax.tree.map(
        lambda single, b, g, d: jnp.zeros_like(b) if single else (momentum - delta) * b + g + d,
        mask, state.task, grads['task'], decay)
    kd = jax.tree.map(
        lambda single, b, g_k, g_t, d: (momentum * b + g_k + g_t + d if single
                                        else (momentum + delta) * b + g_k),
        mask, state.kd, grads['kd'], grads['task'], decay)
    return jax.tree.map(jnp.add, task, kd), DotState(task=task, kd=kd)

  return optax.GradientTransformation(init, update)


def dot(learning_rate, *, momentum: float = 0.9, delta: float = 0.075,
        weight_decay: float = 0.0, kd_only: Any = None) -> SplitGradientTransformation:
  """Zhao et al.'s Distillation-Oriented Trainer: SGD whose task and distillation gradients
  keep separate momenta, μ − Δ and μ + Δ.

    w ← w − lr · (b_task + b_kd)     (buffers: `scale_by_dot`)

  Zhao, Song & Xie, "DOT: A Distillation-Oriented Trainer", ICCV 2023; the authors'
  `DistillationOrientedTrainer` (megvii-research/mdistiller, mdistiller/engine/dot.py and
  the `DOT` trainer in engine/trainer.py: μ = 0.9, Δ = 0.075, coupled weight decay on the
  task gradient). With Δ = 0 it is SGD with momentum μ on g_task + g_kd.
  `learning_rate`: a number or an optax schedule.
  """
  tx = optax.chain(scale_by_dot(momentum=momentum, delta=delta, weight_decay=weight_decay,
                                kd_only=kd_only),
                   optax.scale_by_learning_rate(learning_rate))
  return SplitGradientTransformation(tx.init, tx.update)


def objective_leaves(params) -> Any:
  """True on the leaves of the objective's own parts (`{'student', 'objective'}` trainables:
  only the distillation term trains them), False elsewhere."""
  if isinstance(params, dict) and set(params) == {'student', 'objective'}:
    return {'student': jax.tree.map(lambda _: False, params['student']),
            'objective': jax.tree.map(lambda _: True, params['objective'])}
  return jax.tree.map(lambda _: False, params)


def max_norm(params, limit: float):
  """Rescales each unit's incoming weights to an L2 norm of at most `limit`.

  Applies to every 2-D `kernel` (Dense: [inputs, units], norm over inputs)
  and 4-D conv kernel ([h, w, in, out], norm over h, w, in) — the max-norm
  constraint of Srivastava et al. (2014) used by Hinton's MNIST teacher.
  Biases and BatchNorm scales are left alone.
  """

  def clip(path, leaf):
    if getattr(path[-1], 'key', None) != 'kernel' or leaf.ndim < 2:
      return leaf
    axes = tuple(range(leaf.ndim - 1))
    norms = jnp.sqrt(jnp.sum(jnp.square(leaf), axis=axes, keepdims=True))
    return leaf * jnp.minimum(1.0, limit / jnp.maximum(norms, 1e-12))

  return jax.tree_util.tree_map_with_path(clip, params)
