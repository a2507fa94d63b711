"""DIST and logit standardisation against float64 NumPy transcriptions of their authors'
formulas (hunto/image_classification_sota lib/models/losses/dist_kd.py;
sunshangquan/logit-standardization-KD mdistiller/distillers/KD.py and DKD.py), values
and gradients, by hand on small examples, and inside the compiled train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import checks
from kdjax import config as config_lib
from kdjax import losses, methods, models, objectives
from kdjax.errors import ConfigError
from kdjax.train import step as step_lib


def _rng(seed):
  return np.random.default_rng(seed)


# ---- the authors' formulas, in NumPy float64 -------------------------------------------

def _np_softmax(z):
  e = np.exp(z - z.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def _np_log_softmax(z):
  shifted = z - z.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _np_pearson(a, b):
  """The authors' cosine_similarity of mean-centred vectors: a·b / (|a| |b| + 1e-8)."""
  a, b = a - a.mean(), b - b.mean()
  return a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-8)


def _np_dist_terms(s, t, temperature):
  ys, yt = _np_softmax(s / temperature), _np_softmax(t / temperature)
  inter = 1 - np.mean([_np_pearson(ys[i], yt[i]) for i in range(ys.shape[0])])
  intra = 1 - np.mean([_np_pearson(ys[:, k], yt[:, k]) for k in range(ys.shape[1])])
  return inter, intra


def _np_dist(s, t, beta=1.0, gamma=1.0, temperature=1.0):
  inter, intra = _np_dist_terms(s, t, temperature)
  return temperature ** 2 * (beta * inter + gamma * intra)


def _np_standardize(z):
  """The authors' normalize: (z − mean) / (1e-7 + std), torch's std being unbiased."""
  return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))


def _np_kd(s, t, temperature):
  """mean_b T² · KL(softmax(t/T) ‖ softmax(s/T)) (the authors' kd_loss)."""
  log_q, log_p = _np_log_softmax(s / temperature), _np_log_softmax(t / temperature)
  return temperature ** 2 * np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=-1))


def _np_ls_kd(s, t, temperature):
  return _np_kd(_np_standardize(s), _np_standardize(t), temperature)


def _np_dkd(s, t, y, alpha=1.0, beta=8.0, temperature=4.0):
  """The authors' dkd_loss (mdistiller's): binary target/rest KL and the non-target KL
  with the target logit lowered by 1000, each · T² / B."""
  gt = np.eye(s.shape[1])[y]
  ps, pt = _np_softmax(s / temperature), _np_softmax(t / temperature)
  bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
  bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
  tckd = np.sum(bt * (np.log(bt) - np.log(bs)))
  log_rest_s = _np_log_softmax(s / temperature - 1000.0 * gt)
  log_rest_t = _np_log_softmax(t / temperature - 1000.0 * gt)
  nckd = np.sum(np.exp(log_rest_t) * (log_rest_t - log_rest_s))
  return temperature ** 2 / s.shape[0] * (alpha * tckd + beta * nckd)


def _np_grad(f, x, h=1e-6):
  """Central finite differences of a float64 NumPy function."""
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[index] += h
    down[index] -= h
    grad[index] = (f(up) - f(down)) / (2 * h)
  return grad


LOGITS = {
    'random': (_rng(0).normal(size=(6, 7)) * 2, _rng(1).normal(size=(6, 7)) * 2),
    'extreme': (_rng(2).uniform(-50, 50, size=(6, 7)), _rng(3).uniform(-50, 50, size=(6, 7))),
}


def _check_value_and_gradient(loss, reference, s, t, *, rtol=1e-7):
  with jax.enable_x64(True):
    value, grad = jax.value_and_grad(loss)(jnp.float64(s), jnp.float64(t))
    np.testing.assert_allclose(float(value), reference(s, t), rtol=rtol, atol=1e-12)
    expected = _np_grad(lambda x: reference(x, t), s)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5,
                               atol=1e-7 * max(1.0, np.abs(expected).max()))
  value32 = loss(jnp.float32(s), jnp.float32(t))
  assert value32.dtype == jnp.float32
  np.testing.assert_allclose(float(value32), reference(s, t), rtol=2e-4, atol=1e-5)


# ---- DIST ------------------------------------------------------------------------------

@pytest.mark.parametrize('which', sorted(LOGITS))
@pytest.mark.parametrize('beta, gamma, temperature', [(1.0, 1.0, 1.0), (1.0, 1.0, 4.0),
                                                      (2.0, 0.5, 2.0)])
def test_dist_matches_the_authors_formula(which, beta, gamma, temperature):
  s, t = LOGITS[which]
  _check_value_and_gradient(
      lambda a, b: methods.dist_loss(a, b, beta=beta, gamma=gamma, temperature=temperature),
      lambda a, b: _np_dist(a, b, beta, gamma, temperature), s, t)


def test_dist_terms_by_hand_on_two_examples_of_three_classes():
  # Logits log(p): softmax gives the probabilities back (T = 1).
  p_s = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
  p_t = np.array([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]])
  s, t = jnp.asarray(np.log(p_s)), jnp.asarray(np.log(p_t))
  # r = a·b / (|a| |b| + 1e-8) of the centred vectors a, b (the authors' eps).
  # Inter-class, example 0: centred (5, −1, −4)/30 and (8, −1, −7)/30:
  #   a·b = (40 + 1 + 28)/900, |a| |b| = √((25 + 1 + 16)(64 + 1 + 49))/900 = √(42 · 114)/900
  # example 1: centred (−4, −4, 8)/30 and (−7, −1, 8)/30:
  #   a·b = (28 + 4 + 64)/900, |a| |b| = √((16 + 16 + 64) · 114)/900 = √(96 · 114)/900
  r_0 = (69 / 900) / (np.sqrt(42 * 114) / 900 + 1e-8)  # 0.997176
  r_1 = (96 / 900) / (np.sqrt(96 * 114) / 900 + 1e-8)  # 0.917663
  inter = 1 - (r_0 + r_1) / 2
  # Intra-class, two examples: class 0 centres to ±(0.15, −0.15) and ±(0.25, −0.25):
  # r = 0.075 / (0.075 + 1e-8); class 2 to (−0.2, 0.2) and (−0.25, 0.25): r = 0.1 / (0.1 +
  # 1e-8); the teacher's class 1 is 0.3 in both examples, a zero centred vector: r = 0.
  intra = 1 - (0.075 / (0.075 + 1e-8) + 0 + 0.1 / (0.1 + 1e-8)) / 3
  assert (inter, intra) == pytest.approx((0.0425804, 1 / 3), rel=1e-5)
  with jax.enable_x64(True):
    s, t = jnp.float64(s), jnp.float64(t)
    assert float(methods.dist_loss(s, t, beta=1.0, gamma=0.0)) == pytest.approx(inter, rel=1e-6)
    assert float(methods.dist_loss(s, t, beta=0.0, gamma=1.0)) == pytest.approx(intra, rel=1e-6)
    assert float(methods.dist_loss(s, t, beta=2.0, gamma=3.0)) == pytest.approx(
        2 * inter + 3 * intra, rel=1e-6)
    # At T = 2 the probabilities change; the T² factor multiplies the authors' terms. (The
    # teacher's class 1 centres to rounding residue, which r's 1 / eps makes about 1e-9.)
    want = 4 * sum(_np_dist_terms(np.log(p_s), np.log(p_t), 2.0))
    assert float(methods.dist_loss(s, t, temperature=2.0)) == pytest.approx(want, rel=1e-7)


def test_dist_is_zero_for_a_copy_and_gives_the_teacher_no_gradient():
  s = jnp.float32(_rng(4).normal(size=(5, 10)))
  assert float(methods.dist_loss(s, s)) == pytest.approx(0.0, abs=1e-6)
  # Pearson's r ignores affine changes of the probabilities, but softmax(3z) is not an
  # affine function of softmax(z): a sharper teacher still costs something.
  assert float(methods.dist_loss(s, 3 * s)) > 1e-3
  assert not np.any(jax.grad(methods.dist_loss, argnums=1)(s, 2 * s))


def test_dist_trains_the_student_in_one_compiled_step():
  shape = (12, 12, 1)
  rng = np.random.default_rng(0)
  batch = {'images': rng.integers(0, 256, (16, *shape)).astype(np.uint8),
           'labels': rng.integers(0, 10, 16).astype(np.int32)}
  student = models.create('simplenn', num_classes=10)
  teacher = models.create('lightnn', num_classes=10)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *shape)), train=False)
  config = config_lib.default()
  config.method.name, config.distill.alpha = 'dist', 0.0
  tx = optax.sgd(0.05)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), shape)
  hparams = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.0)}

  def step(objective):
    return jax.jit(step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                            teacher_model=teacher, objective=objective,
                                            max_shift=1))

  before = jax.tree.map(np.array, teacher_variables)
  new_state, metrics = step(objectives.from_config(config))(state, batch, teacher_variables,
                                                            hparams)
  term = float(metrics['method'])
  assert np.isfinite(term) and term > 0
  ce_only = objectives.from_config(config_lib.override(config, {'method.name': ''}))
  _, plain = step(ce_only)(state, batch, teacher_variables, hparams)
  # The authors' weights: cross-entropy 1 plus 2 × DIST.
  assert methods.get('dist').published_weight == 2.0
  assert float(metrics['loss']) == pytest.approx(float(plain['loss']) + 2.0 * term, rel=1e-5)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
  assert all(v > 0 for v in jax.tree.leaves(moved))
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))


def test_dist_options_are_validated():
  config = config_lib.default()
  config.teacher.workdir = '/some/teacher'
  config.method.name, config.method.dist_temperature = 'dist', 0.0
  with pytest.raises(ConfigError, match='config.method.dist_temperature=0.0'):
    methods.registry.check_config(config)


# ---- logit standardisation -------------------------------------------------------------

def test_standardize_by_hand_uses_the_unbiased_std():
  # mean 2; unbiased std √((1 + 0 + 1) / 2) = 1 (the biased one would be 0.816).
  got = methods.standardize(jnp.float32([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
  np.testing.assert_allclose(got, [[-1 / (1 + 1e-7), 0.0, 1 / (1 + 1e-7)], [0.0, 0.0, 0.0]],
                             rtol=1e-6)


@pytest.mark.parametrize('which', sorted(LOGITS))
def test_standardize_matches_the_authors_normalize_and_is_invariant(which):
  z = LOGITS[which][0]
  with jax.enable_x64(True):
    got = np.asarray(methods.standardize(jnp.float64(z)))
    np.testing.assert_allclose(got, _np_standardize(z), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.asarray(methods.standardize(jnp.float64(z + 123.0))), got,
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.asarray(methods.standardize(jnp.float64(z * 7.5))), got,
                               rtol=1e-6, atol=1e-9)
    row = np.asarray(methods.standardize(jnp.float64(z)))
    np.testing.assert_allclose(row.mean(-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(row.std(-1, ddof=1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(methods.standardize(jnp.float32(z) - 20.0),
                             methods.standardize(jnp.float32(z) * 0.25), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('which', sorted(LOGITS))
@pytest.mark.parametrize('temperature', [1.0, 2.0, 4.0])
def test_standardized_kd_matches_the_authors_formula(which, temperature):
  s, t = LOGITS[which]
  _check_value_and_gradient(
      lambda a, b: jnp.mean(losses.soft_target_loss(a, b, temperature=temperature,
                                                     standardize_logits=True)),
      lambda a, b: _np_ls_kd(a, b, temperature), s, t)


@pytest.mark.parametrize('which', sorted(LOGITS))
def test_standardized_dkd_matches_the_authors_formula(which):
  s, t = LOGITS[which]
  y = np.array([0, 3, 6, 3, 1, 5])
  _check_value_and_gradient(
      lambda a, b: methods.dkd_loss(a, b, jnp.asarray(y), standardize_logits=True),
      lambda a, b: _np_dkd(_np_standardize(a), _np_standardize(b), y), s, t, rtol=1e-6)


def test_distill_standardize_changes_the_kd_objective_to_the_standardized_formula():
  s, t = _rng(5).normal(size=(4, 10)) * 3, _rng(6).normal(size=(4, 10)) * 5
  labels = np.array([1, 0, 9, 4])
  hparams = {'temperature': 2.0, 'alpha': 0.9}
  config = config_lib.default()

  def objective_value(standardize):
    config.distill.standardize = standardize
    value, _ = objectives.from_config(config).loss(
        {'logits': jnp.float32(s)}, {'logits': jnp.float32(t)}, jnp.asarray(labels), hparams,
        {})
    return float(value)

  ce = -np.mean(_np_log_softmax(s)[np.arange(4), labels])  # raw logits in the label term
  standardized = 0.9 * _np_ls_kd(s, t, 2.0) + 0.1 * ce
  plain = 0.9 * _np_kd(s, t, 2.0) + 0.1 * ce
  assert abs(standardized - plain) > 0.1
  assert objective_value(True) == pytest.approx(standardized, rel=1e-5)
  assert objective_value(False) == pytest.approx(plain, rel=1e-5)


def test_distill_standardize_reaches_dkd_and_is_validated():
  s, t = _rng(7).normal(size=(4, 10)) * 3, _rng(8).normal(size=(4, 10)) * 5
  labels = np.array([1, 0, 9, 4])
  config = config_lib.default()
  config.method.name, config.method.dkd_warmup_epochs = 'dkd', 0.0
  config.distill.standardize = True
  _, metrics = objectives.from_config(config).loss(
      {'logits': jnp.float32(s)}, {'logits': jnp.float32(t)}, jnp.asarray(labels),
      {'temperature': 4.0, 'alpha': 0.0}, {})
  assert float(metrics['method']) == pytest.approx(
      _np_dkd(_np_standardize(s), _np_standardize(t), labels), rel=1e-4)
  # ml_collections refuses a str for a bool field; a config read without type checks
  # (a hand-built dict) meets the validation instead.
  loose = config_lib.ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  loose.method.name, loose.distill.standardize = '', 'yes'
  with pytest.raises(ConfigError, match="config.distill.standardize='yes'"):
    checks.validate(loose)
