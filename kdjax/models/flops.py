"""Forward-pass cost of a model, as XLA counts it."""

from typing import Sequence

import jax
import jax.numpy as jnp


def forward_flops_per_example(model, variables, image_shape: Sequence[int]
                              ) -> float:
  """Floating-point operations of one eval-mode forward pass on one image.

  XLA's cost analysis of the compiled `model.apply(variables, images,
  train=False)` on a batch of 1. A multiply-add counts as 2 operations, so
  the number is about twice the "FLOPs" (multiply-accumulates) that PyTorch
  counters such as thop report. Convolution taps that fall on zero padding
  are not counted, and elementwise work (BatchNorm, ReLU, pooling) is. The
  program is compiled for the CPU whatever the default backend, so the count
  does not depend on the accelerator's own compiler passes.

  Args:
    model: a Flax module following the kdjax calling convention.
    variables: its variables; arrays or `jax.ShapeDtypeStruct`s (from
      `jax.eval_shape(model.init, ...)`) both work, since only shapes are
      needed to compile.
    image_shape: (height, width, channels) of one image.

  Returns:
    The operation count, a float. Counted once per process for a model (its
    attributes) and variable shapes: the seeds of a run share it.
  """
  key = (type(model).__module__, type(model).__qualname__, repr(model), tuple(image_shape),
         str(jax.tree.map(lambda v: (tuple(v.shape), str(v.dtype)), variables)))
  if key not in _FORWARD_FLOPS:
    _FORWARD_FLOPS[key] = compiled_flops(
        lambda variables, images: model.apply(variables, images, train=False),
        variables, image_shape)
  return _FORWARD_FLOPS[key]


_FORWARD_FLOPS: dict = {}


def compiled_flops(forward, variables, image_shape: Sequence[int],
                   compiler_options: dict | None = None) -> float:
  """XLA's operation count of `forward(variables, images)` compiled for the CPU on one
  image (after dead-code elimination: outputs `forward` drops are not counted)."""
  cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32, sharding=cpu)
  shapes = jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype),
                        variables)
  compiled = jax.jit(forward).lower(shapes, images).compile(compiler_options=compiler_options)
  cost = compiled.cost_analysis()
  # Older jax versions return one dict per device program.
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost['flops'])
