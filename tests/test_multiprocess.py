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
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SCRIPT = textwrap.dedent('''
    import json, sys
    workdir, data_dir, pipeline, port, process_id = sys.argv[1:6]
    import jax
    if port != '-':
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
      jax.distributed.initialize(f'127.0.0.1:{port}', num_processes=2,
                                 process_id=int(process_id))
    from kdjax import config as config_lib
    from kdjax.train import loop
    c = config_lib.default()
    c.data_dir = data_dir
    c.model.hidden = (64,)
    c.input.pipeline = pipeline
    c.num_epochs = 2 if pipeline == 'device' else 1
    c.batch_size = 100 if pipeline == 'device' else 1000
    c.train_examples = 2000 if pipeline == 'device' else 0
    c.eval_batch_size = 2000
    c.augment.max_shift = 1
    results = loop.train_and_evaluate(c, workdir)
    print('RESULT ' + json.dumps({'devices': jax.device_count(),
                                  'test_accuracy': results['test_accuracy'],
                                  'loss': results['history'][-1]['train_loss']}))
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _result(stdout: str) -> dict:
  lines = [line for line in stdout.splitlines() if line.startswith('RESULT ')]
  assert lines, stdout
  return json.loads(lines[-1][len('RESULT '):])


def _two_processes(workdir, data_dir, pipeline):
  port = str(_free_port())
  env = dict(os.environ, XLA_FLAGS='')
  procs = [subprocess.Popen([sys.executable, '-c', _SCRIPT, str(workdir), data_dir, pipeline,
                             port, str(i)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=400) for p in procs]
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stderr[-3000:]
  return [_result(stdout) for stdout, _ in outs]


def test_two_processes_equal_one_process_with_two_devices(mnist_data_dir, tmp_path):
  cluster = _two_processes(tmp_path / 'cluster', mnist_data_dir, 'device')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  out = subprocess.run([sys.executable, '-c', _SCRIPT, str(tmp_path / 'single'), mnist_data_dir,
                        'device', '-', '0'], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=400)
  assert out.returncode == 0, out.stderr[-3000:]
  single = _result(out.stdout)
  assert cluster[0] == cluster[1] and cluster[0]['devices'] == single['devices'] == 2
  assert cluster[0]['test_accuracy'] == single['test_accuracy'] > 0.8
  np.testing.assert_allclose(cluster[0]['loss'], single['loss'], rtol=1e-6)
  # Process 0 alone wrote the run's files; the logits match the single process's.
  np.testing.assert_allclose(np.load(tmp_path / 'cluster' / 'logits.npz')['test'],
                             np.load(tmp_path / 'single' / 'logits.npz')['test'],
                             rtol=1e-5, atol=1e-5)
  assert os.path.isdir(tmp_path / 'cluster' / 'checkpoints' / '2')


def test_two_processes_stream_their_own_shares(mnist_data_dir, tmp_path):
  cluster = _two_processes(tmp_path / 'stream', mnist_data_dir, 'stream')
  assert cluster[0] == cluster[1]  # one global program: both see the same metrics
  assert cluster[0]['test_accuracy'] > 0.85
  with open(tmp_path / 'stream' / 'results.json') as f:
    results = json.load(f)
  assert results['input_pipeline'] == 'stream' and results['steps_per_epoch'] == 60
