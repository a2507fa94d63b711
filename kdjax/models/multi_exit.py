"""Multi-exit ResNets: a shallow classifier after each stage (Zhang et al., ICCV 2019).

"Be Your Own Teacher" (BYOT) splits a ResNet by its stages and puts a
classifier after each of the chosen stages; the deepest classifier is the
network's own head. Each shallow exit is a bottleneck that brings the
stage's feature map to the shape of the deepest one,

    1x1 conv (width C/4) -> BN -> ReLU -> kxk conv of stride k (C/4) -> BN -> ReLU
    -> 1x1 conv (C) -> BN -> ReLU,  C = the deepest stage's channels,

followed by global average pooling and a linear layer. k is the ratio of
the stage's resolution to the deepest stage's (8, 4, 2 for the exits of a
CIFAR ResNet-18), with zero padding at the end where it does not divide, so
every exit's feature map (its "hint") has the deepest map's shape and the
feature loss can compare them. Convolutions are bias-free before BatchNorm
(the PyTorch code keeps a bias there, which BatchNorm cancels). With
`attention`, the stage's map first passes the paper's attention module: a
mask sigmoid(upsample(BN(conv3x3 stride 2 -> ReLU -> conv3x3))) multiplies
the map elementwise (one down- and up-sampling step of the paper's
deconvolution module, upsampled by nearest neighbours).

Registered as `multi_exit`: `base` names any ResNet of the registry (CIFAR
or ImageNet stem, basic or bottleneck blocks); its options (`blocks`,
`widths`, `shortcut`, `stem`, ...) pass through. `exits` lists the stages
(1-based) that get a shallow classifier; the deepest stage is always the last
exit. The model's logits are the deepest exit's, so plain evaluation,
checkpoints and teachers see the network's own head.

Features (`return_features=True`): the base ResNet's ('stem', 'stage1' ...,
'pooled', 'logits'), plus, per shallow exit at stage s, 'exit{s}_logits'
[B, K] and 'exit{s}_hint' (the exit's bottleneck output, the shape of the
deepest stage's map).
"""

import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.errors import ConfigError
from kdjax.models import flops, resnet
from kdjax.models.layers import Conv, CONV_INIT, batch_norm
from kdjax.models.layers import conv as _conv
from kdjax.models.registry import count_params, create, register


class Attention(nn.Module):
  """The BYOT attention mask: x * sigmoid(up(BN(conv(relu(BN(conv_s2(x))))))."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    channels = x.shape[-1]
    norm = batch_norm(train, self.dtype)
    y = _conv(channels, 3, 2, self.dtype, 'down_conv')(x)
    y = nn.relu(norm(name='down_bn')(y))
    y = _conv(channels, 3, 1, self.dtype, 'up_conv')(y)
    y = norm(name='up_bn')(y)
    y = jax.image.resize(y, (y.shape[0], *x.shape[1:3], channels), 'nearest')
    return x * nn.sigmoid(y)


class ExitHead(nn.Module):
  """A shallow exit: (attention), bottleneck to the deepest map's shape, pool, linear.

  Returns (logits [B, K] float32, hint [B, H_C, W_C, C]).
  """
  num_classes: int
  out_channels: int
  out_size: tuple[int, int]
  attention: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = batch_norm(train, self.dtype)
    if self.attention:
      x = Attention(self.dtype, name='attention')(x, train=train)
    middle = max(1, self.out_channels // 4)
    y = _conv(middle, 1, 1, self.dtype, 'reduce_conv')(x)
    y = nn.relu(norm(name='reduce_bn')(y))
    strides = tuple(-(-size // out) for size, out in zip(y.shape[1:3], self.out_size))
    padding = [(0, out * stride - size) for size, out, stride in
               zip(y.shape[1:3], self.out_size, strides)]
    y = Conv(middle, strides, strides=strides, padding=padding, use_bias=False,
             kernel_init=CONV_INIT, dtype=self.dtype, name='strided_conv')(y)
    y = nn.relu(norm(name='strided_bn')(y))
    y = _conv(self.out_channels, 1, 1, self.dtype, 'expand_conv')(y)
    hint = nn.relu(norm(name='expand_bn')(y))
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='fc')(jnp.mean(hint, axis=(1, 2)))
    return logits.astype(jnp.float32), hint


class MultiExitResNet(nn.Module):
  """A ResNet with shallow classifiers after the stages in `exits`; see the module docstring.

  Attributes:
    backbone: the ResNet (its head is the deepest exit).
    exits: 1-based stages with a shallow classifier, each before the last stage.
    attention: put the attention module in front of each shallow exit.
  """
  backbone: resnet.ResNet
  exits: Sequence[int] = (1, 2, 3)
  attention: bool = False

  @property
  def exit_names(self) -> tuple[str, ...]:
    """The exits from shallowest to deepest: 'exit1', ..., and 'deepest'."""
    return tuple(f'exit{s}' for s in self.exits) + ('deepest',)

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    logits, features = self.backbone(images, train=train, return_features=True)
    deepest = features[f'stage{len(self.backbone.blocks)}']
    for stage in self.exits:
      exit_logits, hint = ExitHead(
          self.backbone.num_classes, deepest.shape[-1], tuple(deepest.shape[1:3]),
          self.attention, self.backbone.dtype, name=f'exit{stage}')(
              features[f'stage{stage}'], train=train)
      features[f'exit{stage}_logits'] = exit_logits
      features[f'exit{stage}_hint'] = hint
    return (logits, features) if return_features else logits


def exit_outputs(features: dict, exits: Sequence[int]) -> tuple[list, list, jax.Array]:
  """(logits per exit, shallow to deepest; hints per shallow exit; the deepest hint)."""
  deepest = max(int(k[len('stage'):]) for k in features if re.fullmatch(r'stage\d+', k))
  logits = [features[f'exit{s}_logits'] for s in exits] + [features['logits']]
  hints = [features[f'exit{s}_hint'] for s in exits]
  return logits, hints, features[f'stage{deepest}']


@register('multi_exit')
def multi_exit(*, num_classes: int, base: str = 'resnet18', exits=(1, 2, 3),
               attention: bool = False, **base_options) -> MultiExitResNet:
  """A registry ResNet `base` with shallow exits after the stages `exits`.

  Args:
    num_classes: size of every exit's logit vector.
    base: a registered ResNet name ('resnet18', 'resnet50', 'resnet20',
      'cifar_resnet', ...).
    exits: 1-based stages that get a shallow classifier, each before the last.
    attention: the paper's attention module in front of each shallow exit.
    **base_options: the base ResNet's own options (blocks, widths, stem...).

  Raises:
    ConfigError: the base is not a ResNet or an exit is not before its last stage.
  """
  backbone = create(base, num_classes=num_classes, **base_options)
  if not isinstance(backbone, resnet.ResNet):
    raise ConfigError(f'model.base={base!r} is not a ResNet; multi_exit wraps the ResNets')
  exits = tuple(int(s) for s in exits)
  stages = len(backbone.blocks)
  if not exits or sorted(set(exits)) != list(exits) or exits[0] < 1 or exits[-1] >= stages:
    raise ConfigError(f'model.exits={exits} must be increasing stages in 1..{stages - 1} '
                      f'({base} has {stages} stages; the last is the deepest exit)')
  return MultiExitResNet(backbone=backbone, exits=exits, attention=bool(attention))


def is_multi_exit(model) -> bool:
  return isinstance(model, MultiExitResNet)


def exit_params(model: MultiExitResNet, params) -> list[int]:
  """Parameters each exit's prediction uses: stem, stages up to it, and its own head.

  The deepest exit's is the base ResNet's count (stem, every stage, the head).
  """
  backbone = params['backbone']
  stem = count_params({k: v for k, v in backbone.items() if k.startswith('stem')})

  def stages_upto(stage: int) -> int:
    return count_params({k: v for k, v in backbone.items() if k.startswith('stage')
                         and int(k[len('stage'):].split('_')[0]) <= stage})

  out = [stem + stages_upto(s) + count_params(params[f'exit{s}']) for s in model.exits]
  return out + [count_params(backbone)]


def exit_flops(model: MultiExitResNet, variables, image_shape) -> list[float]:
  """Forward FLOPs per example (XLA's count, as kdjax.models.flops) to reach each exit.

  Exit i's count is that of a forward pass computing exits 1..i only (XLA drops
  the rest), i.e. the cost of an anytime cascade that stops at exit i: the
  stages up to i and every shallow head on the way. The deepest's is the
  whole multi-exit network, heads included. A multiply-add counts 2.
  """
  out = []
  for index in range(len(model.exits) + 1):
    def forward(variables, images, index=index):
      _, features = model.apply(variables, images, train=False, return_features=True)
      return exit_outputs(features, model.exits)[0][:index + 1]

    # Compiled as kdjax.models.flops counts (after XLA's dead-code elimination),
    # with the CPU backend's code generation unoptimised: the count is the same.
    out.append(flops.compiled_flops(forward, variables, image_shape,
                                    {'xla_backend_optimization_level': 0}))
  return out
