"""Pure loss functions for training and distillation.

Every function takes arrays and keyword-only hyper-parameters, holds no
state, and works under `jax.jit`, `jax.grad` and `jax.vmap` (hyper-parameters
may be traced scalars, so one compiled program serves a whole sweep).
Temperature math is done with `jax.nn.log_softmax`, so values stay finite for
any temperature > 0 and logits of any magnitude a float32 can hold.
"""

import jax
import jax.numpy as jnp
import numpy as np

SOFT_LOSS_KINDS = ('kl', 'soft_ce', 'mse_logits', 'mse_probs', 'cosine')


def cross_entropy(logits, labels):
  """Per-example cross-entropy with integer labels.

  loss_i = −log softmax(logits_i)[labels_i]

  Args:
    logits: [..., K] unnormalised scores.
    labels: [...] integer class indices in [0, K).

  Returns:
    [...] per-example losses.
  """
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


# The precision of the contractions inside the losses (Gram matrices, similarity and
# pooling products): full float32 on every backend. Accelerators otherwise run float32
# matrix products in TF32 (10 mantissa bits), about 1e-3 relative error, where the
# authors' PyTorch code computes its losses' products in full float32.
EXACT = jax.lax.Precision.HIGHEST


def safe_norm(x, *, axis=-1, keepdims: bool = False):
  """‖x‖₂ along `axis`, whose gradient is 0 (not NaN) where x = 0.

  The square root's derivative is infinite at 0, so the root is taken of
  where(x ≠ 0, Σx², 1) and the result replaced by 0 where x = 0: both
  branches of every `where` stay finite, and no cotangent meets an infinity.
  """
  squared = jnp.sum(x * x, axis=axis, keepdims=True)
  nonzero = squared > 0
  norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squared, 1.0)), 0.0)
  return norm if keepdims else jnp.squeeze(norm, axis)


def centred(x, *, axis=-1):
  """x − mean(x) along `axis`, exactly 0 where x is constant along it.

  The first entry is subtracted before the mean (which changes nothing in exact
  arithmetic), so a constant vector centres to exact zeros instead of rounding
  residue, and the zero tests of `safe_norm`, `standardize` and DIST see it.
  """
  shifted = x - jax.lax.slice_in_dim(x, 0, 1, axis=axis % x.ndim)
  return shifted - jnp.mean(shifted, axis=axis, keepdims=True)


def standardize(logits, *, eps: float = 1e-7):
  """Logit standardisation (a z-score over the classes), per example.

    standardize(z) = (z − mean_k z) / (eps + std_k z),   std with Bessel's correction

  Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024;
  as the authors' `normalize` (sunshangquan/logit-standardization-KD,
  mdistiller/distillers/KD.py): torch's `std` is the unbiased one (K − 1 in
  the denominator) and eps = 1e-7 is added to it. The result is invariant to
  adding a constant to the logits and to scaling them by a positive factor
  (up to eps). Where an example's logits are all equal the result is 0, as
  the authors', but with a zero gradient there (theirs is 1/eps = 1e7 times
  the centring projection).

  Args:
    logits: [..., K], K ≥ 2.
    eps: added to the standard deviation.

  Returns:
    [..., K] standardised logits.
  """
  deviation = centred(logits, axis=-1)
  std = safe_norm(deviation, axis=-1, keepdims=True) / np.sqrt(logits.shape[-1] - 1)
  return jnp.where(std > 0, deviation / (eps + std), 0.0)


def soft_target_loss(student_logits, teacher_logits, *, temperature, kind='kl',
                     standardize_logits: bool = False):
  """Per-example soft-target loss at `temperature`, multiplied by T².

  With p = softmax(t/T) (teacher) and q = softmax(s/T) (student), K classes:

    kl          T² · Σ_k p_k (log p_k − log q_k)          = T² · KL(p ‖ q)
    soft_ce     T² · −Σ_k p_k log q_k                     (KL plus the teacher's entropy)
    mse_logits  T² · (1/2K) Σ_k ((s_k − t_k)/T)²          = (1/2K) Σ_k (s_k − t_k)²
    mse_probs   T² · (1/K) Σ_k (q_k − p_k)²
    cosine      T² · (1 − p·q / (‖p‖ ‖q‖))                (cosine-embedding distance)

  The T² factor (Hinton et al. 2015, §2) keeps the gradient magnitude of the
  soft term roughly independent of T: ∂kl/∂s = T · (q − p). `mse_logits` is
  the high-temperature limit of `kl` for zero-mean logits (Hinton §2.1), so
  it carries no temperature at all.

  Args:
    student_logits: [..., K] student scores (gradients flow through these).
    teacher_logits: [..., K] teacher scores (treated as constants).
    temperature: T > 0, a Python float or a traced scalar, or one per example
      (shaped like the result, [...]: a learned per-example temperature).
    kind: one of SOFT_LOSS_KINDS, or an integer index into it (may be traced,
      e.g. one kind per member of a vectorised sweep).
    standardize_logits: replace both networks' logits by `standardize(·)` first
      (logit standardisation, Sun et al. 2024; `config.distill.standardize`).

  Returns:
    [...] per-example losses.
  """
  if standardize_logits:
    student_logits, teacher_logits = standardize(student_logits), standardize(teacher_logits)
  if not isinstance(kind, str):
    branches = [
        lambda s, t, temp, k=k: soft_target_loss(s, t, temperature=temp, kind=k)
        for k in SOFT_LOSS_KINDS]
    index = jnp.clip(jnp.asarray(kind, jnp.int32), 0, len(SOFT_LOSS_KINDS) - 1)
    return jax.lax.switch(index, branches, student_logits, teacher_logits,
                          jnp.asarray(temperature, jnp.float32))
  teacher_logits = jax.lax.stop_gradient(teacher_logits)
  t2 = temperature**2
  if kind == 'mse_logits':
    diff = student_logits - teacher_logits
    return 0.5 * jnp.mean(diff * diff, axis=-1)
  divisor = temperature[..., None] if jnp.ndim(temperature) else temperature
  log_q = jax.nn.log_softmax(student_logits / divisor, axis=-1)
  log_p = jax.nn.log_softmax(teacher_logits / divisor, axis=-1)
  p = jnp.exp(log_p)
  if kind == 'kl':
    # Where p underflows to 0, log_p is finite (log space), so p·(log p − log q) is 0·finite.
    return t2 * jnp.sum(p * (log_p - log_q), axis=-1)
  if kind == 'soft_ce':
    return t2 * -jnp.sum(p * log_q, axis=-1)
  q = jnp.exp(log_q)
  if kind == 'mse_probs':
    return t2 * jnp.mean(jnp.square(q - p), axis=-1)
  if kind == 'cosine':
    # Softmax outputs are non-negative with ‖·‖ ≥ 1/√K, so the norms never vanish.
    cos = jnp.sum(p * q, axis=-1) / (
        jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(q, axis=-1))
    return t2 * (1.0 - cos)
  raise ValueError(f'unknown soft loss kind {kind!r}; known: {SOFT_LOSS_KINDS}')


def distillation_loss(student_logits, teacher_logits, labels, *, temperature,
                      alpha, kind='kl', standardize_logits: bool = False):
  """Batch mean of α · soft_target_loss + (1 − α) · cross_entropy.

  L = mean_i [ α · T² · soft(s_i/T, t_i/T) + (1 − α) · CE(s_i, y_i) ]

  This is eq. 3 of the reimplementation report (seed 001) and the loss of
  seed 003; seed 004's "distillation weight" w_d and "CE weight" w_ce with
  w_d + w_ce = 1 are α = w_d. α = 1 trains on soft targets alone (Hinton's
  distilled MNIST net); α = 0 is plain supervised training.

  Args:
    student_logits: [B, K].
    teacher_logits: [B, K].
    labels: [B] integer labels.
    temperature: T > 0.
    alpha: weight of the soft term, in [0, 1].
    kind: soft loss kind (name or index), see `soft_target_loss`.
    standardize_logits: standardise the logits of the soft term (not of the
      cross-entropy), as the authors of logit standardisation do.

  Returns:
    A scalar.
  """
  soft = soft_target_loss(student_logits, teacher_logits, temperature=temperature, kind=kind,
                          standardize_logits=standardize_logits)
  hard = cross_entropy(student_logits, labels)
  return jnp.mean(alpha * soft + (1.0 - alpha) * hard)
