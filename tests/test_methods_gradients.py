"""Gradients of the methods' losses where a vector they normalise, a distance they take or a
deviation they divide by is exactly zero: two coincident embeddings, an all-zero feature
vector, an example whose logits are all equal. Each loss's gradient there is finite and
of the order of its gradient elsewhere, in float32 and float64, while its value away from
those points is the one of the formula it had before (transcribed below as `_old_*`),
whose gradient at the same inputs is 1e10 and more, or NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses, methods
from kdjax.methods import trained

BOUND = 1e3  # unit-scale inputs: every bounded gradient below is under 10
DTYPES = ('float32', 'float64')


def _rng(seed):
  return np.random.default_rng(seed)


def _grad_norm(loss, *args):
  # Compiled: one program, not one per operation (many times faster on the CPU).
  grads = jax.tree.leaves(jax.jit(jax.grad(loss))(*args))
  return float(np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads)))


# ---- the formulas as they were (and as the references write them) ----------------------

def _old_normalize(x, axis=-1):
  return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), 1e-24))


def _old_rkd(student, teacher, distance_weight=25.0, angle_weight=50.0):
  def distances(e):
    squared = jnp.sum(e ** 2, axis=1)
    d = jnp.sqrt(jnp.maximum(squared[:, None] + squared[None, :] - 2.0 * e @ e.T, 1e-12))
    d = jnp.where(jnp.eye(e.shape[0], dtype=bool), 0.0, d)
    return d / (jnp.sum(jnp.where(d > 0, d, 0.0)) / jnp.sum(d > 0))

  def angles(e):
    u = _old_normalize(e[None, :, :] - e[:, None, :], axis=2)
    return jnp.einsum('ijd,ikd->ijk', u, u).reshape(-1)

  def smooth_l1(x, y):
    diff = jnp.abs(x - y)
    return jnp.mean(jnp.where(diff < 1.0, 0.5 * diff ** 2, diff - 0.5))

  teacher = jax.lax.stop_gradient(teacher)
  return (distance_weight * smooth_l1(distances(student), distances(teacher))
          + angle_weight * smooth_l1(angles(student), angles(teacher)))


def _old_pkt(student, teacher, eps=1e-7):
  def conditional(e):
    unit = e / (jnp.sqrt(jnp.sum(e ** 2, axis=1, keepdims=True)) + eps)
    similarity = (unit @ unit.T + 1.0) / 2.0
    return similarity / jnp.sum(similarity, axis=1, keepdims=True)

  p, q = conditional(student), conditional(teacher)
  return jnp.mean(q * jnp.log((q + eps) / (p + eps)))


def _old_sp(student, teacher):
  b = student.shape[0]
  gram = lambda f: _old_normalize(f.reshape(b, -1) @ f.reshape(b, -1).T)  # noqa: E731
  return jnp.sum((gram(teacher) - gram(student)) ** 2) / b ** 2


def _old_attention(f, p):
  return _old_normalize(jnp.mean(f ** p, axis=-1).reshape(f.shape[0], -1))


def _old_at(student, teacher, p=2.0):
  return jnp.mean((_old_attention(student, p) - _old_attention(teacher, p)) ** 2)


def _old_ft(student, teacher, p=2.0):
  return jnp.mean(jnp.abs(_old_attention(student, p) - _old_attention(teacher, p)))


def _old_nst(student, teacher):
  def channels(f):
    b, h, w, c = f.shape
    return _old_normalize(jnp.transpose(f.reshape(b, h * w, c), (0, 2, 1)))

  s, t = channels(student), channels(teacher)
  kernel = lambda a, b: jnp.mean(jnp.einsum('bip,bjp->bij', a, b) ** 2)  # noqa: E731
  return jax.lax.stop_gradient(kernel(t, t)) + kernel(s, s) - 2 * kernel(s, t)


def _old_embed_unit(x):
  return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))


def _authors_dist(student_logits, teacher_logits, temperature=4.0):
  """DIST as its authors' torch code writes it (mean-centred, eps on the norms' product)."""
  def pearson(a, b, axis):
    a = a - jnp.mean(a, axis=axis, keepdims=True)
    b = b - jnp.mean(b, axis=axis, keepdims=True)
    return jnp.sum(a * b, axis=axis) / (
        jnp.linalg.norm(a, axis=axis) * jnp.linalg.norm(b, axis=axis) + 1e-8)

  y_s = jax.nn.softmax(student_logits / temperature, axis=-1)
  y_t = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits) / temperature, axis=-1)
  return temperature ** 2 * ((1 - jnp.mean(pearson(y_s, y_t, 1)))
                             + (1 - jnp.mean(pearson(y_s, y_t, 0))))


def _authors_standardize(z):
  return (z - jnp.mean(z, -1, keepdims=True)) / (1e-7 + jnp.std(z, -1, keepdims=True, ddof=1))


def _authors_ls_kd(student_logits, teacher_logits, temperature=2.0):
  return jnp.mean(losses.soft_target_loss(_authors_standardize(student_logits),
                                          _authors_standardize(teacher_logits),
                                          temperature=temperature))


def _ls_kd(student_logits, teacher_logits, temperature=2.0):
  return jnp.mean(losses.soft_target_loss(student_logits, teacher_logits,
                                          temperature=temperature, standardize_logits=True))


# ---- the cases: (new loss, old loss, singular student, teacher, generic student) --------

def _embeddings():
  rng = _rng(0)
  generic, teacher = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  coincident = generic.copy()
  coincident[3] = coincident[1]  # a duplicated image
  zeros = generic.copy()
  zeros[2] = zeros[4] = 0.0  # two all-zero ReLU vectors
  return generic, teacher, coincident, zeros


def _maps(channels=3):
  rng = _rng(1)
  generic, teacher = rng.normal(size=(3, 4, 4, channels)), rng.normal(size=(3, 4, 4, 5))
  zero_example = generic.copy()
  zero_example[1] = 0.0  # one example whose every activation is 0
  zero_channel = generic.copy()
  zero_channel[..., 1] = 0.0  # a dead channel
  return generic, teacher, zero_example, zero_channel


def _logits():
  rng = _rng(2)
  generic, teacher = rng.normal(size=(4, 5)) * 3, rng.normal(size=(4, 5)) * 3
  uniform_row = generic.copy()
  uniform_row[1] = 0.7  # an example whose logits are all equal
  same_rows = np.tile(generic[:1], (4, 1))  # every example's logits the same
  return generic, teacher, uniform_row, same_rows


def _cases():
  generic, teacher, coincident, zeros = _embeddings()
  maps, map_teacher, zero_example, zero_channel = _maps()
  logits, logit_teacher, uniform_row, same_rows = _logits()
  dist = lambda s, t: methods.dist_loss(s, t, temperature=4.0)  # noqa: E731
  # name: (loss, old loss, singular student, teacher, generic student, old gradient unbounded)
  return {
      'rkd coincident pair': (methods.rkd_loss, _old_rkd, coincident, teacher, generic, True),
      'rkd two zero rows': (methods.rkd_loss, _old_rkd, zeros, teacher, generic, True),
      'rkd distance only': (lambda s, t: methods.rkd_loss(s, t, angle_weight=0.0),
                            lambda s, t: _old_rkd(s, t, angle_weight=0.0), zeros, teacher,
                            generic, False),
      'pkt zero rows': (methods.pkt_loss, _old_pkt, zeros, teacher, generic, True),
      'sp zero example': (methods.sp_loss, _old_sp, zero_example, map_teacher, maps, True),
      'at zero example': (methods.at_loss, _old_at, zero_example, map_teacher, maps, False),
      'at p=1 zero example': (lambda s, t: methods.at_loss(s, t, p=1.0),
                              lambda s, t: _old_at(s, t, p=1.0), zero_example, map_teacher,
                              maps, True),
      'nst dead channel': (methods.nst_loss, _old_nst, zero_channel, map_teacher, maps, False),
      'ft p=1 zero example': (lambda s, t: trained.ft_factor_loss(s, t, p=1.0),
                              lambda s, t: _old_ft(s, t, p=1.0), zero_example, map_teacher,
                              maps, True),
      'dist uniform row': (dist, _authors_dist, uniform_row, logit_teacher, logits, True),
      'dist identical rows': (dist, _authors_dist, same_rows, logit_teacher, logits, True),
      'standardized kd uniform row': (_ls_kd, _authors_ls_kd, uniform_row, logit_teacher,
                                      logits, True),
  }


CASES = _cases()


def _run(dtype, fn):
  with jax.enable_x64(dtype == 'float64'):
    return fn(getattr(jnp, dtype))


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', sorted(CASES))
def test_gradient_is_bounded_where_a_vector_vanishes(name, dtype):
  loss, old, singular, teacher, _, old_unbounded = CASES[name]

  def check(dt):
    s, t = jnp.asarray(singular, dt), jnp.asarray(teacher, dt)
    value = jax.jit(loss)(s, t)
    assert value.dtype == dt and np.isfinite(float(value))
    norm = _grad_norm(loss, s, t)
    assert np.isfinite(norm) and norm < BOUND, (name, dtype, norm)
    if old_unbounded:  # the inputs do reach the singular point of the former formula
      before = _grad_norm(old, s, t)
      assert not np.isfinite(before) or before > 1e6, (name, dtype, before)

  _run(dtype, check)


@pytest.mark.parametrize('dtype', DTYPES)
@pytest.mark.parametrize('name', sorted(CASES))
def test_value_and_gradient_away_from_the_singular_point_are_unchanged(name, dtype):
  loss, old, _, teacher, generic, _ = CASES[name]
  rtol = 1e-5 if dtype == 'float32' else 1e-9

  def check(dt):
    s, t = jnp.asarray(generic, dt), jnp.asarray(teacher, dt)
    value, grad = jax.jit(jax.value_and_grad(loss))(s, t)
    old_value, old_grad = jax.jit(jax.value_and_grad(old))(s, t)
    np.testing.assert_allclose(float(value), float(old_value), rtol=rtol)
    np.testing.assert_allclose(grad, old_grad, rtol=100 * rtol,
                               atol=100 * rtol * float(np.abs(old_grad).max()))

  _run(dtype, check)


@pytest.mark.parametrize('dtype', DTYPES)
def test_the_shared_normalisation_has_a_zero_gradient_at_zero(dtype):
  # F.normalize's x / max(||x||, 1e-12) has the gradient I / 1e-12 at x = 0.
  def check(dt):
    target = jnp.asarray([0.5, -0.5, 0.5, 0.5], dt)
    loss = lambda f: lambda x: jnp.sum((f(x) - target) ** 2)  # noqa: E731
    x = jnp.zeros((4,), dt)
    assert _grad_norm(loss(methods.features._normalize), x) == 0.0
    assert _grad_norm(loss(_old_normalize), x) > 1e11
    generic = jnp.asarray([3.0, 0.0, -4.0, 0.0], dt)
    np.testing.assert_allclose(methods.features._normalize(generic), [0.6, 0.0, -0.8, 0.0],
                               rtol=1e-6)
    tiny = jnp.asarray([1e-13, 0.0, 0.0, 0.0], dt)  # below eps: x / eps, as F.normalize
    np.testing.assert_allclose(methods.features._normalize(tiny), [0.1, 0, 0, 0], rtol=1e-5)

  _run(dtype, check)


@pytest.mark.parametrize('dtype', DTYPES)
def test_crd_heads_and_bank_stay_finite_at_a_zero_vector(dtype):
  def check(dt):
    embed = trained._Embed(4)  # pylint: disable=protected-access
    x = jnp.asarray(_rng(3).normal(size=(3, 6)), dt)
    params = embed.init(jax.random.PRNGKey(0), x)['params']
    zero = jax.tree.map(jnp.zeros_like, params)  # a head whose output is 0
    weights = jnp.arange(4, dtype=dt)
    head = lambda p: jnp.sum(embed.apply({'params': p}, x) * weights)  # noqa: E731
    norm = _grad_norm(head, zero)
    assert np.isfinite(norm) and norm < BOUND
    old_head = lambda p: jnp.sum(_old_embed_unit(  # noqa: E731
        x @ p['Dense_0']['kernel'] + p['Dense_0']['bias']) * weights)
    assert not np.isfinite(_grad_norm(old_head, zero))
    np.testing.assert_allclose(embed.apply({'params': params}, x),
                               _old_embed_unit(x @ params['Dense_0']['kernel']
                                               + params['Dense_0']['bias']), rtol=1e-5)
    memory = jnp.asarray([[1.0, 0.0], [0.0, 2.0]], dt)
    # Row 0 mixes to 0 (its old value x / ||x|| was 0 / 0 = NaN); row 1 to (0, 1).
    updated = trained.crd_memory_update(memory, jnp.asarray([0, 1]),
                                        jnp.asarray([[-1.0, 0.0], [0.0, 1.0]], dt))
    np.testing.assert_array_equal(updated, [[0.0, 0.0], [0.0, 1.0]])

  _run(dtype, check)


def test_rkd_all_coincident_is_finite_and_flat():
  teacher = jnp.asarray(_rng(4).normal(size=(5, 3)), jnp.float32)
  student = jnp.zeros((5, 3), jnp.float32)
  value, grad = jax.value_and_grad(methods.rkd_loss)(student, teacher)
  assert np.isfinite(float(value)) and not np.any(grad)
