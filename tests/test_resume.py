"""A run killed at a random moment and resumed ends bit for bit where an
uninterrupted run ends; SIGTERM saves and exits cleanly."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(workdir, data_dir):
  return [sys.executable, '-m', 'kdjax.main', '--config=configs/mnist_student.py',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}',
          '--config.model.hidden=(64,64)', '--config.num_epochs=8',
          '--config.model.hidden_dropout=0.3', '--config.augment.max_shift=1',
          '--config.keep_checkpoints=10', '--config.train_examples=16384']


def _final(workdir):
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  logits = np.load(os.path.join(workdir, 'logits.npz'))['test']
  history = [{k: v for k, v in h.items() if k != 'epoch_seconds'} for h in results['history']]
  return results['test_accuracy'], results['per_class_errors'], history, logits


def _interrupt(workdir, data_dir, sig):
  """Starts a run and sends `sig` once its first checkpoint is on disk."""
  process = subprocess.Popen(_args(workdir, data_dir), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  first = os.path.join(workdir, 'checkpoints', '1')
  deadline = time.time() + 300
  while not os.path.isdir(first) and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  time.sleep(np.random.default_rng().uniform(0, 0.5))  # somewhere inside epoch 2
  process.send_signal(sig)
  stdout, stderr = process.communicate(timeout=300)
  return process.returncode, stdout, stderr


@pytest.fixture(scope='module')
def uninterrupted(mnist_data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('uninterrupted'))
  out = subprocess.run(_args(workdir, mnist_data_dir), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return _final(workdir)


def _assert_identical(a, b):
  accuracy_a, per_class_a, history_a, logits_a = a
  accuracy_b, per_class_b, history_b, logits_b = b
  assert accuracy_a == accuracy_b
  assert per_class_a == per_class_b
  assert history_a == history_b
  np.testing.assert_array_equal(logits_a, logits_b)


@pytest.mark.slow
def test_sigkill_then_resume_is_bit_identical(uninterrupted, mnist_data_dir, tmp_path):
  code, _, _ = _interrupt(str(tmp_path), mnist_data_dir, signal.SIGKILL)
  assert code == -signal.SIGKILL
  assert not os.path.exists(tmp_path / 'results.json')
  out = subprocess.run(_args(str(tmp_path), mnist_data_dir), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'resuming' in out.stdout
  _assert_identical(_final(str(tmp_path)), uninterrupted)


@pytest.mark.slow
def test_sigterm_saves_exits_cleanly_and_resumes(uninterrupted, mnist_data_dir, tmp_path):
  code, _, stderr = _interrupt(str(tmp_path), mnist_data_dir, signal.SIGTERM)
  assert code == 143, stderr[-3000:]
  assert 'Traceback' not in stderr
  assert 'rerun the same command to resume' in stderr
  out = subprocess.run(_args(str(tmp_path), mnist_data_dir), cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  _assert_identical(_final(str(tmp_path)), uninterrupted)
