"""Every configs/*.py runs to the end with its own settings, shrunk only in size.

Each config keeps its optimizer, schedule, evaluation and checkpoint cadence
(above one epoch where the full run's is), augmentation and teacher handling;
`experiments.common.shrunk` cuts epochs (crossing every schedule boundary),
examples, batch sizes and MLP widths. MNIST configs run on the real MNIST,
CIFAR ones on `tfds.testing.mock_data`. configs/imagenet_resnet.py runs the
same way in tests/test_stream.py (streamed, under mock ImageNet).
"""

import importlib
import os
import pathlib

import pytest
import tensorflow_datasets as tfds

from experiments import common
from kdjax.train import loop

CONFIGS = sorted(p.stem for p in (pathlib.Path(__file__).parent.parent / 'configs').glob('*.py')
                 if p.stem != '__init__')


def _shrunk(name: str, **changes):
  config = importlib.import_module(f'configs.{name}').get_config()
  full = config.copy_and_resolve_references()
  config = common.shrunk(config)
  for field, value in changes.items():
    config[field] = value
  return full, config


def _check(full, config, results, workdir):
  assert os.path.exists(os.path.join(workdir, 'results.json'))
  assert os.path.exists(os.path.join(workdir, 'curves.png'))
  evaluated = [h['epoch'] for h in results['history'] if 'test_accuracy' in h]
  if full.eval_every > 1:  # the off-cadence epochs are trained, not evaluated
    assert evaluated == [e for e in range(1, config.num_epochs + 1)
                         if e % config.eval_every == 0 or e == config.num_epochs]
    assert len(evaluated) < config.num_epochs
  assert results['model'] == full.model.name and results['dataset'] == full.dataset


def test_every_config_is_covered():
  # configs/custom.py runs, with the model and folder docs/custom.md makes, in
  # tests/test_custom.py.
  assert set(CONFIGS) == {'cifar_distill', 'cifar_resnet', 'custom', 'imagenet_resnet',
                          'mnist_distill', 'mnist_student', 'mnist_teacher'}


@pytest.mark.slow
def test_mnist_configs_run_to_the_end(mnist_data_dir, tmp_path):
  runs = {}
  for name in ('mnist_teacher', 'mnist_student', 'mnist_distill'):
    full, config = _shrunk(name, data_dir=mnist_data_dir)
    if name == 'mnist_distill':
      config.teacher.workdir = runs['mnist_teacher']
    workdir = str(tmp_path / name)
    _check(full, config, loop.train_and_evaluate(config, workdir), workdir)
    runs[name] = workdir
  distilled = loop.train_and_evaluate(config, runs['mnist_distill'])
  assert distilled['teacher']['workdir'] == runs['mnist_teacher']


@pytest.mark.slow
def test_cifar_configs_run_to_the_end(tmp_path, patches_conv):
  """Full-width ResNets, trained: with kdjax's CPU convolution (XLA's, the tests'
  default, trains them several times slower)."""
  with tfds.testing.mock_data(num_examples=64):
    full, teacher = _shrunk('cifar_resnet', data_dir=str(tmp_path / 'tfds'))
    assert full.eval_every > 1 and full.augment.flip and full.optimizer.nesterov
    _check(full, teacher, loop.train_and_evaluate(teacher, str(tmp_path / 'teacher')),
           str(tmp_path / 'teacher'))
    full, student = _shrunk('cifar_distill', data_dir=str(tmp_path / 'tfds'))
    student.teacher.workdir = str(tmp_path / 'teacher')
    results = loop.train_and_evaluate(student, str(tmp_path / 'student'))
    _check(full, student, results, str(tmp_path / 'student'))
    # Augmented inputs: the teacher runs in the step, on the student's images.
    assert results['teacher']['cached'] is False


@pytest.mark.parametrize('name', ['cifar_resnet', 'mnist_teacher'])
def test_shrinking_keeps_the_code_path(name):
  full, config = _shrunk(name)
  for field in ('optimizer', 'schedule', 'augment', 'teacher', 'model'):
    if field == 'model' and full.model.name == 'mlp':
      continue  # MLP widths are what shrinking narrows
    if field == 'schedule':
      assert config.schedule.name == full.schedule.name
      continue
    assert config[field].to_dict() == full[field].to_dict(), field
