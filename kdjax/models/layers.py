"""Layers the conv families share: PyTorch-style convolutions, BatchNorm, the head."""

import functools

import flax.linen as nn
import jax.numpy as jnp

# PyTorch's default momentum 0.1 weights the new batch; Flax's weights the old
# running value, hence 0.9.
BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)
# He initialisation over fan-out, as torchvision and the CIFAR references use.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def conv(features: int, kernel: int, stride: int, dtype, name: str, groups: int = 1) -> nn.Conv:
  """A bias-free conv padded by kernel // 2 on each side, as PyTorch pads (grouped if asked)."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=[(kernel // 2, kernel // 2)] * 2, use_bias=False,
                 feature_group_count=groups, kernel_init=CONV_INIT, dtype=dtype, name=name)


def batch_norm(train: bool, dtype):
  """BatchNorm with PyTorch's momentum and epsilon; call with a name."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, dtype=dtype,
                           **BATCH_NORM)


def pooled_head(x, features: dict, num_classes: int, dtype, return_features: bool):
  """Global average pooling and the linear head (named 'head'); float32 logits.

  Call from a module's compact method; records 'pooled' and 'logits' in
  `features` and returns what the calling convention asks for.
  """
  x = jnp.mean(x, axis=(1, 2))
  features['pooled'] = x
  logits = nn.Dense(num_classes, dtype=dtype, name='head')(x).astype(jnp.float32)
  features['logits'] = logits
  return (logits, features) if return_features else logits
