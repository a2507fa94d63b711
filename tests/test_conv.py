"""kdjax's CPU convolution (models/layers.conv_general_dilated) against lax's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from kdjax.models import layers

NHWC = ('NHWC', 'HWIO', 'NHWC')
CASES = {  # name: (input NHWC, kernel HWIO, strides, padding, groups)
    '3x3 valid': ((2, 9, 9, 3), (3, 3, 3, 5), (1, 1), 'VALID', 1),
    '3x3 same, stride 2': ((2, 9, 8, 4), (3, 3, 4, 6), (2, 2), 'SAME', 1),
    '7x7 stem, stride 2, pad 3': ((1, 15, 15, 3), (7, 7, 3, 8), (2, 2), [(3, 3), (3, 3)], 1),
    '1x1 shortcut, stride 2': ((2, 7, 7, 6), (1, 1, 6, 4), (2, 2), [(0, 0), (0, 0)], 1),
    'uneven padding': ((2, 6, 7, 2), (3, 2, 2, 3), (1, 2), [(2, 0), (1, 1)], 1),
    '2 groups': ((2, 8, 8, 6), (3, 3, 3, 4), (1, 1), [(1, 1), (1, 1)], 2),
    'depthwise, stride 2': ((2, 8, 8, 5), (3, 3, 1, 5), (2, 2), [(1, 1), (1, 1)], 5),
}


@pytest.mark.parametrize('case', CASES)
def test_patches_conv_equals_lax_with_its_gradients(case, patches_conv):
  lhs_shape, rhs_shape, strides, padding, groups = CASES[case]
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], lhs_shape)
  w = jax.random.normal(keys[1], rhs_shape)
  dn = lax.conv_dimension_numbers(lhs_shape, rhs_shape, NHWC)
  assert dn == layers._NHWC  # pylint: disable=protected-access

  def run(fn, x, w):
    def f(x, w):
      return fn(x, w, strides, padding, dimension_numbers=dn, feature_group_count=groups)
    y, pullback = jax.vjp(f, x, w)
    return y, pullback(jax.random.normal(keys[2], y.shape))

  # Arguments, not closed-over constants: XLA would fold the constants slowly.
  expected, expected_grads = jax.jit(lambda x, w: run(lax.conv_general_dilated, x, w))(x, w)
  got, got_grads = jax.jit(lambda x, w: run(layers.conv_general_dilated, x, w))(x, w)
  # kdjax's convolution, not lax's (the tests' default is lax: tests/__init__.py).
  assert 'conv_general_dilated' not in str(jax.make_jaxpr(
      lambda x, w: run(layers.conv_general_dilated, x, w))(x, w))
  assert got.shape == expected.shape
  scale = float(jnp.abs(expected).max())
  np.testing.assert_allclose(got, expected, atol=1e-5 * scale)
  for g, e in zip(got_grads, expected_grads):
    np.testing.assert_allclose(g, e, atol=1e-5 * float(jnp.abs(e).max()))


def test_the_environment_switch_falls_back_to_lax(monkeypatch):
  x = jnp.ones((1, 5, 5, 2))
  w = jnp.ones((3, 3, 2, 1))
  dn = layers._NHWC  # pylint: disable=protected-access
  monkeypatch.setenv(layers.CPU_CONV_ENV, 'xla')
  text = str(jax.make_jaxpr(lambda: layers.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=dn))())
  assert 'conv_general_dilated' in text
  monkeypatch.setenv(layers.CPU_CONV_ENV, 'patches')
  text = str(jax.make_jaxpr(lambda: layers.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=dn))())
  assert 'conv_general_dilated' not in text and 'dot_general' in text
