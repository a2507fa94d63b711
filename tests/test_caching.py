"""Whole-command speed: what a process reuses from the ones before it.

Decoded datasets (kdjax.data.loading + kdjax.caching), JAX's persistent
compilation cache, and runs that never import TensorFlow. How much time
these save is measured by `python -m experiments.benchmark` (section f),
not here: these tests check that the reuse happens and returns the same bytes.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kdjax import caching
from kdjax.data import catalog, loading
from kdjax.train import summaries

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, cache: str, **env) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                        env=dict(os.environ, KDJAX_CACHE_DIR=cache, **env), check=True)


def test_catalog_versions_are_the_ones_tfds_registers():
  import tensorflow_datasets as tfds
  for name, info in catalog.DATASETS.items():
    assert str(tfds.builder(name).version) == info.version, name


@pytest.mark.slow
def test_a_decoded_split_is_read_back_without_tensorflow(mnist_data_dir, tmp_path):
  cache = str(tmp_path / 'cache')
  load = ('import sys, numpy as np; from kdjax import data; '
          f'd = data.load("mnist", data_dir={mnist_data_dir!r}, validation_fraction=0.1); '
          'np.savez(sys.argv[1] if len(sys.argv) > 1 else "{out}", '
          'tr=d.train.images, trl=d.train.labels, v=d.validation.images, te=d.test.images, '
          'tel=d.test.labels); print("tensorflow" in sys.modules)')
  first = _python(load.replace('{out}', str(tmp_path / 'first.npz')), cache)
  second = _python(load.replace('{out}', str(tmp_path / 'second.npz')), cache)
  assert first.stdout.split() == ['True']  # decoded through tf.data once
  assert second.stdout.split() == ['False']  # then read from the cache
  a, b = np.load(tmp_path / 'first.npz'), np.load(tmp_path / 'second.npz')
  for key in a.files:
    np.testing.assert_array_equal(a[key], b[key])
  assert a['tr'].shape == (54000, 28, 28, 1) and a['te'].shape == (10000, 28, 28, 1)
  folders = os.listdir(os.path.join(cache, 'data', 'mnist', '3.0.1'))
  assert len(folders) == 1
  assert sorted(os.listdir(os.path.join(cache, 'data', 'mnist', '3.0.1', folders[0]))) == [
      'test.images.npy', 'test.labels.npy', 'train.images.npy', 'train.labels.npy']


def test_a_changed_tfds_copy_is_decoded_again(mnist_data_dir, tmp_path, monkeypatch):
  copy = tmp_path / 'tfds'
  shutil.copytree(os.path.join(mnist_data_dir, 'mnist'), copy / 'mnist')
  monkeypatch.setattr(caching, '_configured', {'dir': str(tmp_path / 'cache')})
  before = loading.fingerprint('mnist', str(copy))
  loading._read_split_cached.cache_clear()  # pylint: disable=protected-access
  original = loading._read_split_cached('mnist', 'test', str(copy))  # pylint: disable=protected-access
  record = next(p for p in (copy / 'mnist' / '3.0.1').iterdir() if 'test.tfrecord' in p.name)
  os.utime(record, ns=(1, 1))  # the copy changed (as a re-import would change it)
  after = loading.fingerprint('mnist', str(copy))
  assert before != after and before is not None
  loading._read_split_cached.cache_clear()  # pylint: disable=protected-access
  reread = loading._read_split_cached('mnist', 'test', str(copy))  # pylint: disable=protected-access
  np.testing.assert_array_equal(original.images, reread.images)
  assert sorted(os.listdir(tmp_path / 'cache' / 'data' / 'mnist' / '3.0.1')) == sorted(
      [before, after])
  assert loading.fingerprint('mnist', str(tmp_path / 'absent')) is None


SMALL = ['--config=configs/mnist_student.py', '--config.model.hidden=(16,)',
         '--config.num_epochs=1', '--config.train_examples=512', '--config.batch_size=64']


def _main(workdir: str, cache: str, *extra: str) -> subprocess.CompletedProcess:
  probe = ('import sys, runpy; sys.argv = ["kdjax.main", *sys.argv[1:]]\n'
           'try:\n  runpy.run_module("kdjax.main", run_name="__main__")\n'
           'finally:\n  print("TF_LOADED", "tensorflow" in sys.modules)\n')
  return subprocess.run([sys.executable, '-c', probe, *SMALL, f'--workdir={workdir}', *extra],
                        cwd=ROOT, capture_output=True, text=True, check=True,
                        env=dict(os.environ, KDJAX_CACHE_DIR=cache))


@pytest.mark.slow
def test_a_run_reuses_compiled_programs_and_never_imports_tensorflow(mnist_data_dir, tmp_path):
  cache = str(tmp_path / 'cache')
  first = _main(str(tmp_path / 'a'), cache)
  programs = sorted(os.listdir(os.path.join(cache, 'xla')))
  assert any(name.startswith('jit_epoch') for name in programs)
  second = _main(str(tmp_path / 'b'), cache)
  assert 'TF_LOADED False' in second.stdout  # data from the cache, TF-free summaries
  # The epoch program came from the cache (smaller programs are written only when
  # they happened to compile slower than the cache's threshold, so they may differ).
  after = sorted(os.listdir(os.path.join(cache, 'xla')))
  epochs = lambda names: [n for n in names if n.startswith('jit_epoch')]  # noqa: E731
  assert set(programs) <= set(after) and epochs(after) == epochs(programs)
  results = [json.load(open(tmp_path / run / 'results.json')) for run in ('a', 'b')]
  assert results[0]['test_accuracy'] == results[1]['test_accuracy']
  assert 'TF_LOADED' in first.stdout
  events = [f for f in os.listdir(tmp_path / 'b') if f.startswith('events.out.tfevents')]
  assert len(events) == 1


@pytest.mark.slow
def test_nocache_writes_no_cache(mnist_data_dir, tmp_path):
  cache = tmp_path / 'cache'
  _main(str(tmp_path / 'a'), str(cache), '--nocache')
  assert not cache.exists()


def test_import_of_the_cli_is_light():
  out = subprocess.run(
      [sys.executable, '-c', 'import sys, kdjax.main, kdjax.data, kdjax.train; '
       'print(sorted(m for m in ("tensorflow", "tensorflow_datasets", "clu", "matplotlib") '
       'if m in sys.modules))'],
      cwd=ROOT, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == '[]'


def test_crc32c_known_values():
  assert summaries.crc32c(b'') == 0
  assert summaries.crc32c(b'123456789') == 0xE3069283  # the CRC-32C check value
  assert summaries.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def test_event_file_is_read_by_tensorflow(tmp_path):
  writer = summaries.EventWriter(str(tmp_path))
  writer.write_scalars(10, {'train_loss': 0.5, 'test_accuracy': 0.9})
  writer.write_scalars(20, {'train_loss': 0.25})
  writer.close()
  from kdjax.data import _tensorflow
  tf = _tensorflow.load()
  from tensorboard.compat.proto import event_pb2
  (path,) = tmp_path.iterdir()
  events = [event_pb2.Event.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(str(path))]  # checks both CRCs
  assert events[0].file_version == 'brain.Event:2'
  scalars = [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value]
  assert scalars == [(10, 'train_loss', 0.5), (10, 'test_accuracy', pytest.approx(0.9)),
                     (20, 'train_loss', 0.25)]
  corrupt = bytearray(path.read_bytes())
  corrupt[-6] ^= 0xFF  # a payload byte of the last record
  path.write_bytes(bytes(corrupt))
  with pytest.raises(tf.errors.DataLossError):
    list(tf.data.TFRecordDataset(str(path)))
