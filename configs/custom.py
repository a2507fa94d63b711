r"""A model from one's own module on a folder of one's own images (docs/custom.md).

  python -m kdjax.data.shapes --out=/tmp/shapes --per_class=500
  python -m kdjax.main --config=configs/custom.py --workdir=/tmp/custom/teacher

`my_net.py` (docs/custom.md) must be importable: in the directory the command
runs from, or on PYTHONPATH. Any other folder: --config.dataset=folder:PATH;
any other model: --config.model.name=package.module:factory.
"""

import ml_collections

from kdjax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.dataset = 'folder:/tmp/shapes'
  c.data.image_size = 32
  c.model = ml_collections.ConfigDict({'name': 'my_net:Net', 'options': {'width': 256}})
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 3e-3
  c.schedule.name = 'cosine'
  c.batch_size = 64
  c.eval_batch_size = 200
  c.num_epochs = 20
  c.validation_fraction = 0.1
  c.augment.max_shift = 2
  c.augment.flip = True  # a mirrored shape is the same shape
  return c
