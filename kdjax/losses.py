"""Pure loss functions for training and distillation.

Every function takes arrays and keyword-only hyper-parameters, holds no
state, and works under `jax.jit`, `jax.grad` and `jax.vmap` (hyper-parameters
may be traced scalars, so one compiled program serves a whole sweep).
Temperature math is done with `jax.nn.log_softmax`, so values stay finite for
any temperature > 0 and logits of any magnitude a float32 can hold.
"""

import jax
import jax.numpy as jnp

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


def soft_target_loss(student_logits, teacher_logits, *, temperature, kind='kl'):
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
    temperature: T > 0, a Python float or a traced scalar.
    kind: one of SOFT_LOSS_KINDS, or an integer index into it (may be traced,
      e.g. one kind per member of a vectorised sweep).

  Returns:
    [...] per-example losses.
  """
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
  log_q = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  log_p = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
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
                      alpha, kind='kl'):
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

  Returns:
    A scalar.
  """
  soft = soft_target_loss(student_logits, teacher_logits,
                          temperature=temperature, kind=kind)
  hard = cross_entropy(student_logits, labels)
  return jnp.mean(alpha * soft + (1.0 - alpha) * hard)
