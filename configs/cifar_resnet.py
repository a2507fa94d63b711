r"""A CIFAR-10 ResNet trained alone (teacher or baseline student), the standard recipe.

  python -m kdjax.main --config=configs/cifar_resnet.py --workdir=runs/cifar_resnet20 \
      [--config.model.name=resnet56 --config.dataset=cifar100]

He et al. (2016) §4.2 as RepDistiller and the seeds run it: SGD with Nesterov
momentum 0.9, learning rate 0.1, weight decay 5e-4, cosine decay over 200
epochs, batch 128; 4-pixel zero padding with a random 32×32 crop, random
horizontal flips, per-channel normalisation. Needs the CIFAR data prepared
for tfds (`tfds build cifar10` on a machine with internet, then copy the data
dir). Distil from it with configs/cifar_distill.py.
"""

import ml_collections

from kdjax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.dataset = 'cifar10'
  c.model = ml_collections.ConfigDict({'name': 'resnet20', 'dtype': 'float32'})
  c.augment.max_shift = 4
  c.augment.flip = True
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-4
  c.schedule.name = 'cosine'
  c.batch_size = 128
  c.eval_batch_size = 500
  c.num_epochs = 200
  c.eval_every = 5
  c.checkpoint_every = 5
  return c
