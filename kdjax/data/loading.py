"""Whole TFDS image-classification datasets as numpy arrays in host memory.

The datasets kdjax trains on (MNIST, Fashion-MNIST, CIFAR) are small enough
to be held whole, put on the accelerators once, and batched there; `load`
reads every split of one into numpy and never downloads. Datasets are read
from a TFDS data directory, prepared either by `python -m kdjax.data import`
(offline, from local copies) or by `tfds build` on a machine with internet.

A split is decoded through tf.data once per TFDS copy and kept, as .npy
files, in kdjax's cache (`kdjax.caching`); later loads map those files and
import neither TensorFlow nor tensorflow_datasets.
"""

import dataclasses
import functools
import os
import tempfile

import numpy as np

from kdjax import caching
from kdjax.data import _tensorflow
from kdjax.data import catalog
from kdjax.data import custom
from kdjax.data.custom import default_data_dir  # noqa: F401  (kdjax.data's name for it)
from kdjax.errors import ConfigError, DataError

# Examples per tf.data batch while reading a split into numpy. Not -1 (one
# batch of the whole split): TFDS sizes that batch from the dataset's
# metadata, which `tfds.testing.mock_data` leaves empty, and TensorFlow then
# aborts the process trying to reserve sys.maxsize elements.
_READ_BATCH_SIZE = 10_000


@dataclasses.dataclass(frozen=True)
class Split:
  """The examples of one split, in a fixed order.

  Attributes:
    images: (N, H, W, C) uint8, the exact stored pixels (C=1 for grayscale).
    labels: (N,) int32 class indices.
  """
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A whole dataset held in host memory.

  Attributes:
    name: the TFDS name.
    num_classes: number of label classes.
    image_shape: (H, W, C) of every image.
    train: the training examples (less `validation`, when that is held out).
    validation: examples held out of TFDS's train split, or None.
    test: the labelled held-out split accuracy is reported on (TFDS's
      'validation' split for imagenet2012, 'test' otherwise).
    mean: per-channel mean of the training pixels scaled to [0, 1].
    std: per-channel standard deviation of the same pixels.
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  train: Split
  validation: Split | None
  test: Split
  mean: tuple[float, ...]
  std: tuple[float, ...]


def is_prepared(name: str, data_dir: str | None = None) -> bool:
  """Whether the registered TFDS version of `name` is complete in `data_dir`.

  Args:
    name: a TFDS dataset name.
    data_dir: the TFDS data directory; `default_data_dir()` when None.

  Returns:
    True when `tfds.load(name, data_dir=data_dir, download=False)` can read it.
  """
  tfds = _tfds()
  builder = tfds.builder(name, data_dir=data_dir or default_data_dir())
  # TFDS logs a warning for every absent version folder it is asked about.
  return os.path.isdir(builder.data_dir) and builder.is_prepared()


def load(
    name: str,
    *,
    data_dir: str | None = None,
    validation_fraction: float = 0.0,
    validation_seed: int = 0,
) -> Dataset:
  """Reads every split of a prepared TFDS dataset into numpy arrays.

  Args:
    name: a dataset of `catalog.DATASETS`, or a `folder:` / `tfds:` dataset
      (`kdjax.data.custom`), read with the options `catalog.use` gave it.
    data_dir: the TFDS data directory; `default_data_dir()` when None.
    validation_fraction: the fraction of TFDS's train split, in [0, 1), held
      out as `validation`. The held-out examples are a uniformly random subset
      drawn with `validation_seed`; both parts keep their original order.
    validation_seed: seed of the numpy Generator that draws the subset.

  Returns:
    The dataset, with `validation` None when `validation_fraction` is 0.

  Raises:
    DataError: the name is unknown, the dataset is not prepared in
      `data_dir`, or it is too large to hold in memory.
    ConfigError: `validation_fraction` is outside [0, 1) or leaves an empty
      split.
  """
  info = catalog.get_info(name)
  if not 0.0 <= validation_fraction < 1.0:
    raise ConfigError(
        f'validation_fraction must be in [0, 1), got {validation_fraction}')
  if not info.fits_in_memory:
    raise DataError(
        f'{name} does not fit in memory: stream it with '
        "config.input.pipeline='stream' (see kdjax.data.stream)")
  data_dir = data_dir or default_data_dir()

  if custom.is_custom(name):  # decoded with the options `catalog.use` gave it
    prepared = custom.get(name)
    full_train, test = Split(*prepared.train), Split(*prepared.test)
  else:
    full_train = _read_split(name, 'train', data_dir)
    test = _read_split(name, info.test_split, data_dir)
  train, validation = full_train, None
  if validation_fraction > 0:
    train, validation = _hold_out(
        full_train, validation_fraction, validation_seed)
  return Dataset(
      name=name,
      num_classes=info.num_classes,
      image_shape=tuple(full_train.images.shape[1:]),
      train=train,
      validation=validation,
      test=test,
      mean=info.mean,
      std=info.std,
  )


def _read_split(name: str, split: str, data_dir: str) -> Split:
  """One TFDS split, read once per process (experiments run many stages on it)."""
  return _read_split_cached(name, split, os.path.abspath(data_dir))


@functools.lru_cache(maxsize=4)
def _read_split_cached(name: str, split: str, data_dir: str) -> Split:
  """One split, from kdjax's decoded cache when it holds this TFDS copy's split."""
  cached = _cache_paths(name, split, data_dir)
  if cached is not None and all(os.path.isfile(path) for path in cached):
    images, labels = (np.load(path, mmap_mode='r').view(np.ndarray) for path in cached)
    return Split(images=images, labels=labels)
  split_arrays = _decode_split(name, split, data_dir)
  if cached is not None:
    _store(cached, split_arrays)
  return split_arrays


def _decode_split(name: str, split: str, data_dir: str) -> Split:
  """Reads one TFDS split whole through tf.data, in its stored order, as read-only arrays."""
  tfds = _tfds()
  try:
    batches = tfds.load(
        name, split=split, data_dir=data_dir, download=False,
        as_supervised=True, batch_size=_READ_BATCH_SIZE)
  except AssertionError as e:
    # TFDS signals a dataset missing from data_dir with a bare
    # AssertionError; anything else is left to surface as it is.
    if is_prepared(name, data_dir):
      raise
    raise DataError(missing_dataset_message(name, data_dir)) from e
  images, labels = [], []
  for image_batch, label_batch in tfds.as_numpy(batches):
    images.append(image_batch)
    labels.append(label_batch)
  if not labels:
    raise DataError(f'split {split!r} of {name} in {data_dir} is empty')
  split_arrays = Split(images=np.concatenate(images).astype(np.uint8, copy=False),
                      labels=np.concatenate(labels).astype(np.int32))
  for array in (split_arrays.images, split_arrays.labels):
    array.flags.writeable = False  # shared by every caller in this process
  return split_arrays


def _tfds():
  """tensorflow_datasets, with TensorFlow imported quietly first."""
  _tensorflow.load()
  import tensorflow_datasets  # pylint: disable=import-outside-toplevel
  return tensorflow_datasets


def fingerprint(name: str, data_dir: str) -> str | None:
  """A hash of the TFDS copy of `name` in `data_dir`, or None when there is none.

  It covers every file of the version directory (name, size, modification
  time) and the bytes of its dataset_info.json: rewriting, re-importing or
  replacing the copy changes it.
  """
  return custom.directory_fingerprint(
      os.path.join(data_dir, name, catalog.get_info(name).version))


def _cache_paths(name: str, split: str, data_dir: str) -> tuple[str, str] | None:
  """(images, labels) .npy paths of a split in the decoded cache, or None."""
  root = caching.data_dir()
  key = fingerprint(name, data_dir) if root else None
  if key is None:  # caching off, or no TFDS copy on disk (e.g. tfds.testing.mock_data)
    return None
  folder = os.path.join(root, name, catalog.get_info(name).version, key)
  # Images last: a reader that finds them finds the labels too.
  return (os.path.join(folder, f'{split}.images.npy'),
          os.path.join(folder, f'{split}.labels.npy'))


def _store(paths: tuple[str, str], split: Split) -> None:
  """Writes the split's arrays to `paths`, each through a rename (safe for concurrent writers)."""
  images_path, labels_path = paths
  try:
    os.makedirs(os.path.dirname(images_path), exist_ok=True)
    for path, array in ((labels_path, split.labels), (images_path, split.images)):
      handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
      try:
        with os.fdopen(handle, 'wb') as f:
          np.save(f, array)
        os.replace(temporary, path)
      except BaseException:
        os.unlink(temporary)
        raise
  except OSError:
    pass  # a cache that cannot be written is only a slower next load


def missing_dataset_message(name: str, data_dir: str) -> str:
  if catalog.get_info(name).importable:
    return (f'dataset {name!r} is not in {data_dir}: import it with: '
            f'python -m kdjax.data import {name} --data_dir={data_dir}')
  return (f'dataset {name!r} is not in {data_dir} and cannot be downloaded '
          f'here: prepare it with `tfds build {name} --data_dir=DIR` on a '
          f'machine with internet, then copy DIR/{name} into {data_dir}')


def _hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split]:
  """Splits `train` into (rest, held-out) with a seeded random subset."""
  num_held_out = round(fraction * len(train))
  if not 0 < num_held_out < len(train):
    raise ConfigError(
        f'validation_fraction={fraction} of {len(train)} training examples '
        f'leaves {num_held_out} for validation and '
        f'{len(train) - num_held_out} for training; both must be non-empty')
  permutation = np.random.default_rng(seed).permutation(len(train))
  held_out = np.zeros(len(train), dtype=bool)
  held_out[permutation[:num_held_out]] = True
  return (Split(images=train.images[~held_out], labels=train.labels[~held_out]),
          Split(images=train.images[held_out], labels=train.labels[held_out]))
