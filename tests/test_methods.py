"""The parameter-free distillation losses of kdjax.methods, against hand-computed values
and independent float64 NumPy formulas written from the papers' definitions (loops,
no shared code), with the reductions of the reference implementations."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import methods

jax.config.update('jax_enable_x64', False)


def _rng(seed):
  return np.random.default_rng(seed)


# ---- independent references (float64) -------------------------------------------------

def _np_pool(x, h, w):
  """Adaptive average pooling, one window at a time (torch's window rule)."""
  b, H, W, c = x.shape
  out = np.zeros((b, h, w, c))
  for i, j in itertools.product(range(h), range(w)):
    r0, r1 = (i * H) // h, int(np.ceil((i + 1) * H / h))
    c0, c1 = (j * W) // w, int(np.ceil((j + 1) * W / w))
    out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return out


def _np_same_size(s, t):
  if s.shape[1] > t.shape[1]:
    s = _np_pool(s, t.shape[1], t.shape[2])
  elif s.shape[1] < t.shape[1]:
    t = _np_pool(t, s.shape[1], s.shape[2])
  return s, t


def _np_unit(v):
  return v / max(np.linalg.norm(v), 1e-12)


def _np_at(s, t, p=2.0):
  s, t = _np_same_size(s, t)
  total = 0.0
  for b in range(s.shape[0]):
    qs = _np_unit((s[b] ** p).mean(axis=-1).ravel())
    qt = _np_unit((t[b] ** p).mean(axis=-1).ravel())
    total += ((qs - qt) ** 2).sum()
  return total / (s.shape[0] * qs.size)


def _np_sp(s, t):
  n = s.shape[0]
  fs, ft = s.reshape(n, -1), t.reshape(n, -1)
  gs = np.array([_np_unit(np.array([fs[i] @ fs[j] for j in range(n)])) for i in range(n)])
  gt = np.array([_np_unit(np.array([ft[i] @ ft[j] for j in range(n)])) for i in range(n)])
  return ((gt - gs) ** 2).sum() / n ** 2


def _np_nst(s, t):
  s, t = _np_same_size(s, t)

  def chans(f):
    return [[_np_unit(f[b, :, :, c].ravel()) for c in range(f.shape[3])]
            for b in range(f.shape[0])]

  cs, ct = chans(s), chans(t)

  def mean_k(a, b):
    return np.mean([(x @ y) ** 2 for i in range(len(a)) for x in a[i] for y in b[i]])

  return mean_k(ct, ct) + mean_k(cs, cs) - 2 * mean_k(cs, ct)


def _np_pkt(s, t, eps=1e-7):
  def cond(e):
    u = e / (np.linalg.norm(e, axis=1, keepdims=True) + eps)
    k = (u @ u.T + 1) / 2
    return k / k.sum(axis=1, keepdims=True)

  p, q = cond(s), cond(t)
  return np.mean(q * np.log((q + eps) / (p + eps)))


def _np_smooth_l1(x, y):
  d = np.abs(x - y)
  return np.mean(np.where(d < 1, 0.5 * d ** 2, d - 0.5))


def _np_rkd(s, t, wd=25.0, wa=50.0):
  n = s.shape[0]

  def dist(e):
    d = np.array([[0.0 if i == j else max(np.sum((e[i] - e[j]) ** 2), 1e-12) ** 0.5
                   for j in range(n)] for i in range(n)])
    return d / d[d > 0].mean()

  def angle(e):
    return np.array([_np_unit(e[i] - e[j]) @ _np_unit(e[k] - e[j])
                     for j in range(n) for i in range(n) for k in range(n)])

  # The angle at j between i and k, for every (j, i, k): the same multiset of
  # values as the reference's [j, i, k] layout, compared element by element.
  return wd * _np_smooth_l1(dist(s), dist(t)) + wa * _np_smooth_l1(angle(s), angle(t))


def _np_kl(p, q):
  return sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def _np_softmax(z):
  z = np.exp(z - z.max())
  return z / z.sum()


def _np_dkd(s, t, y, alpha=1.0, beta=8.0, T=4.0):
  tckd = nckd = 0.0
  for b in range(s.shape[0]):
    ps, pt = _np_softmax(s[b] / T), _np_softmax(t[b] / T)
    tckd += _np_kl([pt[y[b]], 1 - pt[y[b]]], [ps[y[b]], 1 - ps[y[b]]])
    rest = [k for k in range(s.shape[1]) if k != y[b]]  # the target class left out
    nckd += _np_kl(_np_softmax(t[b, rest] / T), _np_softmax(s[b, rest] / T))
  n = s.shape[0]
  return T ** 2 * (alpha * tckd / n + beta * nckd / n)


# ---- tests ----------------------------------------------------------------------------

def test_at_by_hand():
  student = np.ones((1, 2, 2, 3), np.float32)  # uniform attention: 0.5 at each position
  teacher = np.zeros((1, 2, 2, 5), np.float32)
  teacher[0, 0, 0] = 2.0  # all attention on one position: (1, 0, 0, 0)
  # (0.5 - 1)^2 + 3 · 0.5^2 = 1, averaged over 4 positions
  assert float(methods.at_loss(student, teacher)) == pytest.approx(0.25, rel=1e-6)


@pytest.mark.parametrize('s_shape,t_shape', [((3, 8, 8, 4), (3, 8, 8, 6)),
                                             ((3, 8, 8, 4), (3, 4, 4, 6)),
                                             ((3, 3, 3, 4), (3, 5, 5, 2))])
def test_feature_losses_match_float64_references(s_shape, t_shape):
  s, t = _rng(0).normal(size=s_shape), _rng(1).normal(size=t_shape)
  for loss, ref in ((methods.at_loss, _np_at), (methods.nst_loss, _np_nst)):
    assert float(loss(jnp.float32(s), jnp.float32(t))) == pytest.approx(ref(s, t), rel=2e-4)
  assert float(methods.sp_loss(jnp.float32(s), jnp.float32(t))) == pytest.approx(
      _np_sp(s, t), rel=2e-4)
  assert float(methods.at_loss(jnp.float32(s), jnp.float32(t), p=4.0)) == pytest.approx(
      _np_at(s, t, p=4.0), rel=2e-4)


def test_adaptive_pool_uneven_windows():
  x = _rng(2).normal(size=(2, 7, 5, 3))
  np.testing.assert_allclose(methods.adaptive_avg_pool(jnp.float32(x), 3, 2), _np_pool(x, 3, 2),
                             rtol=1e-5, atol=1e-6)


def test_relation_losses_match_float64_references():
  s, t = _rng(3).normal(size=(6, 5)), _rng(4).normal(size=(6, 9))
  assert float(methods.pkt_loss(jnp.float32(s), jnp.float32(t))) == pytest.approx(
      _np_pkt(s, t), rel=2e-4)
  assert float(methods.rkd_loss(jnp.float32(s), jnp.float32(t))) == pytest.approx(
      _np_rkd(s, t), rel=2e-4)
  assert float(methods.rkd_loss(jnp.float32(s), jnp.float32(t), distance_weight=1.0,
                                angle_weight=0.0)) == pytest.approx(
                                    _np_rkd(s, t, 1.0, 0.0), rel=2e-4)


def test_dkd_matches_the_definition_with_the_target_left_out():
  s, t = _rng(5).normal(size=(5, 10)) * 3, _rng(6).normal(size=(5, 10)) * 3
  y = np.array([0, 3, 9, 3, 5])
  got = methods.dkd_loss(jnp.float32(s), jnp.float32(t), jnp.asarray(y))
  assert float(got) == pytest.approx(_np_dkd(s, t, y), rel=1e-4)
  got = methods.dkd_loss(jnp.float32(s), jnp.float32(t), jnp.asarray(y), alpha=0.5, beta=2.0,
                         temperature=2.0)
  assert float(got) == pytest.approx(_np_dkd(s, t, y, 0.5, 2.0, 2.0), rel=1e-4)
  assert float(methods.dkd_loss(jnp.float32(s), jnp.float32(s), jnp.asarray(y))) == (
      pytest.approx(0.0, abs=1e-4))


def test_gradients_are_finite_where_embeddings_coincide():
  s = _rng(7).normal(size=(6, 5)).astype(np.float32)
  s[3] = s[1]  # two coincident student embeddings
  t = _rng(8).normal(size=(6, 5)).astype(np.float32)
  t[4] = t[2]
  features = np.zeros((2, 4, 4, 3), np.float32)  # an all-zero map: attention 0 / 0
  embedding_losses = {'rkd': methods.rkd_loss, 'pkt': methods.pkt_loss}
  map_losses = {'at': methods.at_loss, 'sp': methods.sp_loss, 'nst': methods.nst_loss}

  @jax.jit  # one program for all five
  def all_gradients(s, t, features):
    out = {name: jax.value_and_grad(loss)(s, t) for name, loss in embedding_losses.items()}
    out.update({name: (None, jax.grad(loss)(features, jnp.ones((2, 4, 4, 3))))
                for name, loss in map_losses.items()})
    return out

  for name, (value, grad) in all_gradients(jnp.asarray(s), jnp.asarray(t),
                                           jnp.asarray(features)).items():
    assert np.all(np.isfinite(grad)), name
    if name in embedding_losses:
      assert np.isfinite(float(value)) and np.abs(grad).sum() > 0, name


def test_the_teacher_gets_no_gradient_where_the_reference_detaches_it():
  s, t = jnp.float32(_rng(9).normal(size=(6, 5))), jnp.float32(_rng(10).normal(size=(6, 5)))
  assert not np.any(jax.grad(methods.rkd_loss, argnums=1)(s, t))
  logits = jnp.float32(_rng(11).normal(size=(4, 10)))
  assert not np.any(jax.grad(methods.dkd_loss, argnums=1)(logits, logits * 2, jnp.arange(4)))
