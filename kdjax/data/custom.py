"""Datasets of one's own: a folder of images per class, or any TFDS dataset on disk.

  config.dataset = 'folder:PATH'          PATH/CLASS/*.png|*.jpg, or PATH/train/CLASS
                                          and PATH/test/CLASS (torchvision's and
                                          TFDS's ImageFolder layout)
  config.dataset = 'tfds:NAME[:VERSION]'  a TFDS dataset prepared in config.data_dir
                                          (`tfds build`, `store_as_tfds_dataset`)

Either is decoded once into kdjax's data cache (`kdjax.caching`,
`DIR/data/custom/KEY/`) as MNIST is, with the per-channel mean and standard
deviation of its training split beside it, so a second run maps the arrays
and starts in seconds without TensorFlow. KEY hashes what the arrays depend
on: every image file's path, size and modification time (a folder) or the
TFDS copy's files, and the `config.data` options. A folder's images are
resized to `config.data.image_size` (32 when 0) with bilinear filtering; a
folder without `train/` and `test/` has a seeded held-out test split,
`config.data.test_fraction` of each class; a folder's test split is kept in a
seeded random order (its first N examples sample every class).

A folder is refused in one line when it has no class folders or one class
only, a class folder holds no image, its images mix channel counts, or more
than a few of them cannot be read (up to 5 %: skipped, and said how many).
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from kdjax import caching
from kdjax.data import _tensorflow
from kdjax.errors import ConfigError, DataError

FOLDER = 'folder:'
TFDS = 'tfds:'
FOLDER_IMAGE_SIZE = 32  # a folder's side when config.data.image_size is 0
_FORMAT = 2  # part of every key: a change of the decoded layout decodes again
_EXTENSIONS = ('.png', '.jpg', '.jpeg')
_MAX_UNREADABLE = 0.05  # up to this fraction of unreadable files is skipped
_READ_BATCH_SIZE = 1000
_SPLITS = ('train', 'test')


def is_custom(name) -> bool:
  """Whether `name` is a `folder:` or `tfds:` dataset rather than a catalog name."""
  return isinstance(name, str) and name.startswith((FOLDER, TFDS))


def default_data_dir() -> str:
  """TFDS's data directory: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(
      os.environ.get('TFDS_DATA_DIR', os.path.join('~', 'tensorflow_datasets')))


@dataclasses.dataclass(frozen=True)
class Options:
  """The `config.data` fields (and the data directory) a custom dataset is read with."""
  image_size: int = 0
  test_fraction: float = 0.2
  split_seed: int = 0
  image_key: str = ''
  label_key: str = ''
  train_split: str = 'train'
  test_split: str = 'test'
  data_dir: str = ''

  @classmethod
  def of(cls, config, data_dir: str | None = None) -> 'Options':
    d = config.data
    return cls(image_size=d.image_size, test_fraction=d.test_fraction,
               split_seed=d.split_seed, image_key=d.image_key, label_key=d.label_key,
               train_split=d.train_split, test_split=d.test_split,
               data_dir=os.path.abspath(data_dir or config.data_dir or default_data_dir()))


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A custom dataset decoded: its classes, shape, statistics and both splits.

  Attributes:
    name: the `config.dataset` string.
    key: the cache key (what the arrays depend on, hashed).
    classes: class names, in label order.
    image_shape: (H, W, C).
    mean, std: per-channel statistics of the training split's pixels in [0, 1].
    train, test: (images uint8 [N, H, W, C], labels int32 [N]).
    skipped: unreadable image files left out (a folder).
  """
  name: str
  key: str
  classes: tuple[str, ...]
  image_shape: tuple[int, int, int]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train: tuple[np.ndarray, np.ndarray]
  test: tuple[np.ndarray, np.ndarray]
  skipped: int = 0


# (name, options) -> Prepared, and name -> the options it was last prepared with: the
# catalog, the loader and the teacher's checks ask by name once the config chose them.
_PREPARED: dict = {}
_LAST_OPTIONS: dict = {}


def check_options(config) -> None:
  """Raises ConfigError (one line, naming the field) for a `config.data` value out of range."""
  d = config.data
  if isinstance(d.image_size, bool) or not isinstance(d.image_size, int) or d.image_size < 0:
    raise ConfigError(f'config.data.image_size={d.image_size!r}: must be a whole number >= 0')
  if not isinstance(d.test_fraction, (int, float)) or not 0 < d.test_fraction < 1:
    raise ConfigError(f'config.data.test_fraction={d.test_fraction!r}: must be in (0, 1)')
  if isinstance(d.split_seed, bool) or not isinstance(d.split_seed, int) or d.split_seed < 0:
    raise ConfigError(f'config.data.split_seed={d.split_seed!r}: must be a whole number >= 0')
  for field in ('image_key', 'label_key', 'train_split', 'test_split'):
    if not isinstance(d[field], str):
      raise ConfigError(f'config.data.{field}={d[field]!r}: must be a string')


def prepare(name: str, options: Options) -> Prepared:
  """Decodes `name` (or maps it from the cache) with `options`; remembers them for `get`."""
  _LAST_OPTIONS[name] = options
  if (name, options) not in _PREPARED:
    if name.startswith(FOLDER):
      _PREPARED[name, options] = _prepare_folder(name, options)
    else:
      _PREPARED[name, options] = _prepare_tfds(name, options)
  return _PREPARED[name, options]


def get(name: str) -> Prepared:
  """`name` as last prepared in this process, else with the default options."""
  return prepare(name, _LAST_OPTIONS.get(name) or Options(data_dir=default_data_dir()))


# --- folders ---------------------------------------------------------------------------


def _class_folders(name: str, root: str) -> dict[str, list[str]]:
  """Class name -> its image files (sorted), for one folder of class folders."""
  classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith('.'))
  if not classes:
    raise DataError(f'{name}: {root} has no class folders; put each class\'s images in a '
                    'sub-directory named after it')
  out = {}
  for label in classes:
    folder = os.path.join(root, label)
    files = sorted(e.path for e in os.scandir(folder)
                   if e.is_file() and e.name.lower().endswith(_EXTENSIONS))
    if not files:
      raise DataError(f'{name}: class folder {folder} holds no JPEG or PNG images')
    out[label] = files
  if len(out) < 2:
    raise DataError(f'{name}: one class only ({classes[0]}); a classifier needs two or more '
                    'class folders')
  return out


def _listing(name: str) -> tuple[dict, dict | None]:
  """(train, test) class listings; test is None without PATH/train and PATH/test."""
  root = os.path.abspath(os.path.expanduser(name[len(FOLDER):]))
  if not os.path.isdir(root):
    raise ConfigError(f'config.dataset={name!r}: {root} is not a directory')
  train_dir, test_dir = os.path.join(root, 'train'), os.path.join(root, 'test')
  if not (os.path.isdir(train_dir) and os.path.isdir(test_dir)):
    return _class_folders(name, root), None
  train, test = _class_folders(name, train_dir), _class_folders(name, test_dir)
  if list(train) != list(test):
    raise DataError(f'{name}: train/ has classes {", ".join(train)} but test/ has '
                    f'{", ".join(test)}; give both the same class folders')
  return train, test


def _folder_key(train: dict, test: dict | None, options: Options) -> str:
  digest = hashlib.sha256(f'folder {_FORMAT} {_folder_size(options)} '
                          f'{options.test_fraction} {options.split_seed}\n'.encode())
  for part, listing in (('train', train), ('test', test or {})):
    for label, files in listing.items():
      for path in files:
        stat = os.stat(path)
        digest.update(f'{part}\0{label}\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()[:20]


def _folder_size(options: Options) -> int:
  return options.image_size or FOLDER_IMAGE_SIZE


def _prepare_folder(name: str, options: Options) -> Prepared:
  train, test = _listing(name)
  key = _folder_key(train, test, options)
  cached = _read_cache(name, key)
  if cached is not None:
    return cached
  size = _folder_size(options)
  parts = [_decode_files(listing, size) for listing in (train, test) if listing is not None]
  bad = [entry for part in parts for entry in part[2]]
  total = sum(len(files) for listing in (train, test or {}) for files in listing.values())
  _check_unreadable(name, bad, total)
  channels = {}
  for part in parts:
    for count, path in part[3].items():
      channels.setdefault(count, path)
  if len(channels) > 1:
    raise DataError(f'{name}: images mix channel counts (grayscale, e.g. {channels[1]}; '
                    f'colour, e.g. {channels[3]}); convert them to one kind')
  for part in parts:
    counts = np.bincount(part[1], minlength=len(train))
    if not counts.all():
      missing = list(train)[int(np.argmin(counts))]
      raise DataError(f'{name}: class {missing!r} has no readable image')
  parts = [(np.stack(part[0]), part[1]) for part in parts]
  if test is None:
    images, labels = parts[0]
    is_test = _held_out(labels, options.test_fraction, options.split_seed)
    splits = (images[~is_test], labels[~is_test]), (images[is_test], labels[is_test])
  else:
    splits = parts[0], parts[1]
  # The test split in a seeded order, so that its first N examples (`kdjax.evaluate
  # --examples=N`) sample every class; training order is the data seed's, every epoch.
  (test_images, test_labels) = splits[1]
  order = np.random.default_rng(options.split_seed).permutation(len(test_labels))
  splits = splits[0], (test_images[order], test_labels[order])
  prepared = _prepared(name, key, tuple(train), *splits, len(bad))
  _write_cache(prepared)
  return prepared


def _decode_files(listing: dict, size: int):
  """Every file of a class listing decoded and resized to `size` x `size`.

  Returns:
    (N images, each uint8 [size, size, C], labels int32 [N], unreadable
    files as (path, reason), channel count -> the first file that has it).
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel  # only a folder needs it
  images, labels, channels, bad = [], [], {}, []
  for label, files in enumerate(listing.values()):
    for path in files:
      try:
        with Image.open(path) as image:
          image.load()
          gray = image.mode in ('1', 'L', 'LA', 'I', 'I;16', 'F')
          image = image.convert('L' if gray else 'RGB').resize((size, size), Image.BILINEAR)
          pixels = np.asarray(image, np.uint8).reshape(size, size, -1)
      except Exception as e:  # pylint: disable=broad-except  # PIL raises many kinds
        bad.append((path, type(e).__name__))
        continue
      channels.setdefault(pixels.shape[-1], path)
      images.append(pixels)
      labels.append(label)
  return images, np.asarray(labels, np.int32), bad, channels


def _check_unreadable(name: str, bad: list, total: int) -> None:
  if not bad:
    return
  path, reason = bad[0]
  if len(bad) > _MAX_UNREADABLE * total:
    raise DataError(f'{name}: {len(bad)} of {total} images cannot be read (e.g. {path}: '
                    f'{reason}); remove or replace them')
  print(f'{name}: skipped {len(bad)} unreadable image(s) of {total} (e.g. {path}: {reason})',
        flush=True)


def _held_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
  """A seeded test split: `fraction` of each class (at least one, never all of it)."""
  rng = np.random.default_rng(seed)
  is_test = np.zeros(len(labels), bool)
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = min(max(1, round(fraction * len(members))), len(members) - 1)
    is_test[rng.permutation(members)[:count]] = True
  if not is_test.any():
    raise DataError('every class has a single image: nothing to hold out as a test split')
  return is_test


def _prepared(name, key, classes, train, test, skipped) -> Prepared:
  """A Prepared with the training split's statistics (float64 sums: exact enough for 1e8 px)."""
  images = train[0]
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  mean = pixels.mean(axis=0)
  std = np.sqrt(np.maximum((pixels ** 2).mean(axis=0) - mean ** 2, 0.0))
  for array in (*train, *test):
    array.flags.writeable = False
  return Prepared(name=name, key=key, classes=tuple(classes),
                  image_shape=tuple(int(n) for n in images.shape[1:]),
                  mean=tuple(round(float(m), 6) for m in mean),
                  std=tuple(round(float(max(s, 1e-6)), 6) for s in std),
                  train=train, test=test, skipped=skipped)


# --- TFDS datasets -----------------------------------------------------------------------


def _version_dir(name: str, data_dir: str) -> str:
  """The TFDS copy `tfds:NAME[:VERSION]` names in `data_dir` (the newest version if none)."""
  tfds_name, _, version = name[len(TFDS):].partition(':')
  folder = os.path.join(data_dir, tfds_name)
  if version:
    versions = [version] if os.path.isfile(os.path.join(folder, version,
                                                        'dataset_info.json')) else []
  else:
    versions = sorted((v for v in (os.listdir(folder) if os.path.isdir(folder) else ())
                       if os.path.isfile(os.path.join(folder, v, 'dataset_info.json'))),
                      key=lambda v: tuple(int(p) if p.isdigit() else -1 for p in v.split('.')))
  if not tfds_name or not versions:
    raise DataError(f'{name}: no prepared TFDS dataset {tfds_name!r}'
                    f'{" version " + version if version else ""} in {data_dir}; build it with '
                    f'`tfds build` (or store_as_tfds_dataset) into config.data_dir')
  return os.path.join(folder, versions[-1])


def directory_fingerprint(version_dir: str) -> str | None:
  """A hash of a TFDS copy: every file's name, size and mtime, and dataset_info.json."""
  info_file = os.path.join(version_dir, 'dataset_info.json')
  if not os.path.isfile(info_file):
    return None
  digest = hashlib.sha256()
  for entry in sorted(os.scandir(version_dir), key=lambda e: e.name):
    if entry.is_file():
      stat = entry.stat()
      digest.update(f'{entry.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n'.encode())
  with open(info_file, 'rb') as f:
    digest.update(f.read())
  return digest.hexdigest()[:20]


def _prepare_tfds(name: str, options: Options) -> Prepared:
  version_dir = _version_dir(name, options.data_dir)
  fields = (options.image_size, options.image_key, options.label_key, options.train_split,
            options.test_split)
  key = hashlib.sha256(f'tfds {_FORMAT} {directory_fingerprint(version_dir)} {fields}'
                       .encode()).hexdigest()[:20]
  cached = _read_cache(name, key)
  if cached is not None:
    return cached
  builder, image_key, label_key = _tfds_features(name, version_dir, options)
  classes = tuple(builder.info.features[label_key].names)
  splits = [_decode_tfds_split(name, builder, split, image_key, label_key, options)
            for split in (options.train_split, options.test_split)]
  prepared = _prepared(name, key, classes, *splits, 0)
  _write_cache(prepared)
  return prepared


def _tfds_features(name: str, version_dir: str, options: Options):
  """(builder, image feature key, label feature key): named, else the one of each kind."""
  _tensorflow.load()
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = tfds.builder_from_directory(version_dir)
  features = builder.info.features
  keys = list(features.keys())
  kinds = {'image': tfds.features.Image, 'label': tfds.features.ClassLabel}
  chosen = {}
  for kind, feature_type in kinds.items():
    given = getattr(options, f'{kind}_key')
    if given:
      if given not in keys or not isinstance(features[given], feature_type):
        raise ConfigError(f'config.data.{kind}_key={given!r}: {name} has no '
                          f'{feature_type.__name__} feature of that name; its features: '
                          f'{", ".join(keys)}')
      chosen[kind] = given
      continue
    found = sorted(k for k in keys if isinstance(features[k], feature_type))
    if len(found) != 1:
      raise ConfigError(f'config.data.{kind}_key={given!r}: {name} has '
                        f'{len(found)} {feature_type.__name__} features '
                        f'({", ".join(found) or "none"}); name one')
    chosen[kind] = found[0]
  for field in ('train_split', 'test_split'):
    if getattr(options, field) not in builder.info.splits:
      raise ConfigError(f'config.data.{field}={getattr(options, field)!r}: {name} has splits '
                        f'{", ".join(builder.info.splits)}')
  if not options.image_size and None in features[chosen['image']].shape[:2]:
    raise ConfigError(f'config.data.image_size=0: {name} images vary in size; give a size')
  return builder, chosen['image'], chosen['label']


def _decode_tfds_split(name, builder, split, image_key, label_key, options):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  size = options.image_size

  def pair(example):
    image = example[image_key]
    if size:
      image = tf.image.resize(image, (size, size), method='bilinear', antialias=True)
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image, example[label_key]

  ds = builder.as_dataset(split=split, shuffle_files=False)
  ds = ds.map(pair).batch(_READ_BATCH_SIZE)
  images, labels = [], []
  for image_batch, label_batch in ds.as_numpy_iterator():
    images.append(image_batch)
    labels.append(label_batch)
  if not labels:
    raise DataError(f'{name}: split {split!r} is empty')
  return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int32)


# --- the cache ---------------------------------------------------------------------------


def _cache_folder(key: str) -> str | None:
  root = caching.data_dir()
  return os.path.join(root, 'custom', key) if root else None


def _read_cache(name: str, key: str) -> Prepared | None:
  folder = _cache_folder(key)
  meta_file = folder and os.path.join(folder, 'meta.json')
  if not meta_file or not os.path.isfile(meta_file):
    return None
  with open(meta_file) as f:
    meta = json.load(f)
  arrays = {f'{split}.{part}': np.load(os.path.join(folder, f'{split}.{part}.npy'),
                                       mmap_mode='r').view(np.ndarray)
            for split in _SPLITS for part in ('images', 'labels')}
  return Prepared(name=name, key=key, classes=tuple(meta['classes']),
                  image_shape=tuple(meta['image_shape']), mean=tuple(meta['mean']),
                  std=tuple(meta['std']), skipped=meta['skipped'],
                  train=(arrays['train.images'], arrays['train.labels']),
                  test=(arrays['test.images'], arrays['test.labels']))


def _write_cache(prepared: Prepared) -> None:
  """The arrays, then meta.json: a reader that finds meta.json finds every array."""
  folder = _cache_folder(prepared.key)
  if folder is None:
    return
  try:
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.staging-', dir=os.path.dirname(folder))
    try:
      for split, (images, labels) in zip(_SPLITS, (prepared.train, prepared.test)):
        np.save(os.path.join(staging, f'{split}.images.npy'), images)
        np.save(os.path.join(staging, f'{split}.labels.npy'), labels)
      with open(os.path.join(staging, 'meta.json'), 'w') as f:
        json.dump({'name': prepared.name, 'classes': list(prepared.classes),
                   'image_shape': list(prepared.image_shape), 'mean': list(prepared.mean),
                   'std': list(prepared.std), 'skipped': prepared.skipped}, f)
      os.rename(staging, folder)
    except OSError:
      shutil.rmtree(staging, ignore_errors=True)  # another process put it in place first
  except OSError:
    pass  # a cache that cannot be written is only a slower next run
