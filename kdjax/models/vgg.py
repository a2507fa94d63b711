"""VGG networks with BatchNorm for 32x32 images.

Every conv is 3x3 with bias, padding 1, then BatchNorm and ReLU. Convs are
grouped in 5 stages of widths 64/128/256/512/512; some stages end in a 2x2
max-pool, and after the last stage a global average pool feeds a single
linear layer 512 -> classes.

* `vgg11`, `vgg13`, `vgg16`, `vgg19`: the layout of the widely used
  pytorch-cifar code: configurations A, B, D, E of Simonyan & Zisserman
  (1, 1, 2, 2, 2 / 2, 2, 2, 2, 2 / 2, 2, 3, 3, 3 / 2, 2, 4, 4, 4 convs per
  stage) with a max-pool after every stage, so a 32x32 input reaches 1x1 and
  the global pool is the identity.
* `vgg8`: RepDistiller's (Tian et al., CRD, 2020) `vgg8_bn`: one conv per
  stage and max-pools after the first three stages only (for 32x32 inputs
  that code skips its fourth pool), so stages 4 and 5 run at 4x4 before the
  global pool. Five convs and the linear layer.

Max-pools pad odd sizes up (PyTorch's ceil mode), so a 28x28 input also
survives five pools (28, 14, 7, 4, 2, 1); at 32x32 this changes nothing.

Features (`return_features=True`): 'stage1' ... 'stage5' (after the stage's
last ReLU, before its pool, NHWC), 'stage1_preact' ... (the same before that
ReLU), 'pooled' (B, 512) and 'logits'.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models import layers
from kdjax.models.registry import compute_dtype, register

_BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)

_STAGE_WIDTHS = (64, 128, 256, 512, 512)
_LAYOUTS = {
    'vgg8': ((1, 1, 1, 1, 1), (True, True, True, False, False)),
    'vgg11': ((1, 1, 2, 2, 2), (True,) * 5),
    'vgg13': ((2, 2, 2, 2, 2), (True,) * 5),
    'vgg16': ((2, 2, 3, 3, 3), (True,) * 5),
    'vgg19': ((2, 2, 4, 4, 4), (True,) * 5),
}


class VGG(nn.Module):
  """Stages of conv-BN-ReLU, optional max-pools, global pool, linear head.

  Attributes:
    num_classes: number of logits.
    stages: conv widths of each stage, e.g. ((64,), (128,), (256, 256), ...).
    pool_after: for each stage, whether a 2x2 max-pool follows it.
    dtype: computation dtype (parameters stay float32, logits are float32).
  """
  num_classes: int
  stages: Sequence[Sequence[int]]
  pool_after: Sequence[bool]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             dtype=self.dtype, **_BATCH_NORM)
    features = {}
    x = images.astype(self.dtype)
    for stage, (widths, pool) in enumerate(
        zip(self.stages, self.pool_after), start=1):
      for index, width in enumerate(widths):
        x = layers.Conv(width, (3, 3), padding=[(1, 1), (1, 1)], dtype=self.dtype,
                        name=f'stage{stage}_conv{index}')(x)
        preact = norm(name=f'stage{stage}_bn{index}')(x)
        x = nn.relu(preact)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
      if pool:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
    x = jnp.mean(x, axis=(1, 2))
    features['pooled'] = x
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    logits = logits.astype(jnp.float32)
    features['logits'] = logits
    return (logits, features) if return_features else logits


def _register(name, convs_per_stage, pool_after):
  def factory(*, num_classes: int, dtype='float32'):
    stages = tuple((width,) * count
                   for width, count in zip(_STAGE_WIDTHS, convs_per_stage))
    return VGG(num_classes=num_classes, stages=stages,
               pool_after=pool_after, dtype=compute_dtype(dtype))

  factory.__name__ = name
  pooled = tuple(stage for stage, pool in enumerate(pool_after, 1) if pool)
  factory.__doc__ = (f'{name}: {convs_per_stage} convs per stage of widths '
                     f'{_STAGE_WIDTHS}, max-pool after stages {pooled}.')
  register(name)(factory)


for _name, (_convs, _pools) in _LAYOUTS.items():
  _register(_name, _convs, _pools)
