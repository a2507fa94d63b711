"""Streamed input (tf.data): order, coverage, crops, and whole runs on MNIST and ImageNet."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kdjax import checks
from kdjax import config as config_lib
from kdjax import data, models
from kdjax.data import stream
from kdjax.errors import ConfigError
from kdjax.train import feed as feed_lib
from kdjax.train import loop
from kdjax.train import step as step_lib


def _labels(batches):
  return np.concatenate([b['labels'] for b in batches])


def test_epoch_order_is_seeded_per_epoch_and_covers_distinct_examples(mnist_data_dir):
  info = stream.describe('mnist', data_dir=mnist_data_dir, image_size=0)
  assert info.num_train_examples == 60_000 and info.image_shape == (28, 28, 1)

  def epoch(seed, number, steps=40):
    return list(stream.train_batches(info, data_dir=mnist_data_dir, global_batch_size=50,
                                     steps=steps, seed=seed, epoch=number,
                                     shuffle_buffer=1000))

  first, again, second = epoch(0, 1), epoch(0, 1), epoch(0, 2)
  assert len(first) == 40 and first[0]['images'].shape == (50, 28, 28, 1)
  assert first[0]['images'].dtype == np.uint8 and first[0]['labels'].dtype == np.int32
  for a, b in zip(first, again):  # resuming an epoch replays the same batches
    np.testing.assert_array_equal(a['images'], b['images'])
  assert not np.array_equal(first[0]['images'], second[0]['images'])
  # No example twice within an epoch (MNIST's train images are distinct).
  images = np.concatenate([b['images'] for b in first]).reshape(2000, -1)
  assert len(np.unique(images, axis=0)) == 2000


def test_evaluation_reads_every_example_once_in_stored_order(mnist_data_dir):
  info = stream.describe('mnist', data_dir=mnist_data_dir, image_size=0)
  batches = list(stream.eval_batches(info, 'test', data_dir=mnist_data_dir, batch_size=3000))
  assert [valid for _, valid in batches] == [3000, 3000, 3000, 1000]
  assert batches[-1][0]['images'].shape == (3000, 28, 28, 1)  # padded to a whole batch
  test = data.load('mnist', data_dir=mnist_data_dir).test
  np.testing.assert_array_equal(np.concatenate([b['labels'][:v] for b, v in batches]),
                                test.labels)
  np.testing.assert_array_equal(batches[1][0]['images'], test.images[3000:6000])


def test_validation_slice_is_held_out_of_training(mnist_data_dir):
  info = stream.describe('mnist', data_dir=mnist_data_dir, image_size=0,
                         validation_fraction=0.1)
  assert info.num_train_examples == 54_000
  assert info.eval_splits == {'test': 'test', 'validation': 'train[54000:]'}


def test_crops_give_the_requested_size_and_keep_flat_images_flat():
  image = tf.fill([40, 70, 3], tf.constant(77, tf.uint8))
  crop = stream._inception_crop(image, 24, seed=tf.constant([1, 2], tf.int64))
  assert crop.shape == (24, 24, 3) and crop.dtype == tf.uint8
  np.testing.assert_array_equal(crop.numpy(), 77)
  # The central crop keeps the middle: a left/right split image stays split.
  halves = tf.concat([tf.zeros([64, 32, 1], tf.uint8), tf.fill([64, 32, 1],
                                                                tf.constant(200, tf.uint8))], 1)
  center = stream._central_crop(halves, 28).numpy()
  assert center.shape == (28, 28, 1)
  assert center[:, :10].max() == 0 and center[:, -10:].min() == 200


def test_a_stopped_streamed_epoch_returns_after_its_first_step(mnist_data_dir):
  config = config_lib.default()
  config.data_dir = mnist_data_dir
  config.input.pipeline = 'stream'
  config.batch_size = 1000
  info = stream.describe('mnist', data_dir=mnist_data_dir, image_size=0)
  feed = feed_lib.StreamFeed(config, info, step_lib.data_mesh())
  model = models.create('mlp', num_classes=10, hidden=(16,))
  tx = optax.sgd(0.1)
  state = step_lib.init_state(model, tx, jax.random.PRNGKey(0), info.image_shape)
  train_step = step_lib.make_train_step(model=model, tx=tx, mean=info.mean, std=info.std)
  hparams = {'temperature': jnp.float32(1), 'alpha': jnp.float32(0)}
  feed.compile(train_step, num_members=0, state=state, teacher_variables=None,
               hparams=hparams, data_rng=None)
  state, metrics, finished = feed.run_epoch(state, None, hparams, None, 1,
                                            stop_requested=lambda: True)
  assert not finished and int(state.step) == 1 and metrics['loss'].shape == (1, 1)


def _config(**fields):
  config = config_lib.default()
  config.model.hidden = (64,)
  return config_lib.override(config, fields)


@pytest.mark.slow
def test_streamed_mnist_run_learns(mnist_data_dir, tmp_path):
  config = _config(data_dir=mnist_data_dir, **{'input.pipeline': 'stream'}, batch_size=250,
                   num_epochs=1, eval_batch_size=2000)
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['input_pipeline'] == 'stream'
  assert results['steps_per_epoch'] == 240 and results['num_train_examples'] == 60_000
  assert results['test_accuracy'] > 0.9
  assert sum(results['per_class_errors']) == results['test_errors']
  logits = np.load(tmp_path / 'run' / 'logits.npz')['test']
  assert logits.shape == (10_000, 10)


@pytest.mark.slow
def test_imagenet_streams_under_mock_data_with_a_teacher_in_the_step(tmp_path):
  """The ImageNet path: images of varying sizes cropped to 16 × 16, a teacher in the step."""
  common = dict(dataset='imagenet2012', batch_size=8, eval_batch_size=8, num_epochs=2,
                **{'input.image_size': 16})
  with tfds.testing.mock_data(num_examples=24):
    teacher = loop.train_and_evaluate(_config(**common), str(tmp_path / 'teacher'))
    student = loop.train_and_evaluate(
        _config(**common, **{'teacher.workdir': str(tmp_path / 'teacher'),
                             'model.hidden': (8,), 'sweep.temperature': (2.0, 4.0)}),
        str(tmp_path / 'student'))
  assert teacher['input_pipeline'] == 'stream' and teacher['image_shape'] == [16, 16, 3]
  assert teacher['num_classes'] == 1000 and teacher['steps_per_epoch'] == 3
  assert student['teacher']['cached'] is False  # streamed input: the teacher runs in the step
  assert student['sweep_mode'] == 'vmap' and len(student['members']) == 2
  for member in student['members']:  # each member a complete run of its own
    with open(os.path.join(member['workdir'], 'results.json')) as f:
      assert np.isfinite(json.load(f)['history'][-1]['train_loss'])


@pytest.mark.parametrize('fields, message', [
    ({'dataset': 'imagenet2012', 'input.pipeline': 'device'}, 'does not fit in memory'),
    ({'dataset': 'imagenet2012'}, 'vary in size'),
    ({'input.image_size': 32}, "needs input.pipeline='stream'"),
    ({'input.pipeline': 'stream', 'omit_classes': (3,)}, 'class filters'),
    ({'input.pipeline': 'stream', 'train_examples': 100}, 'a subset'),
    ({'input.pipeline': 'stream', 'teacher.cache': True}, 'cached teacher logits'),
    ({'input.pipeline': 'disk'}, "must be 'auto', 'device' or 'stream'"),
])
def test_streamed_input_config_errors(fields, message):
  with pytest.raises(ConfigError, match=message):
    checks.validate(_config(**fields))


@pytest.mark.slow
def test_imagenet_config_runs_its_recipe_under_mock_data(tmp_path):
  """configs/imagenet_resnet.py as shipped, with the network and sizes shrunk."""
  from configs import imagenet_resnet
  config = imagenet_resnet.get_config()
  checks.validate(config)
  assert config.model.name == 'resnet50' and config.optimizer.learning_rate == 0.4
  config.model = {'name': 'cifar_resnet', 'blocks': (1, 1), 'widths': (8, 8, 16),
                  'stem': 'imagenet', 'dtype': 'bfloat16'}
  config.input.image_size = 32
  config.batch_size = config.eval_batch_size = 8
  config.num_epochs = 1
  config.schedule.warmup_epochs = 0
  with tfds.testing.mock_data(num_examples=16):
    results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['image_shape'] == [32, 32, 3] and results['input_pipeline'] == 'stream'
  assert np.isfinite(results['history'][0]['train_loss'])


def test_every_config_file_validates():
  import importlib
  import pathlib
  # configs/custom.py names the user's own module and folder (docs/custom.md): it runs,
  # with both made, in tests/test_custom.py.
  names = sorted(p.stem for p in pathlib.Path(__file__).parent.parent.glob('configs/*.py')
                 if p.stem not in ('__init__', 'custom'))
  assert 'imagenet_resnet' in names and len(names) >= 6
  for name in names:
    checks.validate(importlib.import_module(f'configs.{name}').get_config())


def test_a_missing_streamed_dataset_is_one_line(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', 'kdjax.main', '--config=configs/imagenet_resnet.py',
                        f'--workdir={tmp_path}/run', f'--config.data_dir={tmp_path}/tfds'],
                       cwd=root, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert out.stderr.strip().splitlines() == [
      f"error: dataset 'imagenet2012' is not in {tmp_path}/tfds and cannot be downloaded "
      f'here: prepare it with `tfds build imagenet2012 --data_dir=DIR` on a machine with '
      f'internet, then copy DIR/imagenet2012 into {tmp_path}/tfds']


def test_fixed_size_images_are_resized_whole(mnist_data_dir):
  info = stream.describe('mnist', data_dir=mnist_data_dir, image_size=14)
  assert info.image_shape == (14, 14, 1)
  (batch, valid), *_ = stream.eval_batches(info, 'test', data_dir=mnist_data_dir,
                                           batch_size=100)
  test = data.load('mnist', data_dir=mnist_data_dir).test
  expected = tf.image.resize(test.images[:100], (14, 14), antialias=True).numpy()
  np.testing.assert_array_equal(batch['images'], np.clip(np.round(expected), 0, 255))
  train = next(stream.train_batches(info, data_dir=mnist_data_dir, global_batch_size=10,
                                    steps=1, seed=0, epoch=1, shuffle_buffer=10))
  assert train['images'].shape == (10, 14, 14, 1)
