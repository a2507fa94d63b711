"""Two JAX processes (gloo collectives on the CPU) train one run as a cluster job would.

Each process has one CPU device; together they form a 2-device mesh. On-device
input must give the same run as one process with two devices; streamed input
gives each process its own share of every batch.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import tests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def _args(workdir, data_dir, pipeline):
  streamed = pipeline == 'stream'
  return [sys.executable, '-m', 'kdjax.main', '--config=configs/mnist_student.py',
          f'--workdir={workdir}', f'--config.data_dir={data_dir}', '--config.model.hidden=(64,)',
          f'--config.input.pipeline={pipeline}', f'--config.num_epochs={1 if streamed else 2}',
          f'--config.batch_size={2000 if streamed else 100}',
          f'--config.train_examples={0 if streamed else 2000}',
          f'--config.eval_batch_size={5000 if streamed else 2000}', '--config.augment.max_shift=1']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _results(workdir) -> dict:
  with open(os.path.join(workdir, 'results.json')) as f:
    return json.load(f)


def _two_processes(workdir, data_dir, pipeline):
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags())
  procs = [subprocess.Popen(_args(workdir, data_dir, pipeline) + [
      f'--coordinator=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (_, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
  # Process 0 alone prints progress and writes the run's files.
  assert 'done: test accuracy' in outs[0][0] and 'epoch' not in outs[1][0], outs[1][0]
  return _results(workdir)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_two_devices(mnist_data_dir, tmp_path):
  cluster = _two_processes(tmp_path / 'cluster', mnist_data_dir, 'device')
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags('--xla_force_host_platform_device_count=2'))
  out = subprocess.run(_args(tmp_path / 'single', mnist_data_dir, 'device'), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=400)
  assert out.returncode == 0, out.stderr[-3000:]
  single = _results(tmp_path / 'single')
  assert cluster['devices'] == single['devices'] == 2
  assert cluster['test_accuracy'] == single['test_accuracy'] > 0.8
  np.testing.assert_allclose(cluster['history'][-1]['train_loss'],
                             single['history'][-1]['train_loss'], rtol=1e-6)
  np.testing.assert_allclose(np.load(tmp_path / 'cluster' / 'logits.npz')['test'],
                             np.load(tmp_path / 'single' / 'logits.npz')['test'],
                             rtol=1e-5, atol=1e-5)
  assert os.path.isdir(tmp_path / 'cluster' / 'checkpoints' / '2')


@pytest.mark.slow
def test_two_processes_stream_their_own_shares(mnist_data_dir, tmp_path):
  results = _two_processes(tmp_path / 'stream', mnist_data_dir, 'stream')
  assert results['devices'] == 2 and results['test_accuracy'] > 0.85
  assert results['input_pipeline'] == 'stream' and results['steps_per_epoch'] == 30


def test_bad_cluster_flags_are_one_line_errors(tmp_path):
  for flags, message in ((['--coordinator=nohost'], 'expected HOST:PORT or auto'),
                         (['--coordinator=127.0.0.1:1'], 'needs --num_processes and --process_id'),
                         (['--coordinator=127.0.0.1:1', '--num_processes=2', '--process_id=2'],
                          'must be in [0, 2)'),
                         (['--process_id=1'], 'need --coordinator')):
    out = subprocess.run(_args(tmp_path / 'run', '/nonexistent', 'device') + flags, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), out.stderr
    assert message in lines[0]
  assert not os.path.exists(tmp_path / 'run')
