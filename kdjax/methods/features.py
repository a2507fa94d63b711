"""Losses between feature maps (NHWC): attention transfer, similarity preserving, NST."""

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.losses import EXACT, safe_norm

_EPS = 1e-12  # torch.nn.functional.normalize's default


def _normalize(x, axis: int = -1, eps: float = _EPS):
  """x / max(||x||, eps) along `axis` (F.normalize; eps = 0: x / ||x||).

  A zero vector maps to 0 with a zero gradient. x / max(||x||, eps) alone has
  the gradient I / eps there (1e12), which a loss comparing the zero vector's
  image with a non-zero one multiplies by a non-zero cotangent.
  """
  norm = safe_norm(x, axis=axis, keepdims=True)
  nonzero = norm > 0
  return jnp.where(nonzero, x / jnp.where(nonzero, jnp.maximum(norm, eps), 1.0), 0.0)


def _pool_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in] averaging weights of torch's adaptive average pooling."""
  weights = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start = (i * size_in) // size_out
    end = -((-(i + 1) * size_in) // size_out)  # ceil
    weights[i, start:end] = 1.0 / (end - start)
  return weights


def adaptive_avg_pool(x, height: int, width: int):
  """torch's `adaptive_avg_pool2d` on NHWC `x`: windows [floor(i·H/h), ceil((i+1)·H/h))."""
  if x.shape[1:3] == (height, width):
    return x
  rows = jnp.asarray(_pool_matrix(x.shape[1], height), x.dtype)
  cols = jnp.asarray(_pool_matrix(x.shape[2], width), x.dtype)
  return jnp.einsum('ih,bhwc,jw->bijc', rows, x, cols, precision=EXACT)


def _same_spatial_size(student, teacher):
  """The larger map average-pooled to the smaller one's size (as RepDistiller does)."""
  (s_h, s_w), (t_h, t_w) = student.shape[1:3], teacher.shape[1:3]
  if s_h > t_h:
    student = adaptive_avg_pool(student, t_h, t_w)
  elif s_h < t_h:
    teacher = adaptive_avg_pool(teacher, s_h, s_w)
  return student, teacher


def attention_map(feature, *, p: float = 2.0):
  """normalize(mean_c |f|^p) over the flattened positions: [B, H·W]."""
  return _normalize(jnp.mean(feature ** p, axis=-1).reshape(feature.shape[0], -1))


def at_loss(student_feature, teacher_feature, *, p: float = 2.0):
  """Attention transfer for one pair of feature maps.

    Q = normalize(mean_c f^p)  (a unit vector over the H·W positions)
    loss = mean_{b, positions} (Q_s - Q_t)^2

  Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017.
  Channels may differ; when the spatial sizes differ, the larger map is
  average-pooled to the smaller. RepDistiller sums this over the tapped
  pairs and weights the sum by 1000.
  """
  student_feature, teacher_feature = _same_spatial_size(student_feature, teacher_feature)
  diff = attention_map(student_feature, p=p) - attention_map(teacher_feature, p=p)
  return jnp.mean(diff ** 2)


def sp_loss(student_feature, teacher_feature):
  """Similarity-preserving KD for one pair of feature maps (any shapes, same batch).

    G = normalize_rows(F F^T), F the batch's flattened features [B, ·]
    loss = ||G_t - G_s||_F^2 / B^2

  Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019.
  """
  batch = student_feature.shape[0]

  def gram(feature):
    flat = feature.reshape(batch, -1)
    return _normalize(jnp.matmul(flat, flat.T, precision=EXACT))

  diff = gram(teacher_feature) - gram(student_feature)
  return jnp.sum(diff * diff) / (batch * batch)


def nst_loss(student_feature, teacher_feature):
  """Neuron selectivity transfer with the degree-2 polynomial kernel, one pair.

  Each channel's map is flattened over positions and L2-normalised; with
  k(a, b) = (a·b)^2 between channels,
    loss = mean k(t, t) + mean k(s, s) - 2 mean k(s, t)
  (the squared MMD between the student's and the teacher's channel sets).
  Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity
  Transfer", 2017. The teacher-only term carries no gradient.
  """
  student_feature, teacher_feature = _same_spatial_size(student_feature, teacher_feature)

  def channels(feature):  # [B, C, H·W], unit rows
    b, h, w, c = feature.shape
    return _normalize(jnp.transpose(feature.reshape(b, h * w, c), (0, 2, 1)))

  s, t = channels(student_feature), channels(teacher_feature)

  def kernel_mean(a, b):
    return jnp.mean(jnp.einsum('bip,bjp->bij', a, b, precision=EXACT) ** 2)

  return jax.lax.stop_gradient(kernel_mean(t, t)) + kernel_mean(s, s) - 2 * kernel_mean(s, t)
