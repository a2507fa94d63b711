"""optax optimizers, learning-rate schedules and weight constraints from a config."""

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
