"""Your own model and your own data: import-path models, `folder:` and `tfds:` datasets.

A model from a module written in the test's temp dir (on `sys.path`) trains,
is restored from its checkpoint and teaches a later run; a folder of drawn
shapes trains well above chance; a TFDS dataset stored by the test is read;
every refusal is one line and leaves the workdir empty.
"""

import importlib
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from configs import mnist_student
from kdjax import config as config_lib
from kdjax import models
from kdjax.errors import ConfigError, KDError
from kdjax.train import checkpoint, loop, preflight

_NET = textwrap.dedent('''
    import flax.linen as nn
    import jax.numpy as jnp

    class TinyNet(nn.Module):
      num_classes: int
      width: int = 16

      @nn.compact
      def __call__(self, x, train=False, return_features=False):
        x = x.reshape((x.shape[0], -1))
        hidden = nn.relu(nn.Dense(self.width)(x))
        logits = nn.Dense(self.num_classes)(hidden)
        return (logits, {'pooled': hidden}) if return_features else logits

    def make_net(num_classes, width=16):
      return TinyNet(num_classes=num_classes, width=width)

    def not_a_module(num_classes):
      return 'a string'

    def wrong_outputs(num_classes):
      return TinyNet(num_classes=num_classes + 1)

    NOT_CALLABLE = 3
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  """A module of the user's own, importable as `user_nets_<id>` (fresh per test)."""
  name = f'user_nets_{abs(hash(str(tmp_path))) % 10**8}'
  (tmp_path / 'src').mkdir()
  (tmp_path / 'src' / f'{name}.py').write_text(_NET)
  monkeypatch.syspath_prepend(str(tmp_path / 'src'))
  yield name
  sys.modules.pop(name, None)


def _mnist_config(data_dir, model, **changes):
  c = mnist_student.get_config()
  c.data_dir = data_dir
  c.model = config_lib.ml_collections.ConfigDict(model)
  c.train_examples = 1024
  c.batch_size = 64
  c.num_epochs = 3
  c.optimizer.learning_rate = 1e-2
  c.eval_batch_size = 1000
  return config_lib.override(c, changes)


@pytest.mark.slow
def test_an_imported_model_trains_restores_and_teaches(user_module, mnist_data_dir, tmp_path):
  model = {'name': f'{user_module}:make_net', 'options': {'width': 24}}
  teacher = _mnist_config(mnist_data_dir, model)
  results = loop.train_and_evaluate(teacher, str(tmp_path / 'teacher'))
  assert results['model'] == f'{user_module}:make_net'
  # 784·24 + 24 weights and biases, then 24·10 + 10.
  assert results['params'] == 784 * 24 + 24 + 24 * 10 + 10
  assert results['test_accuracy'] > 0.75
  saved = json.loads((tmp_path / 'teacher' / 'config.json').read_text())
  assert saved['model'] == model
  restored = checkpoint.restore_variables(str(tmp_path / 'teacher'),
                                         results['final_checkpoint_epoch'])
  assert restored['params']['Dense_0']['kernel'].shape == (784, 24)
  assert models.count_params(restored['params']) == results['params']
  student = _mnist_config(mnist_data_dir, {'name': f'{user_module}:TinyNet', 'width': 8},
                          **{'teacher.workdir': str(tmp_path / 'teacher')})
  distilled = loop.train_and_evaluate(student, str(tmp_path / 'student'))
  assert distilled['params'] == 784 * 8 + 8 + 8 * 10 + 10
  assert distilled['teacher']['model'] == f'{user_module}:make_net'
  assert distilled['teacher']['test_accuracy'] == results['test_accuracy']
  assert distilled['test_accuracy'] > 0.4  # chance is 0.1
  # The teacher's module gone: a later student is refused before it writes.
  os.rename(tmp_path / 'src' / f'{user_module}.py', tmp_path / 'src' / 'moved.py')
  sys.modules.pop(user_module)
  importlib.invalidate_caches()
  with pytest.raises(ConfigError, match=f"the teacher's config.model.name='{user_module}:"
                     f"make_net': module '{user_module}' does not import"):
    loop.train_and_evaluate(_mnist_config(
        mnist_data_dir, {'name': 'mlp', 'hidden': (8,)},
        **{'teacher.workdir': str(tmp_path / 'teacher')}), str(tmp_path / 'student2'))
  assert not (tmp_path / 'student2').exists()


@pytest.mark.parametrize('name, expected', [
    ('no_such_module_xyz:make_net', "module 'no_such_module_xyz' does not import"),
    ('{m}:missing', "has no attribute 'missing'"),
    ('{m}:NOT_CALLABLE', "'NOT_CALLABLE' is a int, not callable"),
    ('{m}:not_a_module', 'the factory returned a str, not a flax.linen.Module'),
    ('{m}:wrong_outputs', 'gives outputs of shape (11,) on 28x28x1 mnist images'),
    ('{m}:make_net', 'does not accept these options'),
])
def test_an_unusable_import_path_is_refused_in_one_line(user_module, mnist_data_dir, tmp_path,
                                                         name, expected):
  options = {'depth': 3} if name == '{m}:make_net' else {}
  config = _mnist_config(mnist_data_dir, {'name': name.format(m=user_module),
                                          'options': options})
  with pytest.raises(ConfigError) as error:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert expected in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists() or not os.listdir(tmp_path / 'run')
