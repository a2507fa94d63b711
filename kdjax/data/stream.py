"""Datasets streamed from TFDS through tf.data, batch by batch.

For datasets too large to hold in memory (ImageNet), or when asked
(`config.input.pipeline='stream'`). Training batches are read from each
process's own share of the split (`tfds.split_for_jax_process`), shuffled
with a seed that depends on the epoch (so an interrupted run resumes on the
same example order), decoded, cropped and resized on the host, batched and
prefetched; `device_batches` puts them on the devices ahead of the step.
Evaluation reads the whole split in its stored order, padding the last batch.

Images of datasets whose sizes vary are brought to `image_size` × `image_size`
with the usual ImageNet recipe: training takes an Inception-style random crop
(8 %–100 % of the area, aspect ratio 3/4–4/3) resized to the target;
evaluation resizes the shorter side to `image_size / 0.875` and takes the
central crop. Fixed-size datasets keep their images, or are resized whole to
`image_size` when it differs (e.g. CIFAR for a network built for larger
inputs); their augmentation runs on the devices inside the train step.
"""

import collections
import dataclasses
import functools
import re
from typing import Iterator

import jax
import numpy as np

from kdjax.data import _tensorflow

tf = _tensorflow.load()
import tensorflow_datasets as tfds  # noqa: E402

from kdjax.data import catalog  # noqa: E402
from kdjax.data import custom  # noqa: E402
from kdjax.data import loading  # noqa: E402
from kdjax.errors import ConfigError, DataError  # noqa: E402

# The fraction of the resized image kept by the central evaluation crop.
_EVAL_CROP_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class StreamInfo:
  """What a streamed run needs to know before reading any example.

  Attributes:
    name: the TFDS name.
    num_classes: number of label classes.
    image_shape: (H, W, C) of every batch the stream yields.
    mean: per-channel mean of pixels scaled to [0, 1].
    std: per-channel standard deviation.
    num_train_examples: examples in the training split (all processes).
    train_split: the TFDS split string training reads.
    eval_splits: name ('test', 'validation') -> TFDS split string.
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  num_train_examples: int
  train_split: str
  eval_splits: dict


def describe(name: str, *, data_dir: str | None, image_size: int,
             validation_fraction: float = 0.0) -> StreamInfo:
  """Checks that `name` can be streamed from `data_dir` and describes it.

  Args:
    name: a dataset of `catalog.DATASETS`.
    data_dir: the TFDS data directory; TFDS's default when None.
    image_size: the side of the square images to yield; 0 keeps the
      dataset's own fixed size (an error for datasets whose sizes vary).
    validation_fraction: the last fraction of TFDS's train split held out
      as 'validation' (a contiguous slice of the stored order: a streamed
      split cannot be subsampled at random without reading it whole).

  Raises:
    DataError: the dataset is unknown or not prepared in `data_dir`.
    ConfigError: `image_size` is needed and missing, or the validation
      fraction leaves an empty split.
  """
  info = catalog.get_info(name)
  if custom.is_custom(name):
    return _describe_custom(info, image_size)
  data_dir = data_dir or loading.default_data_dir()
  if info.image_shape is None and not image_size:
    raise ConfigError(f'{name} images vary in size: set config.input.image_size '
                      '(e.g. 224)')
  channels = info.image_shape[2] if info.image_shape else len(info.mean)
  shape = ((image_size, image_size, channels) if image_size
           else tuple(info.image_shape))
  train_split = 'train'
  eval_splits = {'test': info.test_split}
  _open(name, 'train', data_dir, shuffle_seed=None)  # DataError now if it is not there
  num_train = _num_examples(name, 'train', data_dir)
  if validation_fraction > 0:
    held_out = round(validation_fraction * num_train)
    if not 0 < held_out < num_train:
      raise ConfigError(f'validation_fraction={validation_fraction} of {num_train} training '
                        'examples leaves an empty split')
    train_split = f'train[:{num_train - held_out}]'
    eval_splits['validation'] = f'train[{num_train - held_out}:]'
    num_train -= held_out
  return StreamInfo(name=name, num_classes=info.num_classes, image_shape=shape,
                    mean=info.mean, std=info.std, num_train_examples=num_train,
                    train_split=train_split, eval_splits=eval_splits)


def _describe_custom(info: catalog.DatasetInfo, image_size: int) -> StreamInfo:
  """A `folder:` / `tfds:` dataset, evaluated from its decoded arrays (it is never streamed)."""
  if image_size and (image_size, image_size) != tuple(info.image_shape[:2]):
    raise ConfigError(f'config.input.image_size={image_size}: {info.name} is decoded at '
                      f'{info.image_shape[0]}x{info.image_shape[1]} (config.data.image_size)')
  train_images, _ = custom.get(info.name).train
  return StreamInfo(name=info.name, num_classes=info.num_classes,
                    image_shape=tuple(info.image_shape), mean=info.mean, std=info.std,
                    num_train_examples=len(train_images), train_split='train',
                    eval_splits={'test': 'test'})


def _custom_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """'train' or 'test', or its first N examples ('test[:N]'), of a decoded custom dataset."""
  match = re.fullmatch(r'(train|test)(?:\[:(\d+)\])?', split)
  if not match:
    raise ValueError(f"{name} has the splits 'train' and 'test' (or 'test[:N]')")
  images, labels = getattr(custom.get(name), match.group(1))
  count = int(match.group(2)) if match.group(2) else len(labels)
  return images[:count], labels[:count]


def _num_examples(name: str, split: str, data_dir: str) -> int:
  """The split's size from the dataset's metadata, else by counting once."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    splits = builder.info.splits
    if split in splits and splits[split].num_examples:
      return int(splits[split].num_examples)
  except Exception:  # pylint: disable=broad-except  # counted below instead
    pass
  return int(_open(name, split, data_dir, shuffle_seed=None).reduce(
      np.int64(0), lambda count, _: count + 1).numpy())


def _open(name: str, split, data_dir: str, shuffle_seed: int | None) -> tf.data.Dataset:
  try:
    return tfds.load(name, split=split, data_dir=data_dir, download=False,
                     as_supervised=True, shuffle_files=shuffle_seed is not None,
                     read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                                 try_autocache=False))
  except AssertionError as e:  # TFDS's way of saying the data is missing
    raise DataError(loading.missing_dataset_message(name, data_dir)) from e


def _inception_crop(image: tf.Tensor, size: int, seed) -> tf.Tensor:
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), bounding_boxes=tf.zeros([1, 0, 4]), seed=seed,
      area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
      min_object_covered=0.0, max_attempts=10, use_image_if_no_bounding_boxes=True)
  image = tf.slice(image, begin, crop_size)
  return _resize(image, (size, size))


def _central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """torchvision's evaluation crop: `Resize(round(size / 0.875))`, then `CenterCrop(size)`.

  The shorter side becomes round(size / 0.875) (256 for 224), the longer
  side int(that × long / short); the crop's offsets are round((side − size)
  / 2) with halves to even: the same arithmetic as torchvision, so a
  teacher imported from torchvision sees the pixels it was evaluated on.
  """
  shape = tf.cast(tf.shape(image)[:2], tf.float64)
  target = float(round(size / _EVAL_CROP_FRACTION))
  short, long = tf.reduce_min(shape), tf.reduce_max(shape)
  new_long = tf.floor(target * long / short)
  new_hw = tf.where(shape[0] <= shape[1], tf.stack([target, new_long]),
                    tf.stack([new_long, target]))
  image = _resize(image, tf.cast(new_hw, tf.int32))
  top, left = tf.unstack(tf.cast(tf.round((new_hw - size) / 2), tf.int32))
  return image[top:top + size, left:left + size]


def eval_transform(image, size: int):
  """An image (uint8 HWC) as the evaluation pipeline of datasets whose sizes vary feeds it."""
  return _central_crop(tf.convert_to_tensor(image), size).numpy()


def _resize(image: tf.Tensor, size) -> tf.Tensor:
  image = tf.image.resize(image, size, method='bilinear', antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _transform(name: str, shape, training: bool):
  """The host-side image transform bringing `name`'s images to `shape`, or None."""
  stored = catalog.get_info(name).image_shape
  size = shape[0]
  if stored is None:  # sizes vary: the ImageNet crops
    if training:
      return lambda image, seed: _inception_crop(image, size, seed)
    return lambda image: _central_crop(image, size)
  if tuple(stored) == tuple(shape):
    return None
  resize = lambda image: _resize(image, (size, size))
  return (lambda image, seed: resize(image)) if training else resize


def train_batches(info: StreamInfo, *, data_dir: str | None, global_batch_size: int,
                  steps: int, seed: int, epoch: int, shuffle_buffer: int,
                  host_prefetch: int = 2) -> Iterator[dict]:
  """This process's part of each global training batch of one epoch.

  Yields `steps` dicts of numpy `images` (uint8, [B / P, H, W, C]) and
  `labels` (int32), B the global batch size and P the number of processes.
  The order depends only on (`seed`, `epoch`) and the process index.
  """
  data_dir = data_dir or loading.default_data_dir()
  local_batch = global_batch_size // jax.process_count()
  epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % 2**31)
  ds = _open(info.name, tfds.split_for_jax_process(info.train_split), data_dir,
             shuffle_seed=epoch_seed)
  ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
  transform = _transform(info.name, info.image_shape, training=True)
  if transform is not None:
    crop_seeds = tf.data.Dataset.random(seed=epoch_seed).batch(2)
    ds = tf.data.Dataset.zip((ds, crop_seeds)).map(
        lambda example, crop_seed: (transform(example[0], crop_seed), example[1]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local_batch, drop_remainder=True).take(steps)
  ds = ds.map(_as_batch).prefetch(host_prefetch)
  produced = 0
  for batch in tfds.as_numpy(ds):
    produced += 1
    yield batch
  if produced < steps:
    raise DataError(f'{info.name} {info.train_split} gave {produced} batches of '
                    f'{local_batch} in process {jax.process_index()}, expected {steps}')


def eval_batches(info: StreamInfo, split: str, *, data_dir: str | None,
                 batch_size: int) -> Iterator[tuple[dict, int]]:
  """Every example of `split` in stored order, `batch_size` at a time.

  Yields (batch, valid): the last batch is padded with zeros to
  `batch_size`, and `valid` says how many of its examples are real.
  Every process reads the whole split.
  """
  if custom.is_custom(info.name):
    images, labels = _custom_split(info.name, split)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
  else:
    ds = _open(info.name, split, data_dir or loading.default_data_dir(), shuffle_seed=None)
  transform = _transform(info.name, info.image_shape, training=False)
  if transform is not None:
    ds = ds.map(lambda image, label: (transform(image), label),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).map(_as_batch).prefetch(2)
  for batch in tfds.as_numpy(ds):
    valid = len(batch['labels'])
    if valid < batch_size:
      batch = {k: np.concatenate([v, np.zeros((batch_size - valid, *v.shape[1:]), v.dtype)])
               for k, v in batch.items()}
    yield batch, valid


def _as_batch(images, labels):
  return {'images': tf.cast(images, tf.uint8), 'labels': tf.cast(labels, tf.int32)}


def device_batches(batches: Iterator[dict], sharding, size: int = 2) -> Iterator[dict]:
  """Puts host batches on the devices `size` batches ahead of their use.

  Each process gives its own rows; the global array is sharded by
  `sharding` (the batch axis over the mesh's data axis).
  """
  put = functools.partial(jax.make_array_from_process_local_data, sharding)
  queue = collections.deque()
  for batch in batches:
    queue.append(jax.tree.map(put, batch))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
