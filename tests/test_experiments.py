"""The launchers: every preset's plan is valid and refuses bad flags in one line.

Every preset running end to end, and its report rows, are tested in test_presets.py."""

import importlib
import os

import jax
import pytest
from absl import flags

from experiments import common
from kdjax import checks
from kdjax import models

LAUNCHERS = ('cifar_kd', 'reversed_kd', 'self_kd', 'heterogeneous_kd', 'soft_loss_study')


@pytest.fixture(autouse=True, scope='module')
def parsed_flags():
  for name in LAUNCHERS:
    importlib.import_module(f'experiments.{name}')
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])


def _preset_models(preset):
  names = [preset.get(k) for k in ('teacher', 'student', 'model')]
  names += list(preset.get('students', ())) + list(preset.get('models', ()))
  return [n for n in names if n]


@pytest.mark.parametrize('launcher', LAUNCHERS)
def test_every_preset_builds_valid_configs_for_its_models(launcher):
  module = importlib.import_module(f'experiments.{launcher}')
  assert 'cpu' in module.PRESETS
  for name, preset in module.PRESETS.items():
    setup, _ = common.make_setup(preset)
    for model_name in _preset_models(preset):
      c = setup.config(model_name)
      checks.validate(c)
      # A held-out split, the same for every run; no mirror images of grayscale digits.
      assert c.validation_fraction == preset.get('validation_fraction', 0.1) > 0
      assert c.validation_seed == common.VALIDATION_SEED
      assert c.augment.flip == (preset['dataset'] == 'cifar10'), (launcher, name)
      model = models.create(model_name, num_classes=10)
      shapes = jax.eval_shape(lambda m=model: m.init(
          {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(0)},
          jax.numpy.zeros((1, 32, 32, 3)), train=False))
      assert models.count_params(shapes['params']) > 0, (launcher, name, model_name)


def test_shrunk_scales_sizes_and_keeps_the_code_path():
  full = common.Setup(dataset='cifar10', epochs=200).config('resnet20')
  full.schedule.name = 'step'
  full.schedule.boundaries = (100, 150)
  full.schedule.warmup_epochs = 5
  small = common.shrunk(full)
  assert (full.num_epochs, full.eval_every) == (200, 20)  # the input is left alone
  # Epoch 1 unevaluated, 2 on the cadence, 3 the last; the boundaries crossed.
  assert (small.num_epochs, small.eval_every, small.checkpoint_every) == (3, 2, 2)
  assert tuple(small.schedule.boundaries) == (2,) and small.schedule.warmup_epochs == 1
  assert small.train_examples == common.QUICK_EXAMPLES
  for block in ('optimizer', 'augment', 'sweep', 'teacher', 'distill', 'model'):
    assert small[block].to_dict() == full[block].to_dict(), block
  for field in ('dataset', 'validation_fraction', 'validation_seed', 'seed', 'data_seed'):
    assert small[field] == full[field], field
  one_epoch_cadence = common.Setup(dataset='fashion_mnist', recipe='adam', epochs=8).config('mlp')
  small = common.shrunk(one_epoch_cadence)
  assert (small.num_epochs, small.eval_every) == (2, 1)
  layers = len(models.create('mlp', num_classes=10).hidden)  # the family's default depth
  assert tuple(small.model.hidden) == (common.QUICK_WIDTH,) * layers
  assert 'hidden' not in common.shrunk(one_epoch_cadence, widths=False).model


def test_shrunk_preset_keeps_grids_and_seed_sweeps():
  from experiments import cifar_kd
  small = common.shrunk_preset(dict(cifar_kd.PRESETS['seed004'], seeds=3))
  assert small['temperatures'] == (2.0,) and small['students'] == ('lightnn',)
  assert small['extra']['temperatures'] == (2.0, 1.5) and small['seeds'] == 2


@pytest.mark.parametrize('launcher, args, fragment', [
    ('cifar_kd', ['--preset=nope'], 'known: seed001'),
    ('cifar_kd', ['--dataset=svhn'], 'svhn'),
    ('cifar_kd', ['--seeds=-1'], '--seeds'),
    ('method_zoo', ['--methods=kd,review'], '--methods: unknown review; known: kd, fitnet'),
])
def test_launcher_bad_flags_fail_in_one_line(launcher, args, fragment, tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', f'experiments.{launcher}',
                        f'--workdir={tmp_path}/run', *args], cwd=root, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and fragment in errors[0], out.stderr[-2000:]
  assert not os.path.exists(f'{tmp_path}/run')  # refused before anything is written
