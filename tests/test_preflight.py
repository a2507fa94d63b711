"""Refusing before writing: every mistake a run can see up front, in one line.

Most cases call `preflight.check` in-process (the MNIST splits are read once
and cached); a few run the command line to see the whole contract: one
`error:` line, exit status 2, and no workdir.
"""

import os
import subprocess
import sys

import ml_collections
import pytest

from kdjax import config as config_lib
from kdjax import report
from kdjax.errors import ConfigError, DataError, WorkdirError
from kdjax.train import preflight

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(data_dir: str, changes: dict) -> ml_collections.ConfigDict:
  """A small MNIST run with `changes` ('a.b' -> value; 'model' -> a whole block)."""
  c = config_lib.default()
  c.data_dir = data_dir
  c.model.hidden = (32,)
  changes = dict(changes)
  if 'model' in changes:
    c.model = ml_collections.ConfigDict(changes.pop('model'))
  return config_lib.override(c, changes)


def _fake_teacher(path, *, dataset='mnist', image_shape=(28, 28, 1), finished=True,
                  checkpoint=True, sweep=False):
  """The files of a finished teacher run, without training one: the checks read
  config.json and results.json and look for the final checkpoint's directory."""
  os.makedirs(path)
  teacher_config = config_lib.default()
  teacher_config.dataset = dataset
  teacher_config.model.hidden = (16,)
  report.write_json(os.path.join(path, 'config.json'), config_lib.to_json_dict(teacher_config))
  results = {'dataset': dataset, 'model': 'mlp', 'image_shape': list(image_shape),
             'test_accuracy': 0.9, 'final_checkpoint_epoch': 1}
  if sweep:
    results['members'] = [{'label': 'seed0'}]
  if finished:
    report.write_json(os.path.join(path, 'results.json'), results)
  if checkpoint:
    os.makedirs(os.path.join(path, 'checkpoints', '1'))
  return str(path)


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
  """Teacher directories, each with one thing wrong (and one without)."""
  root = tmp_path_factory.mktemp('teachers')
  file_teacher = root / 'a_file'
  file_teacher.write_text('not a run')
  (root / 'empty').mkdir()
  return {
      'good': _fake_teacher(root / 'good'),
      'missing': str(root / 'never_trained'),
      'file': str(file_teacher),
      'empty': str(root / 'empty'),
      'unfinished': _fake_teacher(root / 'unfinished', finished=False),
      'no_checkpoint': _fake_teacher(root / 'no_checkpoint', checkpoint=False),
      'cifar100': _fake_teacher(root / 'cifar100', dataset='cifar100', image_shape=(32, 32, 3)),
      'cifar10': _fake_teacher(root / 'cifar10', dataset='cifar10', image_shape=(32, 32, 3)),
      'fashion_mnist': _fake_teacher(root / 'fashion_mnist', dataset='fashion_mnist'),
      'sweep': _fake_teacher(root / 'sweep', sweep=True),
  }


@pytest.fixture(scope='module')
def a_file(tmp_path_factory):
  path = tmp_path_factory.mktemp('files') / 'not_a_dir'
  path.write_text('x')
  return str(path)


BAD = {
    # The schema (config.validate) comes first.
    'batch 0': ({'batch_size': 0}, ConfigError, 'config.batch_size=0'),
    'unknown model': ({'model.name': 'resnet7'}, ConfigError, 'config.model.name'),
    # Seeds: numpy refuses negative ones, JAX keys hold 32 bits.
    'negative seed': ({'seed': -1}, ConfigError, 'config.seed=-1'),
    'negative data seed': ({'data_seed': -1, 'train_examples': 1000}, ConfigError,
                           'config.data_seed=-1'),
    'huge validation seed': ({'validation_seed': 2**31}, ConfigError, 'config.validation_seed'),
    'negative sweep seed': ({'sweep.seed': (0, -1)}, ConfigError, 'config.sweep.seed'),
    'coupled data seed below 0': ({'seed': 5, 'sweep.seed': (0, 1)}, ConfigError,
                                  'data_seed -5'),
    # Optimizer ranges optax accepts silently.
    'negative warm-up': ({'schedule.warmup_epochs': -1}, ConfigError,
                         'config.schedule.warmup_epochs'),
    'negative boundary': ({'schedule.name': 'step', 'schedule.boundaries': (-1,)}, ConfigError,
                          'config.schedule.boundaries'),
    'momentum 1': ({'optimizer.name': 'sgd', 'optimizer.momentum': 1.0}, ConfigError,
                   'config.optimizer.momentum'),
    'b2 above 1': ({'optimizer.b2': 1.5}, ConfigError, 'config.optimizer.b2'),
    # The dataset on disk.
    'dataset not imported': ({'dataset': 'cifar10'}, DataError, "dataset 'cifar10' is not in"),
    'streamed, not imported': ({'dataset': 'cifar10', 'input.pipeline': 'stream'}, DataError,
                               "dataset 'cifar10' is not in"),
    'data_dir absent': ({'data_dir': '/nonexistent/tfds'}, DataError,
                        "dataset 'mnist' is not in /nonexistent/tfds: import it with"),
    'streamed, data_dir absent': ({'data_dir': '/nonexistent', 'input.pipeline': 'stream'},
                                  DataError, 'is not in /nonexistent'),
    # Class filters and the subset.
    'class 11 of 10': ({'keep_classes': (11,)}, ConfigError, 'config.keep_classes=(11,)'),
    'class -1': ({'omit_classes': (-1,)}, ConfigError, 'config.omit_classes=(-1,)'),
    'class 1.5': ({'keep_classes': (1.5,)}, ConfigError, 'whole numbers in [0, 10)'),
    'every class omitted': ({'omit_classes': tuple(range(10))}, ConfigError,
                            'leaves none of the 60000'),
    'subset larger than the split': ({'train_examples': 100_000}, ConfigError,
                                     'config.train_examples=100000: exceeds the 60000'),
    'subset larger than one class': ({'keep_classes': (1,), 'train_examples': 7000},
                                     ConfigError, 'exceeds the 6742 training examples'),
    # Batch sizes against the training set.
    'batch larger than the subset': ({'train_examples': 100}, ConfigError,
                                     'config.batch_size=128: exceeds the 100'),
    'batch larger than what validation leaves': ({'validation_fraction': 0.9999}, ConfigError,
                                                 'config.batch_size=128: exceeds the 6 '),
    'streamed batch larger than the split': (
        {'input.pipeline': 'stream', 'validation_fraction': 0.5, 'batch_size': 60_000},
        ConfigError, 'config.batch_size=60000: exceeds the 30000'),
    # Augmentation against the image.
    'shift as large as the image': ({'augment.max_shift': 28}, ConfigError,
                                    'config.augment.max_shift=28'),
    # Model options that cannot build a network.
    'width 0': ({'model.hidden': (0,)}, ConfigError,
                "config.model (hidden=(0,), name='mlp') cannot build a network on 28x28x1"),
    'negative width': ({'model.hidden': (-3,)}, ConfigError, 'hidden=(-3,)'),
    'width not a number': ({'model.hidden': ('abc',)}, ConfigError, 'does not accept these options'),
    'dropout 1.5': ({'model': {'name': 'mlp', 'input_dropout': 1.5}}, ConfigError,
                    'model.input_dropout=1.5'),
    'option of another family': ({'model.name': 'resnet20'}, ConfigError,
                                 "unexpected keyword argument 'hidden'"),
    'kernel size unknown to the family': (
        {'model': {'name': 'cifar_resnet', 'kernel_size': 7}}, ConfigError, 'kernel_size'),
    'resnet stage width 0': ({'model': {'name': 'cifar_resnet', 'widths': (16, 0, 32, 64)}},
                             ConfigError, 'model.widths'),
    'integer dtype': ({'model': {'name': 'resnet20', 'dtype': 'int32'}}, ConfigError,
                      'model.dtype'),
    'input too small for the pools': (
        {'model': {'name': 'papernot_mnist'}, 'input.pipeline': 'stream',
         'input.image_size': 8}, ConfigError, 'cannot build a network on 8x8x1'),
}


@pytest.mark.parametrize('name', list(BAD))
def test_a_mistake_is_refused_in_one_line_naming_the_field(name, mnist_data_dir):
  changes, error, fragment = BAD[name]
  with pytest.raises(error) as raised:
    preflight.check(_config(mnist_data_dir, changes))
  message = str(raised.value)
  assert fragment in message, message
  assert '\n' not in message, message


def test_data_dir_that_is_a_file_or_empty(mnist_data_dir, a_file, tmp_path):
  with pytest.raises(ConfigError, match='config.data_dir=.*is a file'):
    preflight.check(_config(mnist_data_dir, {'data_dir': a_file}))
  with pytest.raises(DataError, match=f"dataset 'mnist' is not in {tmp_path}"):
    preflight.check(_config(mnist_data_dir, {'data_dir': str(tmp_path)}))


TEACHER = {
    'missing': (WorkdirError, 'does not exist'),
    'file': (WorkdirError, 'is a file'),
    'empty': (WorkdirError, 'holds no kdjax run'),
    'unfinished': (WorkdirError, 'unfinished run'),
    'no_checkpoint': (WorkdirError, 'no checkpoint of its final epoch'),
    'cifar100': (ConfigError, 'the teacher has 100 classes'),
    'cifar10': (ConfigError, 'input shape (32, 32, 3)'),
    'fashion_mnist': (ConfigError, 'allow_other_dataset'),
    'sweep': (WorkdirError, "the sweep's member seed0"),
}


@pytest.mark.parametrize('kind', list(TEACHER))
def test_a_teacher_that_cannot_teach_is_refused(kind, teachers, mnist_data_dir):
  error, fragment = TEACHER[kind]
  with pytest.raises(error) as raised:
    preflight.check(_config(mnist_data_dir, {'teacher.workdir': teachers[kind]}))
  assert fragment in str(raised.value) and '\n' not in str(raised.value), str(raised.value)


def _snapshot(*directories):
  out = {}
  for directory in directories:
    for root, dirs, files in os.walk(directory):
      for name in dirs + files:
        path = os.path.join(root, name)
        out[path] = os.stat(path).st_mtime_ns
  return out


@pytest.mark.parametrize('changes', [
    {},
    {'keep_classes': (3, 5), 'train_examples': 1000, 'batch_size': 1000,
     'validation_fraction': 0.1},
    {'model': {'name': 'resnet8'}, 'augment.max_shift': 2},
    {'input.pipeline': 'stream', 'batch_size': 60_000},
    {'teacher.workdir': 'good', 'sweep.temperature': (2.0, 4.0), 'sweep.seed': (0, 1)},
    {'teacher.workdir': 'fashion_mnist', 'teacher.allow_other_dataset': True},
], ids=['plain', 'filtered', 'resnet', 'streamed', 'sweep', 'transfer'])
def test_a_config_that_can_run_passes_and_nothing_is_written(changes, teachers,
                                                             mnist_data_dir):
  if 'teacher.workdir' in changes:
    changes = dict(changes, **{'teacher.workdir': teachers[changes['teacher.workdir']]})
  before = _snapshot(mnist_data_dir, os.path.dirname(teachers['good']))
  preflight.check(_config(mnist_data_dir, changes))
  assert _snapshot(mnist_data_dir, os.path.dirname(teachers['good'])) == before


def _cli(args):
  return subprocess.run([sys.executable, '-m', 'kdjax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


STUDENT = '--config=configs/mnist_student.py'


@pytest.mark.parametrize('args, fragment', [
    # Both reached the run before preflight: a JAX traceback from the first
    # layer, and a DataError after config.json was written.
    ([STUDENT, '--config.model.hidden=(0,)'], "config.model (dtype='float32', hidden=(0,)"),
    ([STUDENT, '--config.data_dir=/nonexistent/tfds'], "dataset 'mnist' is not in /nonexistent"),
    # ml_collections reported a missing file on several lines, later.
    (['--config=configs/no_such_config.py'], '--config=configs/no_such_config.py: no such file'),
    (['--config.num_epochs=1'], '--config is required'),
], ids=['width 0', 'data_dir absent', 'config file absent', 'overrides without a file'])
def test_the_command_line_refuses_before_making_the_workdir(args, fragment, tmp_path):
  workdir = tmp_path / 'run'
  out = _cli([*args, f'--workdir={workdir}'])
  assert out.returncode == 2, out.stderr[-3000:]
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith('error:')]
  assert len(lines) == 1 and fragment in lines[0], out.stderr[-3000:]
  assert not workdir.exists()


def test_an_empty_workdir_is_not_the_current_directory(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'kdjax.main',
                        f'--config={ROOT}/configs/mnist_student.py', '--workdir='],
                       cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 2 and 'error: --workdir is required' in out.stderr, out.stderr
  assert not os.listdir(tmp_path)
