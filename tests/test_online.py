"""Online distillation (kdjax.online) and function matching (distill.consistent, mixup)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from kdjax import checks
from kdjax import config as config_lib
from kdjax import models
from kdjax import objective_registry
from kdjax import objectives
from kdjax import online
from kdjax import train
from kdjax.errors import ConfigError
from kdjax.train import step as step_lib

MEAN, STD = (0.5,), (0.25,)
IMAGE_SHAPE = (8, 8, 1)


def _batch(num=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'images': rng.integers(0, 256, (num, *IMAGE_SHAPE)).astype(np.uint8),
          'labels': rng.integers(0, 10, num).astype(np.int32)}


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _dml_by_hand(logits, labels, weight, temperature):
  """Each member's loss and d(its loss)/d(its logits), the others' mean held constant."""
  count, batch, classes = logits.shape
  onehot = np.eye(classes)[labels]
  probs = np.exp(_log_softmax(logits / temperature))
  losses, grads = [], []
  for m in range(count):
    others = (probs.sum(0) - probs[m]) / (count - 1)
    log_q = _log_softmax(logits[m] / temperature)
    kl = np.sum(others * (np.log(others) - log_q), -1)
    ce = -np.sum(onehot * _log_softmax(logits[m]), -1)
    losses.append(np.mean(ce) + weight * temperature**2 * np.mean(kl))
    softmax = np.exp(_log_softmax(logits[m]))
    grads.append((softmax - onehot) / batch
                 + weight * temperature * (np.exp(log_q) - others) / batch)
  return np.array(losses), np.array(grads)


@pytest.mark.parametrize('temperature', [1.0, 3.0])
def test_dml_loss_and_gradient_by_hand_for_a_cohort_of_three(temperature):
  """Loss of each member and the gradient of the cohort's summed loss: each member's
  logits get only their own loss's gradient, the others' mean being detached."""
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (3, 5, 4)).astype(np.float32)
  labels = rng.integers(0, 4, 5).astype(np.int32)
  weight = 0.7

  def member_loss(own):
    return online.cohort_loss(own, own, labels, weight=weight, temperature=temperature)[0]

  cohort = jax.vmap(member_loss, axis_name=step_lib.MEMBER_AXIS)
  loss = jax.jit(cohort)(logits)
  grads = jax.jit(jax.grad(lambda z: jnp.sum(cohort(z))))(logits)
  want_loss, want_grads = _dml_by_hand(logits.astype(np.float64), labels, weight, temperature)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  np.testing.assert_allclose(grads, want_grads, rtol=1e-4, atol=1e-7)
  # (Had the mean not been detached, each member's logits would also get the gradients of
  # the others' soft terms, and `grads` would not equal the own-loss gradients above.)
  kl_only = jax.grad(lambda z: jnp.sum(jax.vmap(
      lambda own: online.cohort_loss(own, own, labels, weight=1.0, temperature=temperature)[1][
          'online_kl'], axis_name=step_lib.MEMBER_AXIS)(z)))(logits)
  assert np.abs(kl_only).max() > 1e-3  # the soft term does pull each member


def test_others_mean_leaves_the_member_out():
  logits = np.log(np.array([[[0.5, 0.5]], [[0.9, 0.1]], [[0.2, 0.8]]], np.float32))
  for member, want in ((0, [0.55, 0.45]), (1, [0.35, 0.65]), (2, [0.7, 0.3])):
    np.testing.assert_allclose(np.exp(online.others_log_probs(logits, member, 1.0))[0], want,
                               rtol=1e-5)


def _cohort_step(kind, refresh_steps=3, members=3, weight=1.0):
  config = config_lib.default()
  config.online.kind, config.online.refresh_steps = kind, refresh_steps
  config.online.weight = weight
  model = models.create('mlp', num_classes=10, hidden=(16,))
  tx = optax.sgd(0.1)
  objective = (online.objective(config, model, IMAGE_SHAPE) if kind
               else objectives.logit_kd())
  train_step = online.step_of(config, step_lib.make_train_step(
      model=model, tx=tx, mean=MEAN, std=STD, objective=objective), model)
  init = lambda seed: step_lib.init_state(  # noqa: E731
      model, tx, jax.random.PRNGKey(seed), IMAGE_SHAPE, objective)
  state = jax.vmap(init)(jnp.arange(members))
  hparams = {'temperature': jnp.ones(members), 'alpha': jnp.zeros(members)}
  return jax.jit(step_lib.vectorise(train_step)), state, hparams


def test_codistillation_copy_changes_exactly_every_refresh_steps():
  step, state, hparams = _cohort_step('codistill', refresh_steps=3)
  batch = _batch()
  stale_kernel = lambda s: np.asarray(  # noqa: E731
      s.objective_state[online.STALE]['params']['dense_0']['kernel'])
  assert np.all(stale_kernel(state) == 0)  # filled at step 0
  copies, params_before = [], []
  for _ in range(8):
    params_before.append(np.asarray(state.params['dense_0']['kernel']))
    state, metrics = step(state, batch, None, hparams)
    assert np.all(np.isfinite(metrics['loss']))
    copies.append(stale_kernel(state))
  changed = [s for s in range(1, 8) if not np.array_equal(copies[s], copies[s - 1])]
  assert changed == [3, 6]
  for s in (0, 3, 6):  # the copy is the member's weights before that step's update
    np.testing.assert_array_equal(copies[s], params_before[s])
  assert not np.array_equal(params_before[7], copies[7])


def test_dml_step_matches_the_loss_by_hand_on_the_members_logits():
  """One vectorised DML step: each member's reported loss is the hand-computed DML loss on
  the three members' train-mode logits of the same batch."""
  step, state, hparams = _cohort_step('dml')
  batch = _batch()
  model = models.create('mlp', num_classes=10, hidden=(16,))
  images = step_lib.augment.normalize(batch['images'], MEAN, STD)
  logits = np.stack([np.asarray(model.apply({'params': jax.tree.map(lambda x: x[m],
                                                                    state.params)},
                                            images, train=True), np.float64)
                     for m in range(3)])
  _, metrics = step(state, batch, None, hparams)
  want, _ = _dml_by_hand(logits, batch['labels'], 1.0, 1.0)
  np.testing.assert_allclose(metrics['loss'], want, rtol=1e-5)


@pytest.mark.parametrize('kind', ['dml', 'codistill'])
def test_a_cohort_at_weight_zero_trains_as_independent_students(kind):
  """With the soft term weighted 0 the cohort's members follow K students trained on the
  labels alone (the same vectorised step without online distillation), step for step."""
  cohort, cohort_state, hparams = _cohort_step(kind, weight=0.0)
  alone, alone_state, _ = _cohort_step(None)
  batch = _batch()
  for _ in range(3):
    cohort_state, cohort_metrics = cohort(cohort_state, batch, None, hparams)
    alone_state, alone_metrics = alone(alone_state, batch, None, hparams)
    np.testing.assert_allclose(cohort_metrics['loss'], alone_metrics['loss'], rtol=1e-6)
  np.testing.assert_allclose(cohort_state.params['dense_0']['kernel'],
                             alone_state.params['dense_0']['kernel'], rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(cohort_metrics['online_kl']) > 0)  # measured, not trained on


class _Echo(nn.Module):
  """Logits = the flattened input images plus a bias: shows what a network was fed."""

  @nn.compact
  def __call__(self, images, train: bool = False, return_features: bool = False):
    del train, return_features
    flat = images.reshape(images.shape[0], -1)
    return flat + self.param('bias', nn.initializers.zeros, (flat.shape[-1],))


def _seen_images_objective():
  def loss(student, teacher, labels, hparams, own_params):
    del labels, hparams, own_params
    return jnp.mean(student['logits']), {
        'gap': jnp.max(jnp.abs(student['logits'] - teacher['logits'])),
        'student_images': student['logits'], 'teacher_images': teacher['logits']}
  return objective_registry.Objective(name='seen_images', loss=loss)


@pytest.mark.parametrize('mixup', [0.0, 0.4])
def test_consistent_teacher_and_student_see_bit_identical_images(mixup):
  echo = _Echo()
  tx = optax.sgd(0.1)
  state = step_lib.init_state(echo, tx, jax.random.PRNGKey(0), IMAGE_SHAPE)
  train_step = jax.jit(step_lib.make_train_step(
      model=echo, tx=tx, mean=MEAN, std=STD, max_shift=2, teacher_model=echo,
      objective=_seen_images_objective(), mixup=mixup))
  batch = _batch()
  _, metrics = train_step(state, batch, {'params': state.params}, {})
  student = np.asarray(metrics['student_images'])
  np.testing.assert_array_equal(student, np.asarray(metrics['teacher_images']))
  assert float(metrics['gap']) == 0.0
  plain = np.asarray(step_lib.augment.normalize(batch['images'], MEAN, STD)).reshape(16, -1)
  assert np.abs(student - plain).max() > 1.0  # augmented (and mixed): not the raw batch


def test_mixup_by_hand():
  rng = jax.random.PRNGKey(7)
  images = np.random.default_rng(0).normal(size=(4, 2, 2, 1)).astype(np.float32)
  lam = float(jax.random.beta(rng, 0.4, 0.4))
  assert 0.0 < lam < 1.0
  want = lam * images + (1 - lam) * images[[3, 0, 1, 2]]
  np.testing.assert_allclose(step_lib.mix_images(rng, jnp.asarray(images), 0.4), want,
                             rtol=1e-6)


def _config(**changes) -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.model.hidden = (8,)
  return config_lib.override(c, changes)


COHORT = {'online.kind': 'dml', 'sweep.seed': (0, 1), 'sweep.couple_data_seed': False}


@pytest.mark.parametrize('changes, field', [
    (dict(COHORT, **{'online.kind': 'mutual'}), 'config.online.kind'),
    (dict(COHORT, **{'sweep.seed': ()}), 'config.sweep.seed'),
    (dict(COHORT, **{'sweep.couple_data_seed': True}), 'config.sweep.couple_data_seed'),
    (dict(COHORT, **{'sweep.mode': 'loop'}), 'config.sweep.mode'),
    (dict(COHORT, **{'sweep.learning_rate': (0.1, 0.01)}), 'config.sweep.learning_rate'),
    (dict(COHORT, **{'online.temperature': 0.0}), 'config.online.temperature'),
    (dict(COHORT, **{'online.refresh_steps': 0}), 'config.online.refresh_steps'),
    (dict(COHORT, **{'online.weight': -1.0}), 'config.online.weight'),
    (dict(COHORT, **{'teacher.workdir': '/nonexistent'}), 'config.teacher.workdir'),
    ({'distill.consistent': True}, 'config.distill.consistent'),
    ({'augment.mixup': 0.2}, 'config.augment.mixup'),
    ({'augment.mixup': -0.2}, 'config.augment.mixup'),
])
def test_refusals_name_the_field(changes, field):
  with pytest.raises(ConfigError, match=f'^{field.replace(".", "[.]")}='):
    checks.validate(_config(**changes))


def test_refusals_with_a_teacher(tmp_path):
  teacher = {'teacher.workdir': str(tmp_path), 'distill.consistent': True}
  with pytest.raises(ConfigError, match='^config.teacher.cache=True'):
    config_lib.check_fields(_config(**teacher, **{'teacher.cache': True}))
  with pytest.raises(ConfigError, match='^config.augment.mixup=0.2: a mixed image'):
    config_lib.check_fields(_config(**teacher, **{'augment.mixup': 0.2}))
  config_lib.check_fields(_config(**teacher, **{'augment.mixup': 0.2, 'distill.alpha': 1.0}))


def test_a_refused_cohort_writes_nothing(tmp_path):
  workdir = os.path.join(tmp_path, 'run')
  with pytest.raises(ConfigError, match='couple_data_seed'):
    train.train_and_evaluate(_config(**dict(COHORT, **{'sweep.couple_data_seed': True})),
                             workdir)
  assert not os.path.exists(workdir)
