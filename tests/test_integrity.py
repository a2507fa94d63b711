"""Results that can be trusted: evaluation cadence, selection on validation,
divergence inside a sweep, teachers refused for the wrong data, objectives as values.

Small MLPs on a few thousand real MNIST images, so every run takes seconds.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mnist_student
from kdjax import config as config_lib
from kdjax import losses, objectives, report
from kdjax.errors import ConfigError
from kdjax.train import checkpoint, loop


def _config(data_dir, **changes):
  c = mnist_student.get_config()
  c.data_dir = data_dir
  c.model.hidden = (32,)
  c.train_examples = 2048
  c.batch_size = 128
  c.num_epochs = 1
  return config_lib.override(c, changes)


def test_eval_every_two_finishes_and_plots_evaluated_epochs_only(mnist_data_dir, tmp_path):
  results = loop.train_and_evaluate(
      _config(mnist_data_dir, num_epochs=4, eval_every=3, validation_fraction=0.1),
      str(tmp_path / 'run'))
  evaluated = [h['epoch'] for h in results['history'] if 'test_accuracy' in h]
  assert evaluated == [3, 4]  # every third epoch, and always the last
  assert [h['epoch'] for h in results['history'] if 'validation_accuracy' in h] == [3, 4]
  assert len(results['history']) == 4
  assert os.path.getsize(tmp_path / 'run' / 'curves.png') > 10_000
  # The epoch chosen on validation, with that epoch's test accuracy beside it.
  best = max((h for h in results['history'] if 'validation_accuracy' in h),
             key=lambda h: h['validation_accuracy'])
  assert results['best_validation_epoch'] == best['epoch']
  assert results['test_accuracy_at_best_validation'] == best['test_accuracy']
  assert results['test_accuracy'] == results['history'][-1]['test_accuracy']
  assert 'best_test_accuracy' not in results
  assert results['oracle']['best_test_accuracy'] == max(
      h['test_accuracy'] for h in results['history'] if 'test_accuracy' in h)
  assert results['validation'] == {'examples': 6000, 'fraction': 0.1, 'seed': 0}


def test_a_diverging_member_is_masked_and_the_others_train_on(mnist_data_dir, tmp_path):
  config = _config(mnist_data_dir, num_epochs=2, validation_fraction=0.1)
  config.sweep.learning_rate = (1e-3, 1e30)  # the second member's updates overflow
  config.sweep.mode = 'vmap'
  results = loop.train_and_evaluate(config, str(tmp_path / 'sweep'))
  healthy, broken = results['members']
  assert not healthy['diverged'] and healthy['test_accuracy'] > 0.8
  assert broken['diverged'] and broken['diverged_at_step'] >= 1
  assert results['diverged'] == [broken['label']]
  assert results['selection']['chosen'] == healthy['label']
  assert 'test_accuracy' not in results  # no best-of-members headline
  # The diverged member keeps its last finite weights (those whose next loss
  # was not finite: updates stop at that step), as a complete run.
  member = report.read_json(os.path.join(broken['workdir'], 'results.json'))
  assert member['diverged'] and member['diverged_at_step'] == broken['diverged_at_step']
  variables = checkpoint.restore_variables(broken['workdir'], 2)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(variables))


def test_a_sweep_reports_seeds_and_a_member_chosen_on_validation(mnist_data_dir, tmp_path):
  config = _config(mnist_data_dir, validation_fraction=0.1)
  config.sweep.seed = (0, 1, 2)
  config.sweep.mode = 'vmap'
  results = loop.train_and_evaluate(config, str(tmp_path / 'sweep'))
  rows = results['members']
  assert [r['data_seed'] for r in rows] == [0, 1, 2]  # init and data order vary together
  assert len({r['test_accuracy'] for r in rows}) == 3
  (group,) = results['groups']
  accuracies = [r['test_accuracy'] for r in rows]
  assert group['seeds'] == [0, 1, 2]
  assert group['test_accuracy_mean'] == pytest.approx(np.mean(accuracies))
  assert group['test_accuracy_std'] == pytest.approx(np.std(accuracies, ddof=1))
  chosen = max(rows, key=lambda r: r['validation_accuracy'])
  assert results['selection'] == {
      'what': 'sweep member', 'chosen': chosen['label'], 'selected_on': 'validation',
      'validation_accuracy': chosen['validation_accuracy'],
      'test_accuracy': chosen['test_accuracy']}


def test_a_teacher_of_another_dataset_is_refused_before_writing(mnist_data_dir, tmp_path):
  teacher = _config(mnist_data_dir, dataset='fashion_mnist', train_examples=512)
  loop.train_and_evaluate(teacher, str(tmp_path / 'teacher'))
  student = _config(mnist_data_dir, **{'teacher.workdir': str(tmp_path / 'teacher')})
  with pytest.raises(ConfigError, match='trained on fashion_mnist.*allow_other_dataset'):
    loop.train_and_evaluate(student, str(tmp_path / 'student'))
  assert not os.path.exists(tmp_path / 'student')
  student.teacher.allow_other_dataset = True
  results = loop.train_and_evaluate(student, str(tmp_path / 'student'))
  assert results['teacher']['dataset'] == 'fashion_mnist'
  assert results['teacher']['other_dataset'] is True


@pytest.mark.parametrize('changes, message', [
    ({'augment.max_shift': 2, 'teacher.cache': True}, 'cached teacher logits'),
    ({'augment.flip': True}, 'grayscale'),
])
def test_confounded_settings_are_refused(mnist_data_dir, tmp_path, changes, message):
  config = _config(mnist_data_dir, **changes)
  config.teacher.workdir = str(tmp_path)  # validation refuses before the teacher is read
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


def test_flips_on_grayscale_run_when_asked_for(mnist_data_dir, tmp_path):
  config = _config(mnist_data_dir, **{'augment.flip': True, 'augment.allow_flip': True})
  assert loop.train_and_evaluate(config, str(tmp_path / 'run'))['test_accuracy'] > 0.5


@objectives.register('test_frozen')
def _frozen(config, *, swept_kind=False):
  """A test objective whose loss has no gradient: a student trained with it learns nothing."""
  del config, swept_kind

  def loss(student, teacher, labels, hparams, own_params):
    del teacher, labels, hparams, own_params
    return 0.0 * jnp.mean(student['logits']), {}

  return objectives.Objective(name='test_frozen', loss=loss)


def test_a_registered_objective_trains_without_touching_the_loop(mnist_data_dir, tmp_path):
  learned = loop.train_and_evaluate(_config(mnist_data_dir), str(tmp_path / 'kd'))
  frozen = loop.train_and_evaluate(_config(mnist_data_dir, **{'distill.objective': 'test_frozen'}),
                                   str(tmp_path / 'frozen'))
  assert frozen['objective'] == 'test_frozen'
  assert learned['test_accuracy'] > 0.6 > 0.3 > frozen['test_accuracy']


def test_an_objective_with_its_own_parameters_trains_them_not_the_teacher():
  from kdjax import models
  from kdjax.train import step as step_lib
  import optax

  def loss(student, teacher, labels, hparams, own_params):
    del hparams
    # A learned projection of the student's logits regressed on the teacher's.
    hint = jnp.mean((student['logits'] @ own_params['w'] - teacher['logits']) ** 2)
    return jnp.mean(losses.cross_entropy(student['logits'], labels)) + hint, {'hint': hint}

  objective = objectives.Objective(name='hint', loss=loss,
                                   init=lambda rng: {'w': jnp.eye(10)})
  model = models.create('mlp', num_classes=10, hidden=(16,))
  teacher_model = models.create('mlp', num_classes=10, hidden=(8,))
  tx = optax.sgd(0.1)
  state = step_lib.init_state(model, tx, jax.random.PRNGKey(0), (28, 28, 1), objective)
  teacher = step_lib.init_state(teacher_model, tx, jax.random.PRNGKey(1), (28, 28, 1))
  teacher_variables = {'params': teacher.params}
  step = jax.jit(step_lib.make_train_step(model=model, tx=tx, mean=(0.5,), std=(0.25,),
                                          teacher_model=teacher_model, objective=objective))
  rng = np.random.default_rng(0)
  batch = {'images': rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8),
           'labels': rng.integers(0, 10, 32).astype(np.int32)}
  new_state, metrics = step(state, batch, teacher_variables, {})
  assert float(metrics['hint']) > 0
  assert not np.allclose(new_state.objective_params['w'], np.eye(10))
  assert not np.allclose(new_state.params['head']['kernel'], state.params['head']['kernel'])
  assert jax.tree.all(jax.tree.map(np.array_equal, teacher_variables,
                                   {'params': teacher.params}))
