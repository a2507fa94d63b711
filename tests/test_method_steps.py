"""Distillation methods inside the one compiled train step, and through a whole run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import config as config_lib
from kdjax import methods, models, objectives
from kdjax.errors import ConfigError
from kdjax.train import loop
from kdjax.train import step as step_lib

SHAPE = (12, 12, 1)


def _batch(n=16):
  rng = np.random.default_rng(0)
  return {'images': rng.integers(0, 256, (n, *SHAPE)).astype(np.uint8),
          'labels': rng.integers(0, 10, n).astype(np.int32)}


@pytest.mark.parametrize('name', sorted(methods.METHODS))
def test_every_method_trains_the_student_in_one_compiled_step(name, patches_conv):
  student = models.create('simplenn', num_classes=10)
  teacher = models.create('lightnn', num_classes=10)
  teacher_variables = teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)), train=False)
  config = config_lib.default()
  config.method.name = name
  config.method.dkd_warmup_epochs = 0.0
  config.distill.alpha = 0.0  # cross-entropy + the method, as RepDistiller runs them
  objective = objectives.from_config(config, steps_per_epoch=10)
  tx = optax.sgd(0.05)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE)
  train_step = jax.jit(step_lib.make_train_step(
      model=student, tx=tx, mean=(0.5,), std=(0.25,), teacher_model=teacher,
      objective=objective, max_shift=1))
  hparams = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.0)}
  before = jax.tree.map(np.array, teacher_variables)
  new_state, metrics = train_step(state, _batch(), teacher_variables, hparams)
  term = float(metrics['method'])
  assert np.isfinite(term) and term > 0, name
  # The loss is CE + published weight x method.
  ce_only = objectives.from_config(config_lib.override(config, {'method.name': ''}))
  plain = jax.jit(step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                           teacher_model=teacher, objective=ce_only,
                                           max_shift=1))
  _, plain_metrics = plain(state, _batch(), teacher_variables, hparams)
  assert float(metrics['loss']) == pytest.approx(
      float(plain_metrics['loss']) + methods.METHODS[name].published_weight * term, rel=1e-5)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, state.params)
  assert all(v > 0 for v in jax.tree.leaves(moved)), name
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))


def test_dkd_ramps_in_over_its_warmup():
  config = config_lib.default()
  config.method.name, config.method.dkd_warmup_epochs = 'dkd', 4.0
  objective = objectives.from_config(config, steps_per_epoch=10)
  logits = jnp.float32(np.random.default_rng(1).normal(size=(4, 10)))
  labels = jnp.arange(4)
  terms = [float(objective.loss({'logits': logits}, {'logits': 2 * logits}, labels,
                                {'temperature': 4.0, 'alpha': 0.0, 'step': step}, {})[1]['method'])
           for step in (0, 10, 20, 40, 80)]
  full = float(methods.dkd_loss(logits, 2 * logits, labels))
  assert terms == pytest.approx([0.0, full / 4, full / 2, full, full], rel=1e-5)


def _config(model, data_dir, **changes):
  c = config_lib.default()
  c.dataset, c.data_dir = 'fashion_mnist', data_dir
  c.model = config_lib.ml_collections.ConfigDict({'name': model})
  c.num_epochs, c.batch_size, c.eval_batch_size, c.train_examples = 1, 64, 500, 512
  c.optimizer.learning_rate = 0.01
  return config_lib.override(c, changes)


@pytest.mark.slow
def test_a_method_run_end_to_end_and_its_refusals(mnist_data_dir, tmp_path):
  teacher_dir = str(tmp_path / 'teacher')
  loop.train_and_evaluate(_config('lightnn', mnist_data_dir), teacher_dir)
  student = _config('simplenn', mnist_data_dir, **{
      'teacher.workdir': teacher_dir, 'method.name': 'at', 'distill.alpha': 0.0})
  results = loop.train_and_evaluate(student, str(tmp_path / 'at'))
  assert results['method']['name'] == 'at' and results['method']['weight'] == 1000.0
  assert results['teacher']['cached'] is False  # features are not cached: run in the step
  assert results['test_accuracy'] > 0.3
  assert all(np.isfinite(h['train_method']) for h in results['history'])

  refusals = [
      ({'method.name': 'at', 'model.name': 'mlp'}, 'cannot pair student mlp'),
      ({'method.name': 'xyz'}, "config.method.name='xyz': unknown"),
      ({'method.name': 'rkd', 'teacher.workdir': ''}, 'needs config.teacher.workdir'),
      ({'method.name': 'pkt', 'teacher.cache': True}, "taps the teacher's features"),
  ]
  for changes, message in refusals:
    workdir = tmp_path / f'refused_{len(os.listdir(tmp_path))}'
    config = _config('simplenn', mnist_data_dir, **{'teacher.workdir': teacher_dir, **changes})
    if changes.get('model.name') == 'mlp':
      config.model = config_lib.ml_collections.ConfigDict({'name': 'mlp', 'hidden': (32,)})
    with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace("'", "'")):
      loop.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()
  config_json = json.loads((tmp_path / 'at' / 'config.json').read_text())
  assert config_json['method']['name'] == 'at'
