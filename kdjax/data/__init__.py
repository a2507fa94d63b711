"""Datasets by name: offline import, whole-split loading, augmentation.

  dataset = data.load('mnist', validation_fraction=0.1)
  dataset.train.images        # (54000, 28, 28, 1) uint8

`python -m kdjax.data list` shows which datasets are prepared and which can be
imported offline; `python -m kdjax.data import mnist` imports one. A folder of
one's own images (`'folder:PATH'`) or a TFDS dataset of one's own
(`'tfds:NAME'`) is read by `kdjax.data.custom`; `python -m kdjax.data.shapes`
writes a folder of drawn shapes.
"""

import importlib

from kdjax.data import augment
from kdjax.data.catalog import DATASETS
from kdjax.data.catalog import DatasetInfo
from kdjax.data.loading import Dataset
from kdjax.data.loading import default_data_dir
from kdjax.data.loading import is_prepared
from kdjax.data.loading import load
from kdjax.data.loading import Split


def __getattr__(name: str):
  # TensorFlow stays unimported until a run streams (`stream`) or a dataset is
  # imported (`import_dataset`): the in-memory path reads a decoded cache.
  if name == 'stream':
    return importlib.import_module('kdjax.data.stream')
  if name == 'import_dataset':
    return importlib.import_module('kdjax.data.importer').import_dataset
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
