r"""An ImageNet ResNet, streamed through tf.data: the standard 90-epoch recipe.

  python -m kdjax.main --config=configs/imagenet_resnet.py --workdir=runs/imagenet_r50 \
      [--config.model.name=resnet18] [--config.teacher.workdir=runs/imagenet_r101]

Goyal et al. (2017): SGD with momentum 0.9, learning rate 0.1 × batch/256 with
5 warm-up epochs, then cosine decay over 90 epochs; weight decay 1e-4; batch
1024; Inception-style random crops to 224 × 224 and horizontal flips; the
central 87.5 % crop for evaluation. The ResNets use the ImageNet stem (7×7
stride-2 conv, 3×3 max-pool). With `teacher.workdir` the student distils from
a finished ImageNet teacher run, the teacher running inside each train step.
Needs imagenet2012 prepared for tfds (manual download, `tfds build`); run it
as a multi-process job with `--coordinator` (see the README).
"""

import ml_collections

from kdjax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.dataset = 'imagenet2012'
  c.input.pipeline = 'stream'
  c.input.image_size = 224
  c.model = ml_collections.ConfigDict({'name': 'resnet50', 'stem': 'imagenet',
                                       'dtype': 'bfloat16'})
  c.augment.flip = True
  c.batch_size = 1024
  c.eval_batch_size = 1000
  c.optimizer.name = 'sgd'
  c.optimizer.learning_rate = 0.1 * c.batch_size / 256
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.schedule.name = 'cosine'
  c.schedule.warmup_epochs = 5
  c.num_epochs = 90
  c.distill.temperature = 1.0  # the usual ImageNet KD setting (soft-only at T = 1 ... 4)
  c.distill.alpha = 0.5
  return c
