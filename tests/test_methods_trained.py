"""Methods with parts of their own (kdjax.methods.trained): one compiled step each, the
parts and state in the student's checkpoint, CRD's bank update and sampling by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import checks
from kdjax import config as config_lib
from kdjax import methods, models, objectives
from kdjax.errors import ConfigError
from kdjax.methods import trained
from kdjax.train import checkpoint as checkpoint_lib
from kdjax.train import step as step_lib

SHAPE = (8, 8, 3)
N = 40  # training examples the per-example state covers


def _batch(n=8):
  rng = np.random.default_rng(0)
  return {'images': rng.integers(0, 256, (n, *SHAPE)).astype(np.uint8),
          'labels': (np.arange(n) % 4).astype(np.int32),
          'index': rng.permutation(N)[:n].astype(np.int32)}


@pytest.fixture(scope='module')
def pair():
  # Small CIFAR-style ResNets (stem + 3 stages, BatchNorm), equal channels for FSP.
  student = models.create('resnet8', num_classes=4)
  teacher = models.create('resnet8', num_classes=4)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)), train=False)
  return student, teacher, teacher_variables


_STEPS = {}


def _setup(name, pair, **changes):
  """(fresh state, compiled step) of `name`; one compilation per method and changes."""
  key = (name, tuple(sorted(changes.items())))
  if key not in _STEPS:
    _STEPS[key] = _build(name, pair, **changes)
  return _STEPS[key]


def _build(name, pair, **changes):
  student, teacher, teacher_variables = pair
  config = config_lib.default()
  config.method.name, config.distill.alpha = name, 0.0
  config.method.crd_nce_k = 16
  config.num_epochs = 3
  config = config_lib.override(config, changes)
  train_labels = (np.arange(N) % 4).astype(np.int32)
  objective = objectives.from_config(config, steps_per_epoch=2, train_labels=train_labels)
  tx = optax.sgd(0.05)
  teacher_outputs = step_lib.output_shapes(teacher, teacher_variables, SHAPE)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective,
                              teacher_outputs=teacher_outputs)
  step = jax.jit(step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                          teacher_model=teacher, objective=objective))
  return state, step


HPARAMS = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.0)}


def _changed(a, b):
  return [float(jnp.abs(x - y).max()) > 0 for x, y in zip(jax.tree.leaves(a),
                                                         jax.tree.leaves(b))]


@pytest.mark.parametrize('name', sorted(trained.TRAINED))
def test_every_trained_method_updates_student_and_its_parts_not_the_teacher(name, pair):
  _, _, teacher_variables = pair
  teacher_before = jax.tree.map(np.array, teacher_variables)
  changes = {'method.init_epochs': 1} if trained.TRAINED[name].init_stage else {}
  if name == 'reviewkd':  # no warm-up: its term is 0 at step 0 otherwise
    changes['method.reviewkd_warmup_epochs'] = 0.0
  state, step = _setup(name, pair, **changes)
  new_state, metrics = step(state, _batch(), teacher_variables, HPARAMS)
  assert np.isfinite(float(metrics['loss'])), name
  jax.tree.map(np.testing.assert_array_equal, teacher_before,
               jax.tree.map(np.array, teacher_variables))
  # The student moves, except in FT's init stage (only the paraphraser learns there).
  assert any(_changed(new_state.params, state.params)) == (name != 'ft'), name
  if name in ('fsp', 'ab'):  # train the student in their init stage only (equal shapes here:
    # no AB connector)
    assert float(metrics['method_init']) > 0 and new_state.objective_params == {
        'base': {}, 'method': {}}
    return
  moved = _changed(new_state.objective_params['method'], state.objective_params['method'])
  if name == 'ft':  # init stage: the paraphraser learns, the translator waits
    assert float(metrics['method_init']) > 0
    paraphraser = _changed(new_state.objective_params['method']['paraphraser'],
                           state.objective_params['method']['paraphraser'])
    assert all(paraphraser)
  else:
    assert all(moved), name
    assert float(metrics['method']) > 0, name
  if name in ('fitnet', 'ft', 'crd', 'reviewkd'):  # BatchNorm statistics or memory banks: stepped, not trained
    assert any(_changed(new_state.objective_state, state.objective_state)), name
  opt_leaves = {x.shape for x in jax.tree.leaves(new_state.opt_state)}
  for leaf in jax.tree.leaves(new_state.objective_state):
    if leaf.ndim == 2 and leaf.shape[0] == N:  # a memory bank has no optimizer moments
      assert leaf.shape not in opt_leaves


def test_ft_after_its_init_stage_trains_the_translator_not_the_paraphraser(pair):
  _, _, teacher_variables = pair
  state, step = _setup('ft', pair, **{'method.init_epochs': 1})
  state = jax.tree.map(jnp.array, state).replace(step=jnp.int32(2))  # past one epoch of two steps
  new_state, metrics = step(state, _batch(), teacher_variables, HPARAMS)
  before, after = state.objective_params['method'], new_state.objective_params['method']
  assert not any(_changed(after['paraphraser'], before['paraphraser']))
  assert all(_changed(after['translator'], before['translator']))
  assert float(metrics['method']) > 0


def test_crd_bank_update_and_loss_by_hand():
  rng = np.random.default_rng(1)
  memory = rng.normal(size=(6, 4))
  memory /= np.linalg.norm(memory, axis=1, keepdims=True)
  index = np.array([4, 1])
  v = rng.normal(size=(2, 4))
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  updated = jax.jit(trained.crd_memory_update)(jnp.float32(memory), jnp.int32(index),
                                                jnp.float32(v))
  expected = memory.copy()
  for row, i in enumerate(index):
    mixed = 0.5 * memory[i] + 0.5 * v[row]
    expected[i] = mixed / np.sqrt(np.sum(mixed ** 2))
  np.testing.assert_allclose(np.asarray(updated), expected, rtol=1e-6, atol=1e-7)
  # Scores: exp(<m_j, v> / τ) over the contrast rows, gathered or from all products alike.
  contrast = np.array([[4, 0, 2], [1, 5, 5]])
  by_hand = np.exp(np.einsum('bkd,bd->bk', memory[contrast], v) / 0.07)
  for dense in (True, False):
    got = trained.crd_scores(jnp.float32(memory), jnp.float32(v), jnp.int32(contrast),
                             temperature=0.07, dense=dense)
    np.testing.assert_allclose(np.asarray(got), by_hand, rtol=1e-4)
  # ContrastLoss: P_0 the positive's score, K = 3 negatives, N = 6.
  scores = rng.uniform(0.01, 0.5, size=(2, 4))
  noise = 3 / 6
  expected_loss = -np.sum(np.log(scores[:, 0] / (scores[:, 0] + noise + 1e-7))
                          + np.sum(np.log(noise / (scores[:, 1:] + noise + 1e-7)), axis=1)) / 2
  assert float(trained.crd_nce_loss(jnp.float32(scores), num_data=6)) == pytest.approx(
      expected_loss, rel=1e-5)


def test_crd_negatives_come_from_other_classes_uniformly():
  train_labels = np.array([2, 0, 1, 0, 2, 2, 1, 0, 0, 1])
  labels = jnp.int32([0, 2])
  draws = np.asarray(trained.crd_negatives(jax.random.PRNGKey(0), labels, train_labels, 6000))
  for row, label in enumerate([0, 2]):
    others = np.flatnonzero(train_labels != label)
    assert set(np.unique(draws[row])) == set(others)
    counts = np.bincount(draws[row], minlength=10)[others]
    np.testing.assert_allclose(counts / 6000, 1 / len(others), atol=0.03)


def test_crd_first_step_fixes_z_and_moves_the_banks_of_the_batch_only(pair):
  _, _, teacher_variables = pair
  state, step = _setup('crd', pair)
  batch = _batch()
  assert float(state.objective_state['z_student']) == -1.0
  new_state, _ = step(state, batch, teacher_variables, HPARAMS)
  z = float(new_state.objective_state['z_student'])
  assert z > 0
  rows = np.any(np.asarray(new_state.objective_state['memory_student'])
                != np.asarray(state.objective_state['memory_student']), axis=1)
  np.testing.assert_array_equal(np.flatnonzero(rows), np.sort(batch['index']))
  np.testing.assert_allclose(np.linalg.norm(
      np.asarray(new_state.objective_state['memory_teacher'])[batch['index']], axis=1), 1.0,
      rtol=1e-5)
  third, _ = step(new_state, batch, teacher_variables, HPARAMS)
  assert float(third.objective_state['z_student']) == z  # fixed after the first step


def test_objective_state_survives_a_checkpoint(pair, tmp_path):
  _, _, teacher_variables = pair
  state, step = _setup('fitnet', pair)
  state, _ = step(state, _batch(), teacher_variables, HPARAMS)
  checkpoints = checkpoint_lib.Checkpoints(str(tmp_path), keep=1)
  checkpoints.save(1, state, {'epoch': 1})
  fresh, _ = _setup('fitnet', pair)
  restored, _ = checkpoints.restore(1, fresh)
  checkpoints.close()
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored.objective_state),
               jax.tree.map(np.asarray, state.objective_state))
  assert jax.tree.leaves(restored.objective_state)


def test_fsp_and_cc_by_hand():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 2, 2, 5))
  pooled = a.reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4))
  g = np.einsum('bpi,bpj->bji', pooled.reshape(2, 4, 3), b.reshape(2, 4, 5)) / 4
  (got,) = trained.fsp_matrices([jnp.float32(a), jnp.float32(b)])
  np.testing.assert_allclose(np.asarray(got), g, rtol=1e-5, atol=1e-6)
  s, t = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  delta = np.abs(s - t)
  expected = np.mean([delta[i] @ delta[i + 1] for i in range(4)])
  assert float(trained.cc_loss(jnp.float32(s), jnp.float32(t))) == pytest.approx(expected,
                                                                                 rel=1e-5)


def test_refusals():
  config = config_lib.default()
  config.method.name, config.teacher.workdir = 'crd', '/nowhere'
  config.input.pipeline = 'stream'
  with pytest.raises(ConfigError, match='streamed input cannot index'):
    methods.registry.check_config(config)
  config = config_lib.default()
  config.method.name, config.teacher.workdir = 'vid', '/nowhere'
  config.method.init_epochs = 2
  with pytest.raises(ConfigError, match='has no init stage'):
    methods.registry.check_config(config)
  config = config_lib.default()
  config.method.name, config.teacher.workdir = 'reviewkd', '/nowhere'
  config.method.reviewkd_warmup_epochs = -1.0
  with pytest.raises(ConfigError, match=r'reviewkd_warmup_epochs=-1.0 must be >= 0'):
    methods.registry.check_config(config)


def test_a_vectorised_sweep_over_the_method_weight(pair):
  """Two members, weights 0 and 100, one program: each member's loss is CE + its weight ×
  its term, and each keeps its own regressor and BatchNorm statistics."""
  student, teacher, teacher_variables = pair
  config = config_lib.default()
  config.method.name, config.distill.alpha = 'fitnet', 0.0
  config.teacher.workdir, config.sweep.method_weight, config.sweep.mode = '/t', (0.0, 100.0), 'vmap'
  checks.validate(config)
  from kdjax.train import sweep as sweep_lib
  members = sweep_lib.Members.of(config)
  objective = objectives.from_config(config, steps_per_epoch=2)
  tx = optax.sgd(0.05)
  teacher_outputs = step_lib.output_shapes(teacher, teacher_variables, SHAPE)
  state = members.init_state(lambda seed: step_lib.init_state(
      student, tx, jax.random.PRNGKey(seed), SHAPE, objective, teacher_outputs=teacher_outputs))
  step = jax.jit(step_lib.vectorise(step_lib.make_train_step(
      model=student, tx=tx, mean=(0.5,), std=(0.25,), teacher_model=teacher,
      objective=objective), input_groups=members.input_groups))
  hparams = jax.tree.map(jnp.asarray, members.hparams())
  new_state, metrics = step(state, _batch(), teacher_variables, hparams)
  loss, term = np.asarray(metrics['loss']), np.asarray(metrics['method'])
  np.testing.assert_allclose(term[0], term[1], rtol=1e-5)  # same seed, same inputs
  np.testing.assert_allclose(loss[1] - loss[0], 100.0 * term[1], rtol=1e-4)
  kernel = lambda s: np.asarray(jax.tree.leaves(s.objective_params['method'])[0])  # noqa: E731
  assert np.array_equal(kernel(new_state)[0], kernel(state)[0])  # weight 0: no gradient
  assert not np.array_equal(kernel(new_state)[1], kernel(state)[1])


def test_ab_by_hand_and_its_connectors():
  rng = np.random.default_rng(3)
  maps_s = [rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 2, 2, 3))]
  maps_t = [rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 2, 2, 3))]
  expected = 0.0
  for i, (s, t) in enumerate(zip(maps_s, maps_t)):
    l2 = ((s + 1) ** 2 * ((s > -1) & (t <= 0)) + (s - 1) ** 2 * ((s <= 1) & (t > 0))).sum()
    expected += 2.0 ** (i - 1) * l2 / 2 / 1000 * 3
  got = trained.ab_loss([jnp.float32(m) for m in maps_s], [jnp.float32(m) for m in maps_t])
  assert float(got) == pytest.approx(expected, rel=1e-5)
  # Unequal channels: a conv + BatchNorm connector per pair, its statistics in the state.
  student = {'stage1': jnp.zeros((2, 8, 8, 4)), 'stage1_preact': jnp.zeros((2, 8, 8, 4)),
             'stem': jnp.zeros((2, 8, 8, 4))}
  teacher = {'stage1': jnp.zeros((2, 4, 4, 6)), 'stage1_preact': jnp.zeros((2, 4, 4, 6)),
             'stem': jnp.zeros((2, 8, 8, 6))}
  context = trained.Context(options={'ab_margin': 1.0})
  params, state = trained.TRAINED['ab'].init(jax.random.PRNGKey(0), student, teacher, context)
  assert params['pair0']['Conv_0']['kernel'].shape == (3, 3, 4, 6)  # 2x larger: 3x3 stride 2
  assert set(state['pair0']['BatchNorm_0']) == {'mean', 'var'}
  with pytest.raises(ConfigError, match='pre-activation'):
    trained.TRAINED['ab'].init(jax.random.PRNGKey(0), {'stage1': student['stage1'],
                                                       'stem': student['stem']},
                               teacher, context)
