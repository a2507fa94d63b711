"""Loss values against hand-computed numbers, gradients, limits and numerics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses

LOG3 = math.log(3.0)


def test_cross_entropy_hand_values():
  logits = jnp.array([[0.0, 0.0], [LOG3, 0.0]])
  labels = jnp.array([0, 1])
  # softmax([log 3, 0]) = [3/4, 1/4].
  np.testing.assert_allclose(
      jax.jit(losses.cross_entropy)(logits, labels),
      [math.log(2.0), -math.log(0.25)], rtol=1e-6)


# Teacher [T·log 3, 0] at temperature T gives p = [3/4, 1/4]; student [0, 0]
# gives q = [1/2, 1/2] at every T.
@pytest.mark.parametrize('kind, value_at_t1', [
    ('kl', 0.75 * math.log(1.5) + 0.25 * math.log(0.5)),
    ('soft_ce', math.log(2.0)),
    ('mse_probs', 1.0 / 16.0),
    ('cosine', 1.0 - 0.5 / (math.sqrt(0.625) * math.sqrt(0.5))),
])
@pytest.mark.parametrize('temperature', [1.0, 2.0, 7.5])
def test_soft_target_hand_values_and_t2_scaling(kind, value_at_t1, temperature):
  student = jnp.zeros((1, 2))
  teacher = jnp.array([[temperature * LOG3, 0.0]])
  fn = jax.jit(lambda s, t: losses.soft_target_loss(
      s, t, temperature=temperature, kind=kind))
  np.testing.assert_allclose(fn(student, teacher), [temperature**2 * value_at_t1],
                             rtol=1e-5)


def test_mse_logits_hand_value_is_temperature_free():
  student = jnp.zeros((1, 2))
  teacher = jnp.array([[LOG3, 0.0]])
  for temperature in (0.5, 1.0, 20.0):
    value = losses.soft_target_loss(student, teacher, temperature=temperature,
                                    kind='mse_logits')
    np.testing.assert_allclose(value, [0.5 * LOG3**2 / 2], rtol=1e-6)


@pytest.mark.parametrize('kind', [k for k in losses.SOFT_LOSS_KINDS if k != 'soft_ce'])
def test_soft_loss_of_identical_distributions_is_zero(kind):
  logits = jax.random.normal(jax.random.PRNGKey(0), (8, 10)) * 5
  value = losses.soft_target_loss(logits, logits, temperature=3.0, kind=kind)
  np.testing.assert_allclose(value, np.zeros(8), atol=1e-5)


def test_kl_is_soft_ce_minus_teacher_entropy():
  rng_s, rng_t = jax.random.split(jax.random.PRNGKey(1))
  student = jax.random.normal(rng_s, (16, 10)) * 3
  teacher = jax.random.normal(rng_t, (16, 10)) * 3
  temperature = 4.0
  p = jax.nn.softmax(teacher / temperature)
  entropy = -jnp.sum(p * jnp.log(p), axis=-1)
  kl = losses.soft_target_loss(student, teacher, temperature=temperature, kind='kl')
  ce = losses.soft_target_loss(student, teacher, temperature=temperature, kind='soft_ce')
  np.testing.assert_allclose(kl, ce - temperature**2 * entropy, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('kind', ['kl', 'soft_ce'])
@pytest.mark.parametrize('temperature', [0.5, 1.0, 4.0, 20.0])
def test_gradient_is_t_times_prob_difference(kind, temperature):
  rng_s, rng_t = jax.random.split(jax.random.PRNGKey(2))
  student = jax.random.normal(rng_s, (4, 10)) * 2
  teacher = jax.random.normal(rng_t, (4, 10)) * 2
  grad = jax.jit(jax.grad(lambda s: jnp.sum(losses.soft_target_loss(
      s, teacher, temperature=temperature, kind=kind))))(student)
  # d/ds [T² · CE(p, softmax(s/T))] = T² · (q − p) / T.
  expected = temperature * (jax.nn.softmax(student / temperature) -
                            jax.nn.softmax(teacher / temperature))
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_teacher_gets_no_gradient():
  student = jnp.ones((2, 3))
  teacher = jnp.array([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
  grad = jax.grad(lambda t: jnp.sum(losses.soft_target_loss(
      student, t, temperature=2.0)))(teacher)
  np.testing.assert_array_equal(grad, np.zeros_like(teacher))


def test_distillation_loss_alpha_limits_and_mixture():
  rng_s, rng_t, rng_y = jax.random.split(jax.random.PRNGKey(3), 3)
  student = jax.random.normal(rng_s, (32, 10))
  teacher = jax.random.normal(rng_t, (32, 10)) * 4
  labels = jax.random.randint(rng_y, (32,), 0, 10)
  temperature = 5.0
  soft = jnp.mean(losses.soft_target_loss(student, teacher, temperature=temperature))
  hard = jnp.mean(losses.cross_entropy(student, labels))
  loss = jax.jit(losses.distillation_loss, static_argnames='kind')
  np.testing.assert_allclose(
      loss(student, teacher, labels, temperature=temperature, alpha=1.0), soft, rtol=1e-6)
  np.testing.assert_allclose(
      loss(student, teacher, labels, temperature=temperature, alpha=0.0), hard, rtol=1e-6)
  np.testing.assert_allclose(
      loss(student, teacher, labels, temperature=temperature, alpha=0.3),
      0.3 * soft + 0.7 * hard, rtol=1e-5)


def test_hyperparameters_may_be_traced_for_sweeps():
  student = jnp.zeros((1, 2))
  teacher = jnp.array([[LOG3, 0.0]])
  labels = jnp.array([0])
  temperatures = jnp.array([1.0, 2.0])
  alphas = jnp.array([1.0, 0.0])
  values = jax.vmap(lambda t, a: losses.distillation_loss(
      student, teacher, labels, temperature=t, alpha=a))(temperatures, alphas)
  kl_t1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
  np.testing.assert_allclose(values, [kl_t1, math.log(2.0)], rtol=1e-5)


@pytest.mark.parametrize('kind', losses.SOFT_LOSS_KINDS)
def test_finite_values_and_gradients_at_extremes(kind):
  @jax.jit
  def value_and_grad(student, teacher, labels, temperature):
    return jax.value_and_grad(lambda s: losses.distillation_loss(
        s, teacher, labels, temperature=temperature, alpha=0.5, kind=kind))(student)

  rng_s, rng_t, rng_y = jax.random.split(jax.random.PRNGKey(4), 3)
  labels = jax.random.randint(rng_y, (16,), 0, 10)
  for scale in (1.0, 1e2, 1e4):
    student = jax.random.normal(rng_s, (16, 10)) * scale
    teacher = jax.random.normal(rng_t, (16, 10)) * scale
    teacher = teacher.at[0].set(jnp.array([1e4] + [-1e4] * 9))
    for temperature in (0.05, 1.0, 1.01, 100.0):
      value, grad = value_and_grad(student, teacher, labels, temperature)
      assert np.isfinite(value), (scale, temperature)
      assert np.all(np.isfinite(grad)), (scale, temperature)


def test_unknown_kind_is_rejected():
  with pytest.raises(ValueError, match='unknown soft loss kind'):
    losses.soft_target_loss(jnp.zeros((1, 2)), jnp.zeros((1, 2)),
                            temperature=1.0, kind='hinge')


def test_kind_given_as_a_traced_index_matches_the_named_kind():
  rng = np.random.default_rng(1)
  s, t = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
  by_index = jax.jit(jax.vmap(
      lambda k: losses.soft_target_loss(s, t, temperature=2.5, kind=k)))(
          jnp.arange(len(losses.SOFT_LOSS_KINDS)))
  for i, kind in enumerate(losses.SOFT_LOSS_KINDS):
    np.testing.assert_allclose(by_index[i],
                               losses.soft_target_loss(s, t, temperature=2.5, kind=kind),
                               rtol=1e-6)
