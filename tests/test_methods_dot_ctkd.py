"""DOT (two momentum buffers, megvii-research/mdistiller mdistiller/engine/dot.py) and CTKD (a
temperature learned through a gradient reversal layer, zhengli97/CTKD models/temp_global.py and
train_student.py) against hand recursions and their authors' formulas, in one compiled train
step, and through a run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import checks
from kdjax import config as config_lib
from kdjax import losses, methods, models, objectives
from kdjax.errors import ConfigError
from kdjax.methods import ctkd
from kdjax.train import loop
from kdjax.train import optim
from kdjax.train import step as step_lib

SHAPE = (12, 12, 1)


def _batch(n=16):
  rng = np.random.default_rng(0)
  return {'images': rng.integers(0, 256, (n, *SHAPE)).astype(np.uint8),
          'labels': rng.integers(0, 10, n).astype(np.int32)}


def _pair():
  student = models.create('simplenn', num_classes=10)
  teacher = models.create('lightnn', num_classes=10)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)), train=False)
  return student, teacher, teacher_variables


def _step(student, teacher, tx, objective):
  return jax.jit(step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                          teacher_model=teacher, objective=objective))


# ---- DOT -------------------------------------------------------------------------------

# A quadratic split in two: task ½ wᵀA w, distillation ½ wᵀB w − cᵀw.
A = np.array([[2.0, 0.5], [0.5, 1.0]])
B = np.array([[1.0, -0.3], [-0.3, 3.0]])
C = np.array([1.0, -2.0])


def _quadratic_gradients(w):
  return {'task': {'w': jnp.asarray(A) @ w}, 'kd': {'w': jnp.asarray(B) @ w - jnp.asarray(C)}}


@pytest.mark.parametrize('weight_decay', [0.0, 0.01])
def test_dot_with_zero_delta_is_sgd_with_momentum(weight_decay):
  dot = optim.dot(0.1, momentum=0.9, delta=0.0, weight_decay=weight_decay)
  sgd = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(0.1, momentum=0.9))
  w_dot = w_sgd = {'w': jnp.float32([1.5, -0.5])}
  dot_state, sgd_state = dot.init(w_dot), sgd.init(w_sgd)
  for _ in range(6):
    grads = _quadratic_gradients(w_dot['w'])
    updates, dot_state = dot.update(grads, dot_state, w_dot)
    w_dot = optax.apply_updates(w_dot, updates)
    total = jax.tree.map(jnp.add, *_quadratic_gradients(w_sgd['w']).values())
    updates, sgd_state = sgd.update(total, sgd_state, w_sgd)
    w_sgd = optax.apply_updates(w_sgd, updates)
    np.testing.assert_allclose(w_dot['w'], w_sgd['w'], rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(w_dot['w'] - 1.5).max()) > 0.1  # it moved


def test_dot_keeps_two_buffers_as_the_hand_recursion():
  momentum, delta, weight_decay, lr = 0.9, 0.075, 0.01, 0.1
  # 'head' stands for an objective's own part: only the distillation term trains it.
  dot = optim.dot(lr, momentum=momentum, delta=delta, weight_decay=weight_decay,
                  kd_only={'body': False, 'head': True})
  rng = np.random.default_rng(0)
  task_grads, kd_grads = rng.normal(size=(4, 2, 3)), rng.normal(size=(4, 2, 3))
  w = {'body': np.array([0.5, -1.0, 2.0]), 'head': np.array([1.0, 0.0, -0.5])}
  params = jax.tree.map(jnp.float32, w)
  state = dot.init(params)
  b_task = {k: np.zeros(3) for k in w}
  b_kd = {k: np.zeros(3) for k in w}
  for k in range(4):
    g_task = {'body': task_grads[k, 0], 'head': task_grads[k, 1]}
    g_kd = {'body': kd_grads[k, 0], 'head': kd_grads[k, 1]}
    # The authors' dot(): task buffer at μ − Δ with the weight decay, kd buffer at μ + Δ;
    # a parameter that only the kd loss trains: one buffer at (μ − Δ + μ + Δ)/2 = μ, decayed.
    decay = {n: weight_decay * w[n] for n in w}
    b_task['body'] = (momentum - delta) * b_task['body'] + g_task['body'] + decay['body']
    b_kd['body'] = (momentum + delta) * b_kd['body'] + g_kd['body']
    b_kd['head'] = momentum * b_kd['head'] + g_kd['head'] + g_task['head'] + decay['head']
    w = {n: w[n] - lr * (b_task[n] + b_kd[n]) for n in w}
    grads = {'task': jax.tree.map(jnp.float32, g_task), 'kd': jax.tree.map(jnp.float32, g_kd)}
    updates, state = dot.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    buffers = state[0]
    for n in w:
      np.testing.assert_allclose(buffers.task[n], b_task[n], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(buffers.kd[n], b_kd[n], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(params[n], w[n], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(buffers.task['head'], 0.0)
  # Two buffers, not one: the task one forgets faster than the kd one.
  assert not np.allclose(b_task['body'] + b_kd['body'],
                         sum(momentum ** (3 - k) * (task_grads[k, 0] + kd_grads[k, 0])
                             for k in range(4)), atol=1e-3)


def _split_objective(task_weight, kd_weight):
  """task_weight · CE + kd_weight · KL soft term at T = 4, reporting its task part."""

  def loss(student, teacher, labels, hparams, own_params):
    del hparams, own_params
    task = task_weight * jnp.mean(losses.cross_entropy(student['logits'], labels))
    kd = kd_weight * jnp.mean(losses.soft_target_loss(student['logits'], teacher['logits'],
                                                      temperature=4.0))
    return task + kd, {objectives.TASK: task}

  return objectives.Objective(name='split', loss=loss)


def test_the_dot_step_gives_the_task_and_kd_gradients_separately():
  student, teacher, teacher_variables = _pair()
  dot = optim.dot(1.0, momentum=0.9, delta=0.075)
  state = step_lib.init_state(student, dot, jax.random.PRNGKey(0), SHAPE)
  hparams = {}
  before = jax.tree.map(np.array, teacher_variables)
  new_state, metrics = _step(student, teacher, dot, _split_objective(0.1, 0.9))(
      state, _batch(), teacher_variables, hparams)
  assert set(metrics) == {'loss', 'accuracy'}  # the task part is taken out
  # Each part's gradient, from a plain SGD step (lr 1: params − gradient) on that part alone.
  sgd = optax.sgd(1.0)
  plain = step_lib.init_state(student, sgd, jax.random.PRNGKey(0), SHAPE)
  for part, objective in (('task', _split_objective(0.1, 0.0)),
                          ('kd', _split_objective(0.0, 0.9))):
    moved, _ = _step(student, teacher, sgd, objective)(plain, _batch(), teacher_variables,
                                                       hparams)
    gradient = jax.tree.map(jnp.subtract, plain.params, moved.params)
    buffer = getattr(new_state.opt_state[0], part)['student']  # first step: the gradient
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                 buffer, gradient)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(gradient)) > 1e-4
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))


def test_dot_trains_a_method_run_in_one_compiled_step():
  student, teacher, teacher_variables = _pair()
  config = config_lib.default()
  config.optimizer.name, config.optimizer.learning_rate = 'dot', 0.05
  config.optimizer.weight_decay = 5e-4
  config.method.name = 'dist'
  tx = optim.optimizer(config, steps_per_epoch=10)
  assert isinstance(tx, optim.SplitGradientTransformation)
  objective = objectives.from_config(config, steps_per_epoch=10)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective)
  before = jax.tree.map(np.array, teacher_variables)
  hparams = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.9)}
  step = _step(student, teacher, tx, objective)
  new_state, metrics = step(state, _batch(), teacher_variables, hparams)
  new_state, metrics = step(new_state, _batch(), teacher_variables, hparams)
  assert np.isfinite(float(metrics['loss'])) and float(metrics['method']) > 0
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
  assert all(v > 0 for v in jax.tree.leaves(moved))
  buffers = new_state.opt_state[0]
  assert all(float(jnp.abs(a - b).max()) > 0 for a, b in zip(jax.tree.leaves(buffers.task),
                                                              jax.tree.leaves(buffers.kd)))
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))


def _valid(**changes):
  config = config_lib.default()
  config.teacher.workdir = '/some/teacher'
  config.optimizer.name = 'dot'
  return config_lib.override(config, changes)


def test_dot_configs_are_refused_in_one_line():
  checks.validate(_valid())
  for changes, message in [
      ({'teacher.workdir': ''}, "config.optimizer.name='dot': DOT splits"),
      ({'optimizer.dot_delta': 0.1}, 'config.optimizer.dot_delta=0.1: must be in [0, 0.1)'),
      ({'optimizer.dot_delta': -0.01}, 'config.optimizer.dot_delta=-0.01'),
      ({'optimizer.momentum': 0.5, 'optimizer.dot_delta': 0.5},
       'config.optimizer.dot_delta=0.5: must be in [0, 0.5)'),
      ({'optimizer.nesterov': True}, 'config.optimizer.nesterov=True'),
      ({'optimizer.grad_clip_norm': 1.0}, 'config.optimizer.grad_clip_norm=1.0')]:
    with pytest.raises(ConfigError) as error:
      checks.validate(_valid(**changes))
    assert str(error.value).startswith(message) and '\n' not in str(error.value), changes


def test_an_objective_without_a_task_term_is_refused_by_the_dot_step():
  student, teacher, teacher_variables = _pair()
  silent = objectives.Objective(
      name='silent', loss=lambda s, t, y, h, p: (jnp.mean(s['logits'] ** 2), {}))
  dot = optim.dot(0.1)
  state = step_lib.init_state(student, dot, jax.random.PRNGKey(0), SHAPE)
  with pytest.raises(ConfigError, match="objective 'silent' does not say"):
    _step(student, teacher, dot, silent)(state, _batch(), teacher_variables, {})


# ---- CTKD ------------------------------------------------------------------------------

def test_the_cosine_curriculum_by_hand():
  # λ(i) = (1 − cos(π i / 10)) / 2: the authors' CosineDecay(0, −1, 10) negated.
  want = {0: 0.0, 1: (1 - math.cos(math.pi / 10)) / 2, 2: (1 - math.cos(math.pi / 5)) / 2,
          5: 0.5, 10: 1.0, 11: 1.0, 240: 1.0}
  assert want[1] == pytest.approx(0.0244717, rel=1e-5)
  for epoch, value in want.items():
    authors = (math.cos(min(epoch, 10) * math.pi / 10) + 1.0) * 0.5 * (0 - (-1)) + (-1)
    assert value == pytest.approx(-authors, abs=1e-12)
    assert float(ctkd.curriculum_weight(epoch, epochs=10)) == pytest.approx(value, abs=1e-6)
  assert float(ctkd.curriculum_weight(3, epochs=10, max_weight=0.5)) == pytest.approx(
      0.5 * (1 - math.cos(0.3 * math.pi)) / 2, rel=1e-6)
  assert float(ctkd.curriculum_weight(0, epochs=0)) == 1.0
  # In training: the first epoch (0 ≤ step / steps_per_epoch < 1) is the authors' epoch 1.
  options = {'ctkd_epochs': 10.0, 'ctkd_max_strength': 1.0}
  assert [float(ctkd.METHOD.strength(e, options)) for e in (0.0, 0.99, 1.0, 9.5)] == (
      pytest.approx([want[1], want[1], want[2], 1.0], abs=1e-6))


def test_gradient_reversal_is_the_identity_with_minus_lambda_times_the_gradient():
  f = lambda x: jnp.sum(jnp.sin(x) * x)  # noqa: E731
  x = jnp.float32([0.3, -1.2, 2.0])
  np.testing.assert_array_equal(ctkd.gradient_reversal(x, 0.4), x)
  np.testing.assert_allclose(jax.grad(lambda v: f(ctkd.gradient_reversal(v, 0.4)))(x),
                             -0.4 * jax.grad(f)(x), rtol=1e-6)
  assert float(jax.grad(lambda s: f(ctkd.gradient_reversal(x, s)))(0.4)) == 0.0


@pytest.mark.parametrize('instance', [False, True])
def test_the_temperature_gradient_is_minus_lambda_times_the_kd_gradient(instance):
  rng = np.random.default_rng(1)
  s, t = jnp.float32(rng.normal(size=(5, 10)) * 2), jnp.float32(rng.normal(size=(5, 10)) * 3)
  labels = jnp.arange(5)
  config = config_lib.default()
  config.method.name, config.method.ctkd_instance = 'ctkd', instance
  objective = objectives.from_config(config, steps_per_epoch=10)
  params, _ = objective.init_with(jax.random.PRNGKey(0), {'logits': s}, {'logits': t})
  alpha, step = 0.9, 30  # the fourth epoch: λ = (1 − cos(0.4π)) / 2
  strength = (1 - math.cos(0.4 * math.pi)) / 2
  hparams = {'temperature': 4.0, 'alpha': alpha, 'step': step}

  def total(own_params, student_logits):
    return objective.loss({'logits': student_logits}, {'logits': t}, labels, hparams,
                          own_params)[0]

  (value, metrics) = objective.loss({'logits': s}, {'logits': t}, labels, hparams, params)
  assert float(metrics['ctkd_strength']) == pytest.approx(strength, rel=1e-6)
  grads, student_grad = jax.grad(total, argnums=(0, 1))(params, s)
  temperature = 1.0 + 20.0 * jax.nn.sigmoid(1.0)  # θ = 1 at the start, as the authors'
  assert float(metrics['temperature']) == pytest.approx(float(temperature), rel=1e-6)

  # The loss as a function of T (one T per example for the instance-wise variant).
  def plain(temperature_value, student_logits=s):
    return losses.distillation_loss(student_logits, t, labels, temperature=temperature_value,
                                    alpha=alpha)

  assert float(value) == pytest.approx(float(plain(temperature)), rel=1e-6)
  # The student's gradient is the plain one at the learned T: the reversal touches only T.
  np.testing.assert_allclose(student_grad, jax.grad(plain, argnums=1)(temperature, s),
                             rtol=1e-5, atol=1e-7)
  slope = float(jax.nn.sigmoid(1.0) * (1 - jax.nn.sigmoid(1.0))) * 20.0  # dT/dθ
  if not instance:
    d_loss_d_t = float(jax.grad(plain)(temperature))
    assert abs(d_loss_d_t) > 1e-4
    assert float(grads['method']['global_t']) == pytest.approx(
        -strength * d_loss_d_t * slope, rel=1e-4)
  else:
    # Per example: dL/dT_i, reversed, through the last layer's bias (∂θ_i/∂bias = 1).
    per_example = jax.grad(plain)(jnp.full((5,), temperature))
    assert float(grads['method']['Dense_1']['bias'][0]) == pytest.approx(
        -strength * float(jnp.sum(per_example)) * slope, rel=1e-4)


def test_a_per_example_temperature_is_each_row_at_its_own():
  rng = np.random.default_rng(2)
  s, t = jnp.float32(rng.normal(size=(3, 6))), jnp.float32(rng.normal(size=(3, 6)))
  temperatures = jnp.float32([1.0, 2.5, 7.0])
  for kind in ('kl', 'soft_ce', 'mse_probs', 'cosine'):
    got = losses.soft_target_loss(s, t, temperature=temperatures, kind=kind)
    want = [losses.soft_target_loss(s[i], t[i], temperature=float(temperatures[i]), kind=kind)
            for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=kind)


@pytest.mark.parametrize('instance', [False, True])
def test_ctkd_trains_student_and_temperature_in_one_compiled_step(instance):
  student, teacher, teacher_variables = _pair()
  config = config_lib.default()
  config.method.name, config.method.ctkd_instance = 'ctkd', instance
  objective = objectives.from_config(config, steps_per_epoch=2)
  tx = optax.sgd(0.05, momentum=0.9)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective)
  before = jax.tree.map(np.array, teacher_variables)
  hparams = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.9)}
  step = _step(student, teacher, tx, objective)
  new_state = state
  temperatures = []
  for _ in range(3):
    new_state, metrics = step(new_state, _batch(), teacher_variables, hparams)
    temperatures.append(float(metrics['temperature']))
  assert temperatures[0] == pytest.approx(1 + 20 * float(jax.nn.sigmoid(1.0)), rel=1e-6)
  assert temperatures[-1] != temperatures[0]  # the temperature moves
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
  assert all(v > 0 for v in jax.tree.leaves(moved))
  own = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.objective_params,
                     state.objective_params)
  assert max(jax.tree.leaves(own)) > 0
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))


def test_dot_with_ctkd_in_a_vectorised_sweep_equals_each_member_alone():
  student, teacher, teacher_variables = _pair()
  config = config_lib.default()
  config.optimizer.name, config.optimizer.learning_rate = 'dot', 0.05
  config.method.name = 'ctkd'
  tx = optim.optimizer(config, steps_per_epoch=10)
  objective = objectives.from_config(config, steps_per_epoch=10)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective)
  train_step = step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                        teacher_model=teacher, objective=objective)
  alphas = jnp.float32([0.5, 0.9])
  stacked = jax.tree.map(lambda x: jnp.stack([x, x]), state)
  together, _ = jax.jit(step_lib.vectorise(train_step))(
      stacked, _batch(), teacher_variables, {'temperature': jnp.float32([4.0, 4.0]),
                                             'alpha': alphas})
  for m in range(2):
    alone, _ = jax.jit(train_step)(state, _batch(), teacher_variables,
                                   {'temperature': jnp.float32(4.0), 'alpha': alphas[m]})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[m], b, rtol=1e-5, atol=1e-6),
                 together, alone)
    # The temperature is the objective's own part: one buffer, at μ, in the kd slot.
    buffers = alone.opt_state[0]
    assert float(buffers.task['objective']['method']['global_t']) == 0.0
    assert float(buffers.kd['objective']['method']['global_t']) != 0.0
    assert float(alone.objective_params['method']['global_t']) != 1.0


def test_ctkd_configs_are_refused_in_one_line():
  config = config_lib.default()
  config.teacher.workdir, config.method.name = '/some/teacher', 'ctkd'
  checks.validate(config)
  for changes, message in [
      ({'distill.alpha': 0.0}, "config.method.name='ctkd' learns the temperature"),
      ({'sweep.temperature': (2.0, 4.0)}, 'config.sweep.temperature=(2.0, 4.0)'),
      ({'distill.kind': 'mse_logits'}, "config.distill.kind='mse_logits' has no temperature"),
      ({'method.ctkd_t_start': 0.0}, 'config.method.ctkd_t_start=0.0'),
      ({'method.ctkd_epochs': -1.0}, 'config.method.ctkd_epochs=-1.0')]:
    changed = config_lib.override(config_lib.from_json_dict(config_lib.to_json_dict(config)),
                                  changes)
    with pytest.raises(ConfigError) as error:
      checks.validate(changed)
    assert str(error.value).startswith(message) and '\n' not in str(error.value), changes


def _config(model, data_dir, **changes):
  c = config_lib.default()
  c.dataset, c.data_dir = 'fashion_mnist', data_dir
  c.model = config_lib.ml_collections.ConfigDict({'name': model})
  c.num_epochs, c.batch_size, c.eval_batch_size, c.train_examples = 2, 64, 500, 512
  c.optimizer.learning_rate = 0.01
  return config_lib.override(c, changes)


@pytest.mark.slow
def test_dot_and_instance_ctkd_run_end_to_end(mnist_data_dir, tmp_path):
  teacher_dir = str(tmp_path / 'teacher')
  loop.train_and_evaluate(_config('lightnn', mnist_data_dir, num_epochs=1), teacher_dir)
  student = _config('simplenn', mnist_data_dir, **{
      'teacher.workdir': teacher_dir, 'optimizer.name': 'dot', 'optimizer.learning_rate': 0.05,
      'method.name': 'ctkd', 'method.ctkd_instance': True, 'method.ctkd_epochs': 2.0})
  results = loop.train_and_evaluate(student, str(tmp_path / 'student'))
  assert results['teacher']['cached'] is True  # logits only: the teacher's are cached
  history = results['history']
  assert [h['train_ctkd_strength'] for h in history] == pytest.approx([0.5, 1.0], abs=1e-6)
  temperatures = [h['train_temperature'] for h in history]
  assert all(1.0 < v < 21.0 for v in temperatures) and temperatures[0] != temperatures[1]
  # 16 steps from a 40% teacher at T ≈ 15 (near-uniform soft targets): above chance (10%).
  assert results['test_accuracy'] > 0.15
  assert methods.get('ctkd') is ctkd.METHOD
