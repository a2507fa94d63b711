"""Fixtures shared by the test modules."""

import os

import pytest

from kdjax import data


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
