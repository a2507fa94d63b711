r"""Hinton et al.'s small MNIST net trained alone: 784-800-800-10, no regularisation.

  python -m kdjax.main --config=configs/mnist_student.py --workdir=runs/mnist_student

Paper: 146 test errors.
"""

import ml_collections

from kdjax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
  c = config_lib.default()
  c.dataset = 'mnist'
  c.model = ml_collections.ConfigDict({
      'name': 'mlp', 'hidden': (800, 800), 'input_dropout': 0.0,
      'hidden_dropout': 0.0, 'dtype': 'float32'})
  c.optimizer.name = 'adam'
  c.optimizer.learning_rate = 1e-3
  c.schedule.name = 'exponential'
  c.schedule.decay_rate = 0.95
  c.batch_size = 128
  c.num_epochs = 30
  return c
