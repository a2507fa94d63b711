"""MobileNetV2 (Sandler et al., 2018) for 32x32 images, as the CIFAR distillation
benchmarks build it.

A stride-2 3x3 conv, seven groups of inverted residual blocks (1x1 expand by t,
3x3 depthwise, 1x1 linear projection; a residual where stride and width allow),
a 1x1 conv to 1280 channels, average pooling and a linear head. Widths are
scaled by `width` (floored, the stem's too), the last conv keeps 1280 unless
`width` > 1. The benchmarks' `mobilenetv2` is t = 6, width 0.5 (812,836
parameters with 100 classes). Unlike torchvision's, the first group's block also
has its 1x1 expansion (t = 1).

Features (`return_features=True`): 'stem', 'stage1' ... 'stage4' (the outputs of
groups 2, 3, 5 and 7: linear projections, i.e. pre-activations), 'final' (the
1280-channel map), 'pooled' and 'logits'; 'stage1_preact' ... 'stage4_preact' are the
stages' maps again (no ReLU follows a linear projection).
"""

import flax.linen as nn
import jax.numpy as jnp

from kdjax.errors import ConfigError
from kdjax.models.registry import compute_dtype, register
from kdjax.models.layers import batch_norm, conv as _conv, pooled_head
# (expansion, channels, blocks, stride) of the seven groups; t is the model's.
_GROUPS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
           (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
_FEATURE_GROUPS = {1: 'stage1', 2: 'stage2', 4: 'stage3', 6: 'stage4'}  # 0-based groups


class InvertedResidual(nn.Module):
  features: int
  stride: int
  expansion: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = batch_norm(train, self.dtype)
    hidden = x.shape[-1] * self.expansion
    y = nn.relu(norm(name='expand_bn')(_conv(hidden, 1, 1, self.dtype, 'expand')(x)))
    y = nn.relu(norm(name='depthwise_bn')(
        _conv(hidden, 3, self.stride, self.dtype, 'depthwise', groups=hidden)(y)))
    y = norm(name='project_bn')(_conv(self.features, 1, 1, self.dtype, 'project')(y))
    return x + y if self.stride == 1 and x.shape[-1] == self.features else y


class MobileNetV2(nn.Module):
  num_classes: int
  expansion: int = 6
  width: float = 0.5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    norm = batch_norm(train, self.dtype)
    features = {}
    x = _conv(int(32 * self.width), 3, 2, self.dtype, 'stem_conv')(images.astype(self.dtype))
    x = nn.relu(norm(name='stem_bn')(x))
    features['stem'] = x
    for group, (expansion, channels, blocks, stride) in enumerate(_GROUPS):
      for index in range(blocks):
        x = InvertedResidual(int(channels * self.width), stride if index == 0 else 1,
                             expansion or self.expansion, self.dtype,
                             name=f'group{group}_block{index}')(x, train=train)
      if group in _FEATURE_GROUPS:
        # Linear bottlenecks: no ReLU follows, so a stage's map is its own pre-activation.
        features[_FEATURE_GROUPS[group]] = x
        features[f'{_FEATURE_GROUPS[group]}_preact'] = x
    last = int(1280 * self.width) if self.width > 1.0 else 1280
    x = nn.relu(norm(name='final_bn')(_conv(last, 1, 1, self.dtype, 'final_conv')(x)))
    features['final'] = x
    return pooled_head(x, features, self.num_classes, self.dtype, return_features)


@register('mobilenetv2')
def mobilenetv2(*, num_classes: int, expansion: int = 6, width: float = 0.5,
                dtype: str = 'float32') -> MobileNetV2:
  """MobileNetV2 with expansion t and width multiplier (the benchmarks': 6, 0.5)."""
  if expansion < 1:
    raise ConfigError(f'model.expansion={expansion} must be >= 1')
  if not width > 0 or int(16 * width) < 1:
    raise ConfigError(f'model.width={width} leaves a group without channels')
  return MobileNetV2(num_classes=num_classes, expansion=int(expansion), width=float(width),
                     dtype=compute_dtype(dtype))
