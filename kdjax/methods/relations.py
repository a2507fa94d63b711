"""Losses between the relations of a batch's embeddings: PKT and RKD."""

import jax
import jax.numpy as jnp

from kdjax.losses import EXACT, safe_norm
from kdjax.methods.features import _normalize


def pkt_loss(student_embedding, teacher_embedding, *, eps: float = 1e-7):
  """Probabilistic knowledge transfer.

  Embeddings are scaled to unit length (x / (||x|| + eps)), their cosine
  similarities mapped to [0, 1] by (c + 1) / 2 and each row normalised into a
  conditional distribution P (student) and Q (teacher) over the batch;
    loss = mean_{i, j} Q_ij · log((Q_ij + eps) / (P_ij + eps)).
  Passalis & Tefas, "Learning Deep Representations with Probabilistic
  Knowledge Transfer", ECCV 2018. RepDistiller weights it by 30000.
  """

  def conditional(embedding):
    embedding = embedding.reshape(embedding.shape[0], -1)
    norm = safe_norm(embedding, axis=1, keepdims=True)
    # A zero embedding: 0 (as x / (0 + eps)), with a zero gradient instead of I / eps.
    unit = jnp.where(norm > 0, embedding / (norm + eps), 0.0)
    similarity = (jnp.matmul(unit, unit.T, precision=EXACT) + 1.0) / 2.0
    return similarity / jnp.sum(similarity, axis=1, keepdims=True)

  p, q = conditional(student_embedding), conditional(teacher_embedding)
  return jnp.mean(q * jnp.log((q + eps) / (p + eps)))


def _pairwise_distances(embedding):
  """Euclidean distances [B, B], ||e_i − e_j|| from the differences; 0 (with a zero
  gradient) where two embeddings coincide, the diagonal included.

  RepDistiller expands ||e_i||² + ||e_j||² − 2 e_i·e_j, clamps it to 1e-12 and
  takes the root: coincident pairs get 1e-6 instead of 0, and the root's
  derivative at the clamp is 1 / (2 · 1e-6).
  """
  return safe_norm(embedding[:, None, :] - embedding[None, :, :], axis=2)


def _smooth_l1(x, y):
  """torch's smooth_l1_loss (beta 1, mean)."""
  diff = jnp.abs(x - y)
  return jnp.mean(jnp.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5))


def rkd_loss(student_embedding, teacher_embedding, *, distance_weight: float = 25.0,
             angle_weight: float = 50.0):
  """Relational KD: distance-wise plus angle-wise potentials.

    distance: d_ij / mean_{d > 0} d, compared by smooth L1
    angle:    cos of the angle at j between i and k,
              <normalize(e_i - e_j), normalize(e_k - e_j)>, compared by smooth L1
    loss = distance_weight · L_distance + angle_weight · L_angle
  Park et al., "Relational Knowledge Distillation", CVPR 2019. The mean is
  over the B(B − 1) pairs i ≠ j (RepDistiller's d[d > 0], which its clamp makes
  every such pair). The teacher's side carries no gradient. Where two student
  embeddings coincide (a duplicated image, two all-zero ReLU vectors) their
  distance and their difference's direction are 0 with zero gradients, so the
  gradient stays of the order of the loss's elsewhere; where all coincide, the
  scaled distances are 0.
  """
  student = student_embedding.reshape(student_embedding.shape[0], -1)
  teacher = jax.lax.stop_gradient(teacher_embedding.reshape(teacher_embedding.shape[0], -1))
  pairs = max(student.shape[0] * (student.shape[0] - 1), 1)

  def scaled_distances(embedding):
    d = _pairwise_distances(embedding)
    mean = jnp.sum(d) / pairs
    return d / jnp.where(mean > 0, mean, 1.0)

  def angles(embedding):
    differences = _normalize(embedding[None, :, :] - embedding[:, None, :], axis=2)
    return jnp.einsum('ijd,ikd->ijk', differences, differences, precision=EXACT).reshape(-1)

  distance = _smooth_l1(scaled_distances(student), scaled_distances(teacher))
  angle = _smooth_l1(angles(student), angles(teacher))
  return distance_weight * distance + angle_weight * angle
