"""Fixtures shared by the test modules."""

import os
import tempfile

import pytest

import tests

# Before JAX compiles anything: see tests/__init__.py. A level already set in
# $XLA_FLAGS is kept.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, (os.environ.get('XLA_FLAGS', ''), tests.XLA_FLAGS)))
# One cache of decoded datasets and compiled programs for the whole test run,
# shared by the xdist workers and the processes tests start; a new run starts
# empty, as CI does.
os.environ.setdefault('KDJAX_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'kdjax-test-cache-{os.environ.get("PYTEST_XDIST_TESTRUNUID", os.getpid())}'))

from kdjax import data  # noqa: E402


@pytest.fixture(scope='session')
def mnist_data_dir():
  """A TFDS data directory holding the real MNIST and Fashion-MNIST.

  $KDJAX_TEST_DATA_DIR if set, else the default TFDS data directory. Both
  datasets are imported on first use (about 20 s each) and reused afterwards.
  """
  data_dir = os.environ.get('KDJAX_TEST_DATA_DIR') or data.default_data_dir()
  for name in ('mnist', 'fashion_mnist'):
    data.import_dataset(name, data_dir=data_dir)
  return data_dir
