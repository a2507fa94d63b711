"""MLKD against a float64 NumPy transcription of its authors' `forward_train`
(Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/distillers/KD_ours.py; with logit
standardisation, sunshangquan/logit-standardization-KD, mdistiller/distillers/MLKD.py),
values and gradients; the confidence masks by hand; one compiled train step on two views."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import config as config_lib
from kdjax import losses, methods, models, objectives
from kdjax.errors import ConfigError
from kdjax.train import step as step_lib


def _rng(seed):
  return np.random.default_rng(seed)


# ---- the authors' forward_train, in NumPy float64 --------------------------------------

def _softmax(z):
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def _log_softmax(z):
  shifted = z - z.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def _normalize(z):
  return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))


def _kd(s, t, temperature, stand):
  if stand:
    s, t = _normalize(s), _normalize(t)
  log_q, log_p = _log_softmax(s / temperature), _log_softmax(t / temperature)
  return np.sum(np.exp(log_p) * (log_p - log_q), axis=1).mean() * temperature ** 2


def _cc(s, t, temperature):
  ps, pt = _softmax(s / temperature), _softmax(t / temperature)
  return ((pt.T @ pt - ps.T @ ps) ** 2).sum() / s.shape[1]


def _bc(s, t, temperature):
  ps, pt = _softmax(s / temperature), _softmax(t / temperature)
  return ((pt @ pt.T - ps @ ps.T) ** 2).sum() / s.shape[0]


def _authors(s_weak, t_weak, s_strong, t_strong, temperature=4.0, stand=False):
  """Their losses_dict's kd, cc and bc, divided by KD_WEIGHT (the cross-entropy apart)."""
  pred = _softmax(t_weak)
  confidence = pred.max(axis=1)
  mask = confidence <= np.percentile(confidence, 50)
  class_confidence = pred.sum(axis=0)
  class_mask = class_confidence <= np.percentile(class_confidence, 50)
  temps = (temperature, 3.0, 5.0, 2.0, 6.0)
  kd_weak = sum((_kd(s_weak, t_weak, tau, stand) * mask).mean() for tau in temps)
  kd_strong = (_kd(s_strong, t_strong, temperature, stand) + _kd(s_strong, t_strong, 3.0, stand)
               + _kd(s_strong, t_strong, 5.0, stand) + _kd(s_weak, t_weak, 2.0, stand)
               + _kd(s_weak, t_weak, 6.0, stand))
  cc_weak = sum((_cc(s_weak, t_weak, tau) * class_mask).mean() for tau in temps)
  bc_weak = sum((_bc(s_weak, t_weak, tau) * mask).mean() for tau in temps)
  return kd_weak + kd_strong + cc_weak + bc_weak


def _np_grad(f, x, h=1e-6):
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    up, down = x.copy(), x.copy()
    up[index] += h
    down[index] -= h
    grad[index] = (f(up) - f(down)) / (2 * h)
  return grad


def _logits(which):
  r = _rng({'random': 0, 'extreme': 1, 'even': 2}[which])
  shape = (7, 5) if which != 'even' else (6, 4)
  scale = {'random': 2.0, 'extreme': 40.0, 'even': 1.0}[which]
  return [r.normal(size=shape) * scale for _ in range(4)]


@pytest.mark.parametrize('which', ['random', 'extreme', 'even'])
@pytest.mark.parametrize('temperature, stand', [(4.0, False), (2.0, True)])
def test_mlkd_matches_the_authors_forward_train(which, temperature, stand):
  sw, tw, ss, ts = _logits(which)

  def loss(a, b):
    return methods.mlkd_loss(a, jnp.asarray(tw), b, jnp.asarray(ts), temperature=temperature,
                             standardize_logits=stand)

  want = _authors(sw, tw, ss, ts, temperature, stand)
  with jax.enable_x64(True):
    value, (grad_weak, grad_strong) = jax.value_and_grad(loss, argnums=(0, 1))(
        jnp.float64(sw), jnp.float64(ss))
    np.testing.assert_allclose(float(value), want, rtol=1e-9)
    for grad, expected in ((grad_weak, _np_grad(
        lambda x: _authors(x, tw, ss, ts, temperature, stand), sw)), (grad_strong, _np_grad(
            lambda x: _authors(sw, tw, x, ts, temperature, stand), ss))):
      np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5,
                                 atol=1e-7 * max(1.0, np.abs(expected).max()))
  value32 = loss(jnp.float32(sw), jnp.float32(ss))
  assert value32.dtype == jnp.float32
  np.testing.assert_allclose(float(value32), want, rtol=2e-4)


def test_the_teacher_gets_no_gradient_and_a_copy_costs_nothing():
  sw, tw, ss, ts = (jnp.float32(x) for x in _logits('random'))
  grads = jax.grad(methods.mlkd_loss, argnums=(1, 3))(sw, tw, ss, ts)
  assert not any(np.any(g) for g in grads)
  assert float(methods.mlkd_loss(tw, tw, ts, ts)) == pytest.approx(0.0, abs=1e-6)


def test_confidence_masks_by_hand():
  p = np.array([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.5, 0.3, 0.2], [0.9, 0.05, 0.05]])
  mask, class_mask = methods.mlkd.confidence_masks(jnp.float32(np.log(p)))
  # Confidences 0.7, 0.4, 0.5, 0.9: NumPy's 50th percentile of four is (0.5 + 0.7) / 2 =
  # 0.6, and the masks keep what is at most it (the authors' `le`).
  assert mask.tolist() == [False, True, True, False]
  # Class sums 2.5, 0.95, 0.55: the median is 0.95, kept.
  assert class_mask.tolist() == [False, True, True]
  # Ties at the median (a uniform teacher) keep everything.
  mask, class_mask = methods.mlkd.confidence_masks(jnp.zeros((3, 4)))
  assert mask.all() and class_mask.all()
  # The masks scale their terms by the fraction kept: m = 1/2, c = 2/3 here.
  s, t = jnp.float32(_rng(5).normal(size=(4, 3))), jnp.float32(np.log(p))
  temps = (4.0, 3.0, 5.0, 2.0, 6.0)
  kd = [float(methods.mlkd.kd_loss(s, t, temperature=x)) for x in temps]
  cc = [float(methods.mlkd.class_loss(s, t, temperature=x)) for x in temps]
  bc = [float(methods.mlkd.batch_loss(s, t, temperature=x)) for x in temps]
  want = 0.5 * sum(kd) + sum(kd) + 2 / 3 * sum(cc) + 0.5 * sum(bc)  # strong view = weak view
  assert float(methods.mlkd_loss(s, t, s, t)) == pytest.approx(want, rel=1e-5)


def test_class_and_batch_terms_by_hand():
  p_s = np.array([[0.5, 0.5], [1.0, 0.0]])
  p_t = np.array([[1.0, 0.0], [0.0, 1.0]])
  # Class × class: P_sᵀP_s = [[1.25, 0.25], [0.25, 0.25]], P_tᵀP_t = I; the squared
  # differences 0.0625 + 0.0625 + 0.0625 + 0.5625 = 0.75, over K = 2 classes.
  # Batch × batch: P_sP_sᵀ = [[0.5, 0.5], [0.5, 1]], P_tP_tᵀ = I: 0.25 + 0.25 + 0.25 + 0 = 0.75,
  # over B = 2 examples.
  with jax.enable_x64(True):
    s, t = jnp.log(jnp.float64(np.clip(p_s, 1e-300, 1))), jnp.log(jnp.float64(
        np.clip(p_t, 1e-300, 1)))
    assert float(methods.mlkd.class_loss(s, t, temperature=1.0)) == pytest.approx(0.375)
    assert float(methods.mlkd.batch_loss(s, t, temperature=1.0)) == pytest.approx(0.375)


SHAPE = (12, 12, 1)


def _batch(n=16):
  rng = np.random.default_rng(0)
  return {'images': rng.integers(0, 256, (n, *SHAPE)).astype(np.uint8),
          'labels': rng.integers(0, 10, n).astype(np.int32)}


def test_mlkd_trains_the_student_on_two_views_in_one_compiled_step():
  student = models.create('simplenn', num_classes=10, dropout=0.0)
  teacher = models.create('lightnn', num_classes=10)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)), train=False)
  config = config_lib.default()
  config.method.name, config.distill.alpha = 'mlkd', 0.0
  config.augment.max_shift = 1
  objective = objectives.from_config(config, steps_per_epoch=10)
  assert objective.strong_shift == 4  # max(2 × 1, 4)
  tx = optax.sgd(0.05)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective)
  train_step = step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                        teacher_model=teacher, objective=objective, max_shift=1)
  hparams = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.0)}
  before = jax.tree.map(np.array, teacher_variables)
  batch = _batch()
  new_state, metrics = jax.jit(train_step)(state, batch, teacher_variables, hparams)
  # The two views: one augmentation each, with keys of their own.
  weak, strong = train_step.parts.inputs(state.rng, state.step, batch)
  assert weak.shape == strong.shape and np.abs(np.asarray(weak - strong)).max() > 0
  s_weak, s_strong = (student.apply({'params': state.params}, x, train=True)
                      for x in (weak, strong))
  t_weak, t_strong = (teacher.apply(teacher_variables, x, train=False) for x in (weak, strong))
  term = methods.mlkd_loss(s_weak, t_weak, s_strong, t_strong)
  assert float(metrics['method']) == pytest.approx(float(term), rel=1e-5)
  labels = batch['labels']
  ce = (jnp.mean(losses.cross_entropy(s_weak, labels))
        + jnp.mean(losses.cross_entropy(s_strong, labels)))
  # The authors' weights: 0.1 · (CE(weak) + CE(strong)) + 0.9 · MLKD.
  assert float(metrics['loss']) == pytest.approx(float(0.1 * ce + 0.9 * term), rel=1e-5)
  assert float(metrics['accuracy']) == pytest.approx(
      float(jnp.mean(jnp.argmax(s_weak, -1) == labels)))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
  assert all(v > 0 for v in jax.tree.leaves(moved))
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))


def test_a_vectorised_weight_sweep_shares_the_views_and_equals_each_member_alone():
  student = models.create('simplenn', num_classes=10, dropout=0.0)
  teacher = models.create('lightnn', num_classes=10)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)), train=False)
  config = config_lib.default()
  config.method.name, config.distill.alpha = 'mlkd', 0.0
  objective = objectives.from_config(config, steps_per_epoch=10)
  tx = optax.sgd(0.05)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective)
  train_step = step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                        teacher_model=teacher, objective=objective, max_shift=1)
  weights = (0.9, 9.0)
  hparams = {'temperature': jnp.full(2, 4.0), 'alpha': jnp.zeros(2),
             'method_weight': jnp.float32(weights)}
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  together, metrics = jax.jit(step_lib.vectorise(train_step, input_groups=(0, 0)))(
      stacked, _batch(), teacher_variables, hparams)
  for m, w in enumerate(weights):
    alone, alone_metrics = jax.jit(train_step)(
        state, _batch(), teacher_variables,
        {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.0),
         'method_weight': jnp.float32(w)})
    assert float(metrics['loss'][m]) == pytest.approx(float(alone_metrics['loss']), rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[m], b, rtol=1e-4, atol=1e-6),
                 together.params, alone.params)


def _valid(**changes):
  config = config_lib.default()
  config.teacher.workdir = '/some/teacher'
  config.method.name, config.distill.alpha = 'mlkd', 0.0
  return config_lib.override(config, changes)


def test_mlkd_configs_are_refused_in_one_line():
  methods.registry.check_config(_valid())
  assert methods.registry.strong_view(_valid()) and not methods.registry.strong_view(
      _valid(**{'method.name': 'dist'}))
  for changes, message in (
      ({'distill.alpha': 0.9}, 'carries its own KD terms'),
      ({'teacher.cache': True}, 'runs the teacher on two augmented views'),
      ({'method.mlkd_temperatures': (3.0, 0.0)}, 'must be > 0'),
      ({'method.mlkd_ce_weight': -1.0}, 'mlkd_ce_weight=-1.0 must be >= 0'),
      ({'method.mlkd_class_weight': -0.1}, 'mlkd_class_weight=-0.1 must be >= 0'),
      ({'method.mlkd_batch_weight': float('nan')}, 'mlkd_batch_weight=nan must be >= 0')):
    with pytest.raises(ConfigError, match=message):
      methods.registry.check_config(_valid(**changes))
  student = models.create('simplenn', num_classes=10)
  with pytest.raises(ConfigError, match='the teacher must run in the step'):
    step_lib.make_train_step(model=student, tx=optax.sgd(0.1), mean=(0.5,), std=(0.25,),
                             objective=objectives.from_config(_valid()))


def test_published_weights_and_temperatures():
  config = config_lib.default()
  assert methods.get('mlkd').published_weight == 0.9
  assert (config.method.mlkd_temperature, tuple(config.method.mlkd_temperatures),
          config.method.mlkd_ce_weight) == (4.0, (3.0, 5.0, 2.0, 6.0), 0.1)
  # the class- and batch-level terms at the authors' weight (tests/test_mlkd_ls.py)
  assert config.method.mlkd_class_weight == config.method.mlkd_batch_weight == 1.0
  config.augment.max_shift = 4
  assert methods.mlkd.strong_shift(config) == 8
  config.method.mlkd_strong_shift = 2
  assert methods.mlkd.strong_shift(config) == 2
