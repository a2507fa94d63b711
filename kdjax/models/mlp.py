"""Fully connected networks: Hinton et al.'s MNIST teacher and students."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdjax.errors import ConfigError
from kdjax.models.registry import compute_dtype, register


class MLP(nn.Module):
  """ReLU multilayer perceptron on flattened images.

  Attributes:
    num_classes: number of logits.
    hidden: width of each hidden layer, e.g. (1200, 1200).
    input_dropout: dropout rate on the input pixels (Hinton's teacher: 0.2).
    hidden_dropout: dropout rate after each hidden ReLU (Hinton's teacher: 0.5).
    dtype: computation dtype (parameters stay float32).
  """
  num_classes: int
  hidden: Sequence[int] = (800, 800)
  input_dropout: float = 0.0
  hidden_dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    features = {}
    x = images.reshape((images.shape[0], -1)).astype(self.dtype)
    x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
    for i, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{i}')(x))
      features[f'hidden_{i}'] = x
      x = nn.Dropout(self.hidden_dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    logits = logits.astype(jnp.float32)
    features['logits'] = logits
    return (logits, features) if return_features else logits


@register('mlp')
def mlp(*, num_classes: int, hidden=(800, 800), input_dropout=0.0,
        hidden_dropout=0.0, dtype='float32') -> MLP:
  for rate_name, rate in (('input_dropout', input_dropout),
                          ('hidden_dropout', hidden_dropout)):
    if not 0.0 <= rate < 1.0:
      raise ConfigError(f'model.{rate_name}={rate} must be in [0, 1)')
  return MLP(num_classes=num_classes, hidden=tuple(int(h) for h in hidden),
             input_dropout=float(input_dropout),
             hidden_dropout=float(hidden_dropout), dtype=compute_dtype(dtype))
