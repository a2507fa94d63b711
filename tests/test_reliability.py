"""Failures a long run meets: full disks, broken teachers, NaN, unwritable dirs."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ['--config=configs/mnist_student.py', '--config.model.hidden=(32,)',
         '--config.batch_size=256', '--config.train_examples=8192']


def _cli(args, module='kdjax.main', timeout=600):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _one_error_line(out):
  assert out.returncode == 2, (out.returncode, out.stderr[-3000:])
  assert 'Traceback' not in out.stderr, out.stderr[-3000:]
  lines = [l for l in out.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1, out.stderr[-3000:]
  return lines[0]


def _checkpoint_epochs(workdir):
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


@pytest.fixture(scope='module')
def finished_run(mnist_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('finished'))
  out = _cli([*SMALL, f'--workdir={workdir}', '--config.num_epochs=1',
              f'--config.data_dir={mnist_data_dir}'])
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir


# Runs the real CLI; from the second checkpoint on, files may not grow past
# 1 KiB (RLIMIT_FSIZE), so orbax's real writes fail the way a full disk does.
_DISK_FULL = textwrap.dedent('''
    import resource, signal, sys
    sys.path.insert(0, sys.argv[1])
    from kdjax.train import checkpoint
    original = checkpoint.Checkpoints.save
    def save(self, epoch, state, meta):
      if epoch >= 2:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))
      return original(self, epoch, state, meta)
    checkpoint.Checkpoints.save = save
    from kdjax import main
    main.main(['kdjax.main', *sys.argv[2:]])
''')


@pytest.mark.slow
def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  args = [*SMALL, f'--workdir={workdir}', '--config.num_epochs=3',
          f'--config.data_dir={mnist_data_dir}']
  out = subprocess.run([sys.executable, '-c', _DISK_FULL, ROOT, *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  line = _one_error_line(out)
  assert 'checkpoint of epoch 2' in line and 'epoch 1 is intact' in line, line
  assert 'rerun' in line
  assert _checkpoint_epochs(workdir) == [1]
  assert not os.path.exists(os.path.join(workdir, 'results.json'))
  # With space again, the same command resumes from epoch 1 and finishes.
  out = _cli(args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'from the checkpoint of epoch 1' in out.stdout + out.stderr
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert [h['epoch'] for h in results['history']] == [1, 2, 3]


def test_nan_loss_stops_at_once_without_saving(mnist_data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  out = _cli([*SMALL, f'--workdir={workdir}', '--config.num_epochs=2',
              '--config.optimizer.name=sgd', '--config.optimizer.learning_rate=1e30',
              f'--config.data_dir={mnist_data_dir}'])
  line = _one_error_line(out)
  assert 'at step' in line and '(epoch 1)' in line, line
  assert 'none saved yet' in line and 'learning_rate' in line, line
  assert _checkpoint_epochs(workdir) == []
  assert not os.path.exists(os.path.join(workdir, 'results.json'))


def test_corrupted_teacher_checkpoint_is_named(finished_run, mnist_data_dir, tmp_path):
  teacher = str(tmp_path / 'teacher')
  shutil.copytree(finished_run, teacher)
  damaged = 0
  for root, _, files in os.walk(os.path.join(teacher, 'checkpoints', '1', 'state')):
    for name in files:
      path = os.path.join(root, name)
      if os.path.getsize(path) > 100 and not name.endswith('.json'):
        with open(path, 'r+b') as f:
          f.write(b'\x00garbage' * (os.path.getsize(path) // 8))
        damaged += 1
  assert damaged
  workdir = str(tmp_path / 'student')
  out = _cli([*SMALL, f'--workdir={workdir}', '--config.num_epochs=1',
              f'--config.teacher.workdir={teacher}', f'--config.data_dir={mnist_data_dir}'])
  line = _one_error_line(out)
  assert 'teacher checkpoint' in line and teacher in line and 'retrain' in line, line


def test_unfinished_teacher_is_refused(finished_run, mnist_data_dir, tmp_path):
  teacher = str(tmp_path / 'teacher')
  shutil.copytree(finished_run, teacher)
  os.remove(os.path.join(teacher, 'results.json'))
  out = _cli([*SMALL, f'--workdir={tmp_path / "student"}', '--config.num_epochs=1',
              f'--config.teacher.workdir={teacher}', f'--config.data_dir={mnist_data_dir}'])
  line = _one_error_line(out)
  assert 'unfinished' in line and teacher in line, line
  assert not os.path.exists(tmp_path / 'student')


def _unwritable_existing_dir():
  for candidate in ('/sys', '/proc'):
    try:
      with open(os.path.join(candidate, '.kdjax-probe'), 'w'):
        pass
    except OSError:
      return candidate
  pytest.skip('no read-only directory on this machine')


@pytest.mark.parametrize('kind', ['below a file', 'read-only'])
def test_workdir_that_cannot_be_written(kind, tmp_path, mnist_data_dir):
  if kind == 'below a file':
    blocker = tmp_path / 'results.txt'
    blocker.write_text('keep me')
    workdir = str(blocker / 'run')
  else:
    workdir = _unwritable_existing_dir()
  out = _cli([*SMALL, f'--workdir={workdir}', f'--config.data_dir={mnist_data_dir}'])
  line = _one_error_line(out)
  assert f'workdir {workdir}' in line, line
  if kind == 'below a file':
    assert blocker.read_text() == 'keep me'


def test_import_with_a_wrong_sha256_fails_in_one_line(tmp_path):
  corrupt = tmp_path / 'mnist.pkl.gz'
  corrupt.write_bytes(b'not the MNIST pickle')
  data_dir = tmp_path / 'tfds'
  out = _cli(['import', 'mnist', f'--source={corrupt}', f'--data_dir={data_dir}'],
             module='kdjax.data')
  line = _one_error_line(out)
  assert 'SHA-256' in line and str(corrupt) in line, line
  assert not data_dir.exists()


def test_teacher_with_other_classes_or_input_shape_is_refused(mnist_data_dir, tmp_path):
  """A teacher trained on CIFAR (under tfds mock data) cannot teach an MNIST student."""
  import tensorflow_datasets as tfds
  from kdjax import config as config_lib
  from kdjax import train
  from kdjax.errors import ConfigError

  def tiny(dataset, data_dir):
    c = config_lib.default()
    c.dataset, c.data_dir = dataset, data_dir
    c.model.name = 'mlp'
    c.model.hidden = (8,)
    c.batch_size, c.eval_batch_size, c.num_epochs = 8, 8, 1
    return c

  for dataset, message in (('cifar100', '100 classes'), ('cifar10', 'input shape')):
    teacher = str(tmp_path / dataset)
    with tfds.testing.mock_data(num_examples=16):
      train.train_and_evaluate(tiny(dataset, str(tmp_path / 'mock')), teacher)
    student = tiny('mnist', mnist_data_dir)
    student.teacher.workdir = teacher
    with pytest.raises(ConfigError, match=message):
      train.train_and_evaluate(student, str(tmp_path / f'student_{dataset}'))


def test_batch_size_not_divisible_by_the_devices(mnist_data_dir, tmp_path):
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags('--xla_force_host_platform_device_count=4'),
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-m', 'kdjax.main', *SMALL, f'--workdir={tmp_path}/run',
                        '--config.batch_size=30', f'--config.data_dir={mnist_data_dir}'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  line = _one_error_line(out)
  assert 'batch_size=30' in line and '4 devices' in line and 'multiple of 4' in line, line
  assert not os.path.exists(f'{tmp_path}/run')  # refused before the workdir was made
