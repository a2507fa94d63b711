"""Layers the conv families share: PyTorch-style convolutions, BatchNorm, the head."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# PyTorch's default momentum 0.1 weights the new batch; Flax's weights the old
# running value, hence 0.9.
BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)
# He initialisation over fan-out, as torchvision and the CIFAR references use.
CONV_INIT = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


# NHWC inputs, HWIO kernels: the layout Flax's Conv hands to lax.
_NHWC = lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
# 'patches' (the default) or 'xla': how 2-D convolutions run on CPU.
CPU_CONV_ENV = 'KDJAX_CPU_CONV'


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, computed as shifted slices and one matrix product on CPU.

  XLA's CPU convolution is slow where training spends its time: the kernel
  gradient of a 3x3 conv takes about 4x its forward pass, and inside a
  scanned epoch the whole step runs about 30x slower than the same step
  compiled alone (papernot_mnist, batch 128: 7.1 s against 0.24 s a step).
  Built from slices, a concatenation and a dot, whose gradients are slices,
  pads and dots, the same convolution trains at matrix-multiply speed.
  Same values up to float rounding (the sum runs in another order; tested
  against lax, values and gradients). GPUs and TPUs, dilated convolutions and
  other layouts use lax; $KDJAX_CPU_CONV=xla uses lax on CPU too.
  """
  trivial = lambda d: d is None or all(v == 1 for v in d)  # noqa: E731
  if (jax.default_backend() != 'cpu' or os.environ.get(CPU_CONV_ENV, 'patches') == 'xla'
      or lhs.ndim != 4 or dimension_numbers != _NHWC or not trivial(lhs_dilation)
      or not trivial(rhs_dilation)):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision,
        preferred_element_type=preferred_element_type)
  kh, kw, group_in, out = rhs.shape
  sh, sw = window_strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  oh, ow = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  windows = [x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]
             for i in range(kh) for j in range(kw)]
  dot = functools.partial(jnp.einsum, precision=precision,
                          preferred_element_type=preferred_element_type)
  if feature_group_count == 1:
    patches = windows[0] if len(windows) == 1 else jnp.concatenate(windows, axis=-1)
    return dot('nhwk,ko->nhwo', patches, rhs.reshape(kh * kw * group_in, out))
  groups = feature_group_count
  patches = jnp.stack(windows, axis=3).reshape(*windows[0].shape[:3], kh * kw, groups,
                                                group_in)
  kernel = rhs.reshape(kh * kw, group_in, groups, out // groups)
  return dot('nhwkgc,kcgo->nhwgo', patches, kernel).reshape(*windows[0].shape[:3], out)


# Flax's Conv computing with `conv_general_dilated`: every kdjax conv is one of these.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def conv(features: int, kernel: int, stride: int, dtype, name: str, groups: int = 1) -> nn.Conv:
  """A bias-free conv padded by kernel // 2 on each side, as PyTorch pads (grouped if asked)."""
  return Conv(features, (kernel, kernel), strides=(stride, stride),
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
