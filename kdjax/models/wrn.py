"""Wide residual networks (Zagoruyko & Komodakis, 2016) for 32x32 images.

WRN-d-k: a 3x3 conv of 16 channels, three groups of (d - 4) / 6 pre-activation
blocks of widths 16k, 32k, 64k (the second and third groups halve the
resolution), BatchNorm + ReLU, global average pooling, a linear head. A block
is BN-ReLU-conv3x3-BN-ReLU-conv3x3 added to its input, or, where the width or
stride changes, to a 1x1 conv of the pre-activated input (the layout of the
reference CIFAR implementations used by the distillation benchmarks:
`wrn_40_2` has 2,255,156 parameters with 100 classes, `wrn_16_2` 703,284,
`wrn_40_1` 569,780).

Features (`return_features=True`): 'stem', 'stage1' ... 'stage3' (each group's
output: pre-activations, as the references hand them to feature losses),
'final' (after the last BatchNorm + ReLU), 'pooled' (B, C) and 'logits'.
'stage1_preact' ... 'stage3_preact': each group's output as the next BatchNorm
normalises it, right before its ReLU (the next group's first block, or the final
BatchNorm), as RepDistiller's WRN returns with `preact=True`.
"""

import flax.linen as nn
import jax.numpy as jnp

from kdjax.errors import ConfigError
from kdjax.models.registry import compute_dtype, register
from kdjax.models.layers import batch_norm, conv as _conv, pooled_head


class WideBlock(nn.Module):
  """One pre-activation block; a 1x1 projection of the activated input where shapes change."""
  features: int
  stride: int
  dropout: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = batch_norm(train, self.dtype)
    normed = norm(name='bn1')(x)  # the input right before its ReLU
    activated = nn.relu(normed)
    project = self.stride != 1 or x.shape[-1] != self.features
    y = _conv(self.features, 3, self.stride, self.dtype, 'conv1')(activated)
    y = nn.relu(norm(name='bn2')(y))
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = _conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    shortcut = (_conv(self.features, 1, self.stride, self.dtype, 'shortcut')(activated)
                if project else x)
    return y + shortcut, normed


class WideResNet(nn.Module):
  num_classes: int
  depth: int = 40
  widen: int = 2
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    features = {}
    blocks = (self.depth - 4) // 6
    x = _conv(16, 3, 1, self.dtype, 'stem_conv')(images.astype(self.dtype))
    features['stem'] = x
    for stage, width in enumerate((16 * self.widen, 32 * self.widen, 64 * self.widen), start=1):
      for index in range(blocks):
        stride = 2 if stage > 1 and index == 0 else 1
        x, normed = WideBlock(width, stride, self.dropout, self.dtype,
                              name=f'stage{stage}_block{index}')(x, train=train)
        if index == 0 and stage > 1:  # the last stage's output, normalised by this block
          features[f'stage{stage - 1}_preact'] = normed
      features[f'stage{stage}'] = x
    normed = batch_norm(train, self.dtype)(name='final_bn')(x)
    features[f'stage{stage}_preact'] = normed  # the last group's, by the final BatchNorm
    x = nn.relu(normed)
    features['final'] = x
    return pooled_head(x, features, self.num_classes, self.dtype, return_features)


@register('wrn')
def wrn(*, num_classes: int, depth: int = 40, widen: int = 2, dropout: float = 0.0,
        dtype: str = 'float32') -> WideResNet:
  """WRN-depth-widen; depth = 6n + 4 for n >= 1 blocks per group."""
  if depth < 10 or (depth - 4) % 6:
    raise ConfigError(f'model.depth={depth} must be 6n + 4 with n >= 1 (e.g. 16, 28, 40)')
  if widen < 1:
    raise ConfigError(f'model.widen={widen} must be >= 1')
  if not 0.0 <= dropout < 1.0:
    raise ConfigError(f'model.dropout={dropout} must be in [0, 1)')
  return WideResNet(num_classes=num_classes, depth=int(depth), widen=int(widen),
                    dropout=float(dropout), dtype=compute_dtype(dtype))


def _register(depth: int, widen: int) -> None:
  def factory(*, num_classes: int, dropout: float = 0.0, dtype: str = 'float32'):
    return wrn(num_classes=num_classes, depth=depth, widen=widen, dropout=dropout, dtype=dtype)

  factory.__name__ = f'wrn_{depth}_{widen}'
  factory.__doc__ = f'WRN-{depth}-{widen}.'
  register(factory.__name__)(factory)


for _depth, _widen in ((16, 1), (16, 2), (16, 4), (28, 10), (40, 1), (40, 2), (40, 4)):
  _register(_depth, _widen)
