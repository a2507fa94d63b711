"""Losses between the relations of a batch's embeddings: PKT and RKD."""

import jax
import jax.numpy as jnp

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
    norm = jnp.sqrt(jnp.sum(embedding ** 2, axis=1, keepdims=True))
    unit = embedding / (norm + eps)
    similarity = (unit @ unit.T + 1.0) / 2.0
    return similarity / jnp.sum(similarity, axis=1, keepdims=True)

  p, q = conditional(student_embedding), conditional(teacher_embedding)
  return jnp.mean(q * jnp.log((q + eps) / (p + eps)))


def _pairwise_distances(embedding, eps: float = 1e-12):
  """Euclidean distances [B, B], each squared distance clamped to eps, diagonal 0."""
  squared = jnp.sum(embedding ** 2, axis=1)
  d2 = squared[:, None] + squared[None, :] - 2.0 * embedding @ embedding.T
  d = jnp.sqrt(jnp.maximum(d2, eps))
  return jnp.where(jnp.eye(embedding.shape[0], dtype=bool), 0.0, d)


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
  Park et al., "Relational Knowledge Distillation", CVPR 2019. The teacher's
  side carries no gradient; gradients stay finite when two embeddings
  coincide (distances are clamped, zero differences normalise to zero).
  """
  student = student_embedding.reshape(student_embedding.shape[0], -1)
  teacher = jax.lax.stop_gradient(teacher_embedding.reshape(teacher_embedding.shape[0], -1))

  def scaled_distances(embedding):
    d = _pairwise_distances(embedding)
    positive = d > 0
    return d / (jnp.sum(jnp.where(positive, d, 0.0)) / jnp.sum(positive))

  def angles(embedding):
    differences = _normalize(embedding[None, :, :] - embedding[:, None, :], axis=2)
    return jnp.einsum('ijd,ikd->ijk', differences, differences).reshape(-1)

  distance = _smooth_l1(scaled_distances(student), scaled_distances(teacher))
  angle = _smooth_l1(angles(student), angles(teacher))
  return distance_weight * distance + angle_weight * angle
