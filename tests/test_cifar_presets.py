"""Every teacher → student pair of the full-size CIFAR presets takes one real train step.

The step is the one the launchers run: the preset's recipe (optimizer, weight
decay, schedule, 4-pixel pad-and-crop, flips), the teacher inside the step,
BatchNorm statistics updated, on a batch of `tfds.testing.mock_data` CIFAR-10.
The step is compiled at XLA's lowest backend optimisation level: the same
program, compiled in a fraction of the time (ResNet-101 takes about a minute to
compile fully on a 2-core CPU).
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import common
from kdjax import data, models
from kdjax.train import optim
from kdjax.train import step as step_lib

pytestmark = pytest.mark.slow  # full-size networks compiled: `make test-all`

LAUNCHERS = ('cifar_kd', 'reversed_kd', 'self_kd', 'heterogeneous_kd', 'soft_loss_study')


def _pairs():
  """(teacher, student, recipe) of every non-cpu preset, each pair once."""
  pairs = {}
  for launcher in LAUNCHERS:
    for name, preset in importlib.import_module(f'experiments.{launcher}').PRESETS.items():
      if preset['dataset'] != 'cifar10':
        continue
      recipe = preset.get('recipe', 'sgd')
      if 'students' in preset:
        found = [(preset['teacher'], s) for s in preset['students']]
      elif 'student' in preset:
        found = [(preset['teacher'], preset['student'])]
      elif 'models' in preset:
        a, b = preset['models']
        found = [(a, b), (b, a)]
      else:
        found = [(preset['model'], preset['model'])]
      for teacher, student in found:
        pairs.setdefault((teacher, student, recipe), f'{launcher}:{name}')
  return sorted(pairs.items())


PAIRS = _pairs()


def test_the_presets_cover_the_seeds_models():
  models_used = {name for (teacher, student, _), _ in PAIRS for name in (teacher, student)}
  assert models_used == {'resnet101', 'resnet18', 'resnet10', 'resnet3', 'resnet4', 'resnet5',
                         'resnet6', 'resnet11', 'resnet20', 'vgg13', 'lightnn', 'simplenn'}


@pytest.fixture(scope='module')
def cifar_batch(tmp_path_factory):
  with tfds.testing.mock_data(num_examples=4):
    dataset = data.load('cifar10', data_dir=str(tmp_path_factory.mktemp('tfds')))
  return dataset, {'images': np.asarray(dataset.train.images[:4]),
                   'labels': np.asarray(dataset.train.labels[:4], np.int32)}


def _create(config, name):
  options = {k: v for k, v in config.model.to_dict().items() if k != 'name'}
  return models.create(name, num_classes=10, **options)


@pytest.mark.parametrize('pair, preset', PAIRS, ids=[f'{t}->{s}' for (t, s, _), _ in PAIRS])
def test_one_distillation_step_of_each_preset_pair(pair, preset, cifar_batch):
  teacher_name, student_name, recipe = pair
  dataset, batch = cifar_batch
  config = common.Setup(dataset='cifar10', recipe=recipe, epochs=200).config(student_name)
  assert config.augment.max_shift == 4 and config.augment.flip, preset
  student, teacher = _create(config, student_name), _create(config, teacher_name)
  tx = optim.optimizer(config, steps_per_epoch=390)
  state = step_lib.init_fast(lambda: step_lib.init_state(
      student, tx, jax.random.PRNGKey(0), dataset.image_shape))
  teacher_state = step_lib.init_fast(lambda: step_lib.init_state(
      teacher, tx, jax.random.PRNGKey(1), dataset.image_shape))
  teacher_variables = {'params': teacher_state.params, **teacher_state.model_state}
  train_step = step_lib.make_train_step(
      model=student, tx=tx, mean=dataset.mean, std=dataset.std,
      max_shift=config.augment.max_shift, flip=config.augment.flip, teacher_model=teacher,
      soft_kind=config.distill.kind, max_norm=config.optimizer.max_norm)
  hparams = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.9)}
  compiled = jax.jit(train_step).lower(state, batch, teacher_variables, hparams).compile(
      compiler_options={'xla_backend_optimization_level': 0})
  new_state, metrics = compiled(state, batch, teacher_variables, hparams)

  assert int(new_state.step) == 1
  assert np.isfinite(float(metrics['loss'])) and float(metrics['loss']) > 0
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.params, new_state.params)
  assert all(jax.tree.leaves(changed)), f'{preset}: some parameters got no update'
  if state.model_state:  # BatchNorm: running statistics moved towards the batch's
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         state.model_state, new_state.model_state)
    assert all(jax.tree.leaves(moved)), preset
