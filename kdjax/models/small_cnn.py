"""Small plain CNNs: seed 004's students and Papernot's defensive nets.

All are stacks of 3x3 conv + ReLU groups, each group ending in a 2x2 max-pool,
then flattened into ReLU fully connected layers, each followed by dropout,
and a linear head. The first dense layer takes whatever the flattened size
is, so the parameter count depends on the input shape.

* `lightnn`, `simplenn` (seed 004, after the PyTorch knowledge-distillation
  tutorial): convs of width 16, 16 (LightNN) or 8, 8 (SimpleNN) with padding
  1, a pool after each, then one hidden layer of 256 (dropout 0.1) or 64
  (dropout 0.2). On 32x32x3 inputs they have 267,738 and 34,290 parameters,
  the counts seed 004 reports.
* `papernot_mnist`, `papernot_cifar` (Papernot et al. 2016, the defensive
  distillation nets of seed 001 Table 3): conv 32, 32, pool, 64, 64, pool,
  FC 200, 200 (MNIST) or 64, 64, pool, 128, 128, pool, FC 256, 256 (CIFAR).
  Convs are unpadded ('valid'), as in Papernot's implementation, so a 28x28
  input flattens to 4x4x64 and a 32x32 one to 5x5x128. Papernot trains with
  dropout 0.5 on the fully connected layers, the default here.

Max-pools drop a trailing odd row or column, as PyTorch's and Keras's do.
The smallest inputs are 4x4 for `lightnn` and `simplenn` and 16x16 for the
Papernot nets.

Features (`return_features=True`): 'stage1', 'stage2' (after the group's
last ReLU, before its pool, NHWC), 'stage1_preact', ... (before that ReLU),
'hidden_0', 'hidden_1', ... (after each hidden ReLU) and 'logits'.
"""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from kdjax.errors import ConfigError
from kdjax.models import layers
from kdjax.models.registry import compute_dtype, register


class SmallCNN(nn.Module):
  """Conv groups with max-pools, then a ReLU MLP head.

  Attributes:
    num_classes: number of logits.
    stages: conv widths of each group, e.g. ((32, 32), (64, 64)).
    hidden: width of each hidden fully connected layer.
    padding: 'SAME' (pad 1) or 'VALID' (no padding) for the 3x3 convs.
    dropout: dropout rate after each hidden fully connected ReLU.
    dtype: computation dtype (parameters stay float32, logits are float32).
  """
  num_classes: int
  stages: Sequence[Sequence[int]]
  hidden: Sequence[int]
  padding: str = 'SAME'
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    features = {}
    x = images.astype(self.dtype)
    for stage, widths in enumerate(self.stages, start=1):
      for index, width in enumerate(widths):
        x = layers.Conv(width, (3, 3), padding=self.padding, dtype=self.dtype,
                        name=f'stage{stage}_conv{index}')(x)
        preact = x
        x = nn.relu(x)
      features[f'stage{stage}'] = x
      features[f'stage{stage}_preact'] = preact
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
    x = x.reshape((x.shape[0], -1))
    for index, width in enumerate(self.hidden):
      x = nn.relu(nn.Dense(width, dtype=self.dtype, name=f'dense_{index}')(x))
      features[f'hidden_{index}'] = x
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name='head')(x)
    logits = logits.astype(jnp.float32)
    features['logits'] = logits
    return (logits, features) if return_features else logits


def _register(name, *, stages, hidden, padding, dropout):
  def factory(*, num_classes: int, dropout=dropout, dtype='float32'):
    if not 0.0 <= dropout < 1.0:
      raise ConfigError(f'model.dropout={dropout} must be in [0, 1)')
    return SmallCNN(num_classes=num_classes, stages=stages, hidden=hidden,
                    padding=padding, dropout=float(dropout),
                    dtype=compute_dtype(dtype))

  factory.__name__ = name
  factory.__doc__ = (f'{name}: conv groups {stages} ({padding} padding), '
                     f'hidden {hidden}, default dropout {dropout}.')
  register(name)(factory)


_register('lightnn', stages=((16,), (16,)), hidden=(256,), padding='SAME',
          dropout=0.1)
_register('simplenn', stages=((8,), (8,)), hidden=(64,), padding='SAME',
          dropout=0.2)
_register('papernot_mnist', stages=((32, 32), (64, 64)), hidden=(200, 200),
          padding='VALID', dropout=0.5)
_register('papernot_cifar', stages=((64, 64), (128, 128)), hidden=(256, 256),
          padding='VALID', dropout=0.5)
