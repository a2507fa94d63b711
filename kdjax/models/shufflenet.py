"""ShuffleNet V1 (Zhang et al., 2018) and V2 (Ma et al., 2018) for 32x32 images,
as the CIFAR distillation benchmarks build them (a 1x1 stem of 24 channels, no
max-pool, three stride-2 stages, average pooling; `shufflenetv1` has 949,258
parameters with 100 classes, `shufflenetv2` 1,355,528).

V1 block: grouped 1x1 conv to a quarter of the output width (not grouped when
its input is the 24-channel stem), channel shuffle, 3x3 depthwise, grouped 1x1
conv; added to the input, or at stride 2 concatenated with the input
average-pooled (3x3, stride 2, zero padding counted), then ReLU.
V2 stage: a down-sampling block (both branches strided, concatenated, shuffled),
then blocks that split the channels in halves, transform one (1x1, 3x3
depthwise, 1x1) and concatenate it back before a shuffle; V2 ends with a 1x1 conv
to 1024 channels.

Features (`return_features=True`): 'stem', 'stage1' ... 'stage3' (each stage's
last block output; 'stage{k}_preact' the same before its last ReLU), 'pooled'
and 'logits'.
"""

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.registry import compute_dtype, register
from kdjax.models.layers import batch_norm as _norm, conv as _conv, pooled_head


def channel_shuffle(x, groups: int):
  """[.., g·c] -> [.., c·g]: channel k of group i moves to position k·g + i."""
  *lead, channels = x.shape
  x = x.reshape(*lead, groups, channels // groups)
  return jnp.swapaxes(x, -1, -2).reshape(*lead, channels)


class V1Block(nn.Module):
  features: int
  stride: int
  groups: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = _norm(train, self.dtype)
    mid = self.features // 4
    first_groups = 1 if x.shape[-1] == 24 else self.groups
    y = nn.relu(norm(name='bn1')(_conv(mid, 1, 1, self.dtype, 'conv1', first_groups)(x)))
    y = channel_shuffle(y, first_groups)
    y = nn.relu(norm(name='bn2')(_conv(mid, 3, self.stride, self.dtype, 'conv2', mid)(y)))
    y = norm(name='bn3')(_conv(self.features, 1, 1, self.dtype, 'conv3', self.groups)(y))
    if self.stride == 2:
      pooled = nn.avg_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                           count_include_pad=True)
      preact = jnp.concatenate([y, pooled], axis=-1)
    else:
      preact = y + x
    return nn.relu(preact), preact


class V2Block(nn.Module):
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = _norm(train, self.dtype)
    half = x.shape[-1] // 2
    kept, changed = x[..., :half], x[..., half:]
    c = changed.shape[-1]
    y = nn.relu(norm(name='bn1')(_conv(c, 1, 1, self.dtype, 'conv1')(changed)))
    y = norm(name='bn2')(_conv(c, 3, 1, self.dtype, 'conv2', c)(y))
    y = norm(name='bn3')(_conv(c, 1, 1, self.dtype, 'conv3')(y))
    preact = jnp.concatenate([kept, y], axis=-1)
    return channel_shuffle(jnp.concatenate([kept, nn.relu(y)], axis=-1), 2), preact


class V2Down(nn.Module):
  features: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = _norm(train, self.dtype)
    c_in, mid = x.shape[-1], self.features // 2
    left = norm(name='bn1')(_conv(c_in, 3, 2, self.dtype, 'conv1', c_in)(x))
    left = nn.relu(norm(name='bn2')(_conv(mid, 1, 1, self.dtype, 'conv2')(left)))
    right = nn.relu(norm(name='bn3')(_conv(mid, 1, 1, self.dtype, 'conv3')(x)))
    right = norm(name='bn4')(_conv(mid, 3, 2, self.dtype, 'conv4', mid)(right))
    right = nn.relu(norm(name='bn5')(_conv(mid, 1, 1, self.dtype, 'conv5')(right)))
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNet(nn.Module):
  num_classes: int
  version: int = 1
  widths: tuple = (240, 480, 960)
  blocks: tuple = (4, 8, 4)
  groups: int = 3
  final_width: int = 0  # V2's last 1x1 conv (0: none)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    norm = _norm(train, self.dtype)
    features = {}
    x = nn.relu(norm(name='stem_bn')(_conv(24, 1, 1, self.dtype, 'stem_conv')(
        images.astype(self.dtype))))
    features['stem'] = x
    for stage, (width, count) in enumerate(zip(self.widths, self.blocks), start=1):
      if self.version == 1:
        for index in range(count):
          # At stride 2 the pooled input is concatenated: the block adds the rest.
          grow = width - x.shape[-1] if index == 0 else width
          x, preact = V1Block(grow, 2 if index == 0 else 1, self.groups, self.dtype,
                              name=f'stage{stage}_block{index}')(x, train=train)
      else:
        x = V2Down(width, self.dtype, name=f'stage{stage}_down')(x, train=train)
        for index in range(count):
          x, preact = V2Block(self.dtype, name=f'stage{stage}_block{index}')(x, train=train)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
    if self.final_width:
      x = nn.relu(norm(name='final_bn')(_conv(self.final_width, 1, 1, self.dtype,
                                               'final_conv')(x)))
    return pooled_head(x, features, self.num_classes, self.dtype, return_features)


@register('shufflenetv1')
def shufflenetv1(*, num_classes: int, dtype: str = 'float32') -> ShuffleNet:
  """ShuffleNet V1, 3 groups, stage widths 240/480/960, blocks 4/8/4."""
  return ShuffleNet(num_classes=num_classes, version=1, widths=(240, 480, 960),
                    blocks=(4, 8, 4), groups=3, dtype=compute_dtype(dtype))


@register('shufflenetv2')
def shufflenetv2(*, num_classes: int, dtype: str = 'float32') -> ShuffleNet:
  """ShuffleNet V2 1x: stage widths 116/232/464 (down-sampling block + 3/7/3 blocks), 1024."""
  return ShuffleNet(num_classes=num_classes, version=2, widths=(116, 232, 464),
                    blocks=(3, 7, 3), final_width=1024, dtype=compute_dtype(dtype))
