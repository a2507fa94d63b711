"""Losses between logits beyond Hinton's KD: decoupled KD."""

import jax
import jax.numpy as jnp

_MASK = 1000.0  # subtracted from the target logit to leave it out of a softmax


def dkd_loss(student_logits, teacher_logits, labels, *, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0):
  """Decoupled knowledge distillation.

    b = (p_target, 1 - p_target) at temperature T        (binary: target vs the rest)
    p̂ = softmax over the non-target classes at T
    TCKD = KL(b_t || b_s) · T²,  NCKD = KL(p̂_t || p̂_s) · T²   (each averaged over the batch)
    loss = alpha · TCKD + beta · NCKD

  Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (mdistiller's
  CIFAR defaults: alpha 1, beta 8, T 4). The reference multiplies this by a
  linear warm-up factor min(epoch / 20, 1), which the training step applies,
  not this function. The teacher's side carries no gradient.
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  target = jax.nn.one_hot(labels, student_logits.shape[-1], dtype=student_logits.dtype)
  s, t = student_logits / temperature, teacher_logits / temperature
  p_s, p_t = jax.nn.softmax(s, axis=-1), jax.nn.softmax(t, axis=-1)

  def binary(p):
    p_target = jnp.sum(p * target, axis=-1)
    return jnp.stack([p_target, jnp.sum(p * (1.0 - target), axis=-1)], axis=-1)

  b_s, b_t = binary(p_s), binary(p_t)
  tckd = jnp.sum(jax.scipy.special.xlogy(b_t, b_t) - b_t * jnp.log(b_s), axis=-1)
  log_rest_s = jax.nn.log_softmax(s - _MASK * target, axis=-1)
  rest_t = jax.nn.softmax(t - _MASK * target, axis=-1)
  nckd = jnp.sum(jax.scipy.special.xlogy(rest_t, rest_t) - rest_t * log_rest_s, axis=-1)
  scale = temperature ** 2
  return alpha * scale * jnp.mean(tckd) + beta * scale * jnp.mean(nckd)
