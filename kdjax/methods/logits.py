"""Losses between logits beyond Hinton's KD: decoupled KD, DIST."""

import jax
import jax.numpy as jnp

from kdjax import losses

_MASK = 1000.0  # subtracted from the target logit to leave it out of a softmax


def dkd_loss(student_logits, teacher_logits, labels, *, alpha: float = 1.0, beta: float = 8.0,
             temperature: float = 4.0, standardize_logits: bool = False):
  """Decoupled knowledge distillation.

    b = (p_target, 1 - p_target) at temperature T        (binary: target vs the rest)
    p̂ = softmax over the non-target classes at T
    TCKD = KL(b_t || b_s) · T²,  NCKD = KL(p̂_t || p̂_s) · T²   (each averaged over the batch)
    loss = alpha · TCKD + beta · NCKD

  Zhao et al., "Decoupled Knowledge Distillation", CVPR 2022 (mdistiller's
  CIFAR defaults: alpha 1, beta 8, T 4). The reference multiplies this by a
  linear warm-up factor min(epoch / 20, 1), which the training step applies,
  not this function. The teacher's side carries no gradient.
  `standardize_logits` z-scores both sides' logits first (`kdjax.losses.
  standardize`), as the authors of logit standardisation do for DKD
  (sunshangquan/logit-standardization-KD, mdistiller/distillers/DKD.py).
  """
  if standardize_logits:
    student_logits = losses.standardize(student_logits)
    teacher_logits = losses.standardize(teacher_logits)
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


def pearson_correlation(a, b, *, axis: int, eps: float = 1e-8):
  """Pearson correlation along `axis`, as DIST's authors compute it:

    r = <ā, b̄> / (‖ā‖ ‖b̄‖ + eps),   x̄ = x − mean(x) along `axis`

  (their own cosine, eps added to the product of the norms, not torch's
  `cosine_similarity`). Where either centred vector is 0, r = 0 as theirs, with
  a zero gradient (theirs is b̄ / eps there).
  """
  a, b = losses.centred(a, axis=axis), losses.centred(b, axis=axis)
  norm_a, norm_b = losses.safe_norm(a, axis=axis), losses.safe_norm(b, axis=axis)
  r = jnp.sum(a * b, axis=axis) / (norm_a * norm_b + eps)
  return jnp.where((norm_a > 0) & (norm_b > 0), r, 0.0)


def dist_loss(student_logits, teacher_logits, *, beta: float = 1.0, gamma: float = 1.0,
              temperature: float = 1.0):
  """DIST: the student matches the teacher's relations, not its probabilities.

  With Y = softmax(z / T) of each network ([B, K]) and r Pearson's correlation
  (`pearson_correlation`):
    inter = 1 − mean_b r(Y_s[b, :], Y_t[b, :])    (each example, across classes)
    intra = 1 − mean_k r(Y_s[:, k], Y_t[:, k])    (each class, across the batch)
    loss  = T² · (beta · inter + gamma · intra)

  Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger
  Teacher", NeurIPS 2022; the authors' `DIST` (hunto/image_classification_sota,
  lib/models/losses/dist_kd.py) has beta = gamma = 1 and tau = 1, and its
  configs weigh the loss by 2 beside cross-entropy 1, with tau = 4 on CIFAR-100
  (`kd: dist_t4`, configs/strategies/distill/dist_cifar.yaml) and 1 on ImageNet
  (resnet_dist.yaml). The teacher's side carries no gradient; the intra-class
  term couples the batch's examples, so the loss is one scalar for the batch.
  Logit standardisation (`distill.standardize`) does not apply to it.
  """
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  y_s = jax.nn.softmax(student_logits / temperature, axis=-1)
  y_t = jax.nn.softmax(teacher_logits / temperature, axis=-1)
  inter = 1.0 - jnp.mean(pearson_correlation(y_s, y_t, axis=1))
  intra = 1.0 - jnp.mean(pearson_correlation(y_s, y_t, axis=0))
  return temperature ** 2 * (beta * inter + gamma * intra)
