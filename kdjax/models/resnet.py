"""Residual networks for 32x32 images: He's CIFAR nets and their relatives.

One module, `ResNet`, builds every layout: a 3x3 stem conv, stages of basic
or bottleneck blocks (the first stage keeps the resolution, each later one
halves it with a stride-2 first block), global average pooling and a linear
head. Because the head follows a global pool, any input of at least 1 pixel
after the strides works, 1 or 3 channels.

Registered names and the source each layout follows:

* `resnet8`, `resnet14`, `resnet20`, `resnet32`, `resnet44`, `resnet56`,
  `resnet110`: He et al. 2016, section 4.2. Depth 6n+2 counted in weighted
  layers (stem conv, 2 convs per block, head), n basic blocks in each of 3
  stages of widths 16/32/64. Default `shortcut='A'` as in the paper: when a
  block changes shape the shortcut subsamples with stride 2 and zero-pads the
  new channels, so it has no parameters (resnet20 has 0.27M parameters, He's
  Table 6).
* `resnet8x4`, `resnet32x4`: the wider nets of RepDistiller (Tian et al.,
  CRD, 2020): stem width 32, stages 64/128/256, n = 1 and 5. Default
  `shortcut='B'` as in that code: a 1x1 conv and BatchNorm projection
  wherever a block changes shape.
* `resnet3`, `resnet4`, `resnet5`, `resnet6`, `resnet10` (seed 003) and
  `resnet11` (seed 000): these names have no standard definition. kdjax reads
  ResNet-k as k basic blocks in total over He's 3 CIFAR stages (widths
  16/32/64, option-A shortcuts), shared as evenly as possible with the
  remainder going to the earlier stages: 3 -> (1, 1, 1), 4 -> (2, 1, 1),
  5 -> (2, 2, 1), 6 -> (2, 2, 2), 10 -> (4, 3, 3), 11 -> (4, 4, 3). Every
  extra block adds parameters, so capacity grows with k. Their weighted depth
  is 2k + 2, so `resnet3` has the layout of He's `resnet8` and `resnet6` that
  of `resnet14`; `resnet10` and `resnet11` are slightly larger than
  `resnet20`. Seed 000 trains its ResNet11 as the smaller partner of a
  ResNet20 (89.7% against 91.9%), which this reading does not reproduce; the
  seeds say too little to pin their layouts down. For another reading call
  `cifar_resnet` with explicit `blocks`.
* `resnet18`, `resnet34`, `resnet50`, `resnet101`: the ImageNet ResNets as
  adapted to CIFAR by the widely used pytorch-cifar code (seed 001): a 3x3
  stride-1 stem conv of width 64 and no max-pool, stages 64/128/256/512 with
  basic blocks (18, 34) or bottleneck blocks of expansion 4 (50, 101), and
  1x1 conv + BatchNorm projection shortcuts (`shortcut='B'`).
* `cifar_resnet`: any of the above from explicit `blocks`, `widths`, `block`
  and `shortcut`.

Every name takes `width`, a multiplier of all its widths (rounded), for
narrower or wider nets of the same layout, e.g. `resnet8` with `width=0.5`:
stem 8, stages 8/16/32. Every name takes `stem='imagenet'` for full-size images: He et al.'s 7x7
stride-2 stem conv and a 3x3 stride-2 max-pool (a 4x smaller first feature
map), so `resnet50` with `stem='imagenet'` and 1000 classes is torchvision's
ResNet-50 (25,557,032 parameters).

Convolutions pad explicitly by 1 (3x3) or 0 (1x1), as PyTorch does, so strided
layers sample the same pixels as the reference implementations.

Features (`return_features=True`): 'stem', 'stage1' ... 'stageK' (each after
its final ReLU, NHWC), 'stage1_preact' ... (the same before that ReLU, as
RepDistiller's `preact=True`), 'pooled' (B, C) and 'logits'.
"""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdjax.errors import ConfigError
from kdjax.models.registry import compute_dtype, register

from kdjax.models.layers import BATCH_NORM as _BATCH_NORM
from kdjax.models.layers import conv as _conv
from kdjax.models.layers import pooled_head


class _Shortcut(nn.Module):
  """Identity, or the option-A / option-B shortcut when the shape changes."""
  features: int
  stride: int
  kind: str
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.stride == 1 and x.shape[-1] == self.features:
      return x
    if self.kind == 'B':
      x = _conv(self.features, 1, self.stride, self.dtype, 'proj_conv')(x)
      return nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                          name='proj_bn', **_BATCH_NORM)(x)
    x = x[:, ::self.stride, ::self.stride, :]
    extra = self.features - x.shape[-1]
    channels = (extra // 2, extra - extra // 2)
    return jnp.pad(x, [(0, 0), (0, 0), (0, 0), channels])


class BasicBlock(nn.Module):
  """Two 3x3 conv-BN layers and a shortcut: y = relu(F(x) + shortcut(x)).

  Returns (y, F(x) + shortcut(x)): the output and its pre-activation.
  """
  features: int
  stride: int = 1
  shortcut: str = 'A'
  dtype: jnp.dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             dtype=self.dtype, **_BATCH_NORM)
    y = _conv(self.features, 3, self.stride, self.dtype, 'conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = _conv(self.features, 3, 1, self.dtype, 'conv2')(y)
    y = norm(name='bn2')(y)
    residual = _Shortcut(self.features, self.stride, self.shortcut, self.dtype,
                         name='shortcut')(x, train=train)
    preact = y + residual
    return nn.relu(preact), preact


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand by 4, and a shortcut; returns (output,
  pre-activation) as BasicBlock does."""
  features: int
  stride: int = 1
  shortcut: str = 'B'
  dtype: jnp.dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             dtype=self.dtype, **_BATCH_NORM)
    out_features = self.features * self.expansion
    y = _conv(self.features, 1, 1, self.dtype, 'conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = _conv(self.features, 3, self.stride, self.dtype, 'conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = _conv(out_features, 1, 1, self.dtype, 'conv3')(y)
    y = norm(name='bn3')(y)
    residual = _Shortcut(out_features, self.stride, self.shortcut, self.dtype,
                         name='shortcut')(x, train=train)
    preact = y + residual
    return nn.relu(preact), preact


_BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}


class ResNet(nn.Module):
  """Stem conv, residual stages, global average pool, linear head.

  Attributes:
    num_classes: number of logits.
    blocks: number of blocks in each stage, e.g. (3, 3, 3) for resnet20.
    widths: stem width followed by each stage's block width, e.g.
      (16, 16, 32, 64); a bottleneck stage outputs 4x its width.
    block: 'basic' or 'bottleneck'.
    shortcut: 'A' (stride-2 subsample and zero-padded channels, no
      parameters) or 'B' (1x1 conv + BatchNorm projection), used only where a
      block changes the shape.
    stem: 'cifar' (3x3 stride-1 conv) or 'imagenet' (7x7 stride-2 conv and a
      3x3 stride-2 max-pool).
    dtype: computation dtype (parameters stay float32, logits are float32).
  """
  num_classes: int
  blocks: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 16, 32, 64)
  block: str = 'basic'
  shortcut: str = 'A'
  stem: str = 'cifar'
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    features = {}
    x = images.astype(self.dtype)
    imagenet = self.stem == 'imagenet'
    x = _conv(self.widths[0], 7 if imagenet else 3, 2 if imagenet else 1, self.dtype,
              'stem_conv')(x)
    x = nn.BatchNorm(use_running_average=not train, dtype=self.dtype,
                     name='stem_bn', **_BATCH_NORM)(x)
    x = nn.relu(x)
    if imagenet:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    features['stem'] = x
    block_cls = _BLOCKS[self.block]
    for stage, (num_blocks, width) in enumerate(
        zip(self.blocks, self.widths[1:]), start=1):
      for index in range(num_blocks):
        stride = 2 if stage > 1 and index == 0 else 1
        x, preact = block_cls(width, stride, self.shortcut, self.dtype,
                              name=f'stage{stage}_block{index}')(x, train=train)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
    return pooled_head(x, features, self.num_classes, self.dtype, return_features)


@register('cifar_resnet')
def cifar_resnet(*, num_classes: int, blocks=(3, 3, 3), widths=(16, 16, 32, 64),
                 block='basic', shortcut='A', stem='cifar', dtype='float32') -> ResNet:
  """A residual network of any depth and width for small images.

  Args:
    num_classes: size of the logit vector.
    blocks: blocks per stage; the first stage keeps the resolution, each later
      stage halves it.
    widths: the stem width, then one block width per stage.
    block: 'basic' (two 3x3 convs) or 'bottleneck' (1x1, 3x3, 1x1 x4).
    shortcut: 'A' (parameter-free) or 'B' (1x1 conv + BatchNorm projection)
      where a block changes shape.
    stem: 'cifar' (3x3 stride-1 conv) or 'imagenet' (7x7 stride-2 conv, then
      a 3x3 stride-2 max-pool).
    dtype: computation dtype name, e.g. 'float32' or 'bfloat16'.

  Returns:
    The `ResNet` module.

  Raises:
    ConfigError: an option is out of range.
  """
  blocks = tuple(int(n) for n in blocks)
  widths = tuple(int(w) for w in widths)
  if not blocks or min(blocks) < 1:
    raise ConfigError(f'model.blocks={blocks} must hold at least one stage, '
                      'each of at least 1 block')
  if len(widths) != len(blocks) + 1 or min(widths) < 1:
    raise ConfigError(f'model.widths={widths} must hold a positive stem width '
                      f'and one per stage ({len(blocks) + 1} in all)')
  if block not in _BLOCKS:
    raise ConfigError(f'model.block={block!r} must be one of {sorted(_BLOCKS)}')
  if shortcut not in ('A', 'B'):
    raise ConfigError(f"model.shortcut={shortcut!r} must be 'A' or 'B'")
  if stem not in ('cifar', 'imagenet'):
    raise ConfigError(f"model.stem={stem!r} must be 'cifar' or 'imagenet'")
  expansion = _BLOCKS[block].expansion
  outputs = [widths[0]] + [w * expansion for w in widths[1:]]
  if shortcut == 'A' and any(b < a for a, b in zip(outputs, outputs[1:])):
    raise ConfigError(f"model.shortcut='A' zero-pads channels, so "
                      f'model.widths={widths} must not decrease')
  return ResNet(num_classes=num_classes, blocks=blocks, widths=widths,
                block=block, shortcut=shortcut, stem=stem, dtype=compute_dtype(dtype))


def blocks_for(total: int) -> tuple[int, int, int]:
  """Splits `total` basic blocks over 3 stages, extra ones to earlier stages.

  This is kdjax's reading of the ResNet-k names of seeds 000 and 003.

  Args:
    total: number of blocks, at least 3.

  Returns:
    Blocks per stage, e.g. 4 -> (2, 1, 1), 11 -> (4, 4, 3).
  """
  base, extra = divmod(total, 3)
  return tuple(base + (1 if stage < extra else 0) for stage in range(3))


def scaled_widths(widths, width: float) -> tuple[int, ...]:
  """`widths` times `width`, each rounded and at least 1 (`width=0.5`: resnet8's
  (16, 16, 32, 64) becomes (8, 8, 16, 32))."""
  width = float(width)
  if not width > 0:
    raise ConfigError(f'model.width={width} must be a positive multiplier of the widths')
  return tuple(max(1, round(w * width)) for w in widths)


def _register(name, *, blocks, widths, block='basic', shortcut):
  def factory(*, num_classes: int, shortcut=shortcut, stem='cifar', width=1.0,
              dtype='float32'):
    return cifar_resnet(num_classes=num_classes, blocks=blocks,
                        widths=scaled_widths(widths, width), block=block, shortcut=shortcut,
                        stem=stem, dtype=dtype)

  factory.__name__ = name
  factory.__doc__ = (f'{name}: blocks {blocks}, widths {widths}, {block} '
                     f'blocks, default shortcut {shortcut!r}.')
  register(name)(factory)


for _depth in (8, 14, 20, 32, 44, 56, 110):
  _register(f'resnet{_depth}', blocks=((_depth - 2) // 6,) * 3,
            widths=(16, 16, 32, 64), shortcut='A')
for _depth in (8, 32):
  _register(f'resnet{_depth}x4', blocks=((_depth - 2) // 6,) * 3,
            widths=(32, 64, 128, 256), shortcut='B')
for _total in (3, 4, 5, 6, 10, 11):
  _register(f'resnet{_total}', blocks=blocks_for(_total),
            widths=(16, 16, 32, 64), shortcut='A')
for _depth, _blocks, _block in ((18, (2, 2, 2, 2), 'basic'),
                                (34, (3, 4, 6, 3), 'basic'),
                                (50, (3, 4, 6, 3), 'bottleneck'),
                                (101, (3, 4, 23, 3), 'bottleneck')):
  _register(f'resnet{_depth}', blocks=_blocks, widths=(64, 64, 128, 256, 512),
            block=_block, shortcut='B')
