"""The launchers: every preset's plan is valid, and each launcher runs end to end
on tfds mock CIFAR-10 (quick: one short epoch per stage) and writes its report."""

import importlib
import json
import os

import jax
import pytest
import tensorflow_datasets as tfds
from absl import flags

from experiments import common
from kdjax import config as config_lib
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
    setup = common.Setup(dataset=preset['dataset'], recipe=preset.get('recipe', 'sgd'),
                         epochs=preset['epochs'])
    for model_name in _preset_models(preset):
      c = setup.config(model_name)
      config_lib.validate(c)
      model = models.create(model_name, num_classes=10)
      shapes = jax.eval_shape(lambda m=model: m.init(
          {'params': jax.random.PRNGKey(0), 'dropout': jax.random.PRNGKey(0)},
          jax.numpy.zeros((1, 32, 32, 3)), train=False))
      assert models.count_params(shapes['params']) > 0, (launcher, name, model_name)


def _run_quick(launcher, preset_name, tmp_path, **preset_changes):
  module = importlib.import_module(f'experiments.{launcher}')
  preset = dict(module.PRESETS[preset_name], name=preset_name, **preset_changes)
  setup = common.Setup(dataset='cifar10', recipe=preset.get('recipe', 'sgd'), epochs=1,
                       seeds=2, quick=True, data_dir=str(tmp_path / 'tfds'),
                       model_options=preset.get('model_options', {}),
                       sweep_mode='vmap')  # one program per stage: fewer compiles
  workdir = str(tmp_path / launcher)
  os.makedirs(workdir)
  with tfds.testing.mock_data(num_examples=common.QUICK_EXAMPLES):
    text = module.body(common.Stages(workdir, setup), preset)
  with open(os.path.join(workdir, 'report.json')) as f:
    data = json.load(f)
  assert os.path.exists(os.path.join(workdir, 'report.md'))
  assert os.path.exists(os.path.join(workdir, 'curves.png'))
  return text, data, workdir


def test_cifar_kd_quick_on_mock_cifar(tmp_path):
  # The cpu preset's grid plus seed 004's two one-dimensional sweeps.
  text, data, workdir = _run_quick('cifar_kd', 'cpu', tmp_path, teacher='simplenn', extra=dict(
      student='simplenn', temperatures=(2.0, 1.01), alphas=(0.25, 0.75)))
  # 2 temperatures x 2 alphas x 2 seeds in one vectorised stage.
  grid = data['students']['simplenn']['grid']
  assert sorted(grid) == ['T=2,alpha=0.5', 'T=2,alpha=0.9', 'T=4,alpha=0.5', 'T=4,alpha=0.9']
  assert all(len(runs) == 2 for runs in grid.values())
  assert len(data['students']['simplenn']['alone_runs']) == 2
  assert 'simplenn distilled' in text and 'alpha \\ T' in text
  kd = json.load(open(os.path.join(workdir, 'simplenn_kd', 'results.json')))
  assert len(kd['members']) == 8 and kd['teacher']['cached'] is False  # augmented input
  assert sorted(data['simplenn_temperature_sweep']) == ['1.01', '2']
  assert sorted(data['simplenn_alpha_sweep']) == ['0.25', '0.75']
  assert 'vs temperature' in text


def test_reversed_kd_quick_on_mock_cifar(tmp_path):
  _, data, _ = _run_quick('reversed_kd', 'cpu', tmp_path)
  assert data['params']['teacher'] < data['params']['student']
  assert len(data['alone']) == len(data['distilled']) == 2


def test_self_kd_chains_generations(tmp_path):
  _, data, workdir = _run_quick('self_kd', 'cpu', tmp_path, model='simplenn', generations=1)
  assert [len(g) for g in data['generations']] == [2, 2]
  # Chain s of generation 1 was taught by seed s of generation 0, and keeps seed s.
  gen0 = json.load(open(os.path.join(workdir, 'gen0', 'results.json')))['members']
  for s in range(2):
    results = json.load(open(os.path.join(workdir, f'gen1_seed{s}', 'results.json')))
    assert results['teacher']['workdir'] == gen0[s]['workdir'] and gen0[s]['seed'] == s
    assert results['seed'] == s


def test_heterogeneous_kd_both_directions(tmp_path):
  _, data, _ = _run_quick('heterogeneous_kd', 'cpu', tmp_path, models=('simplenn', 'mlp'))
  assert set(data) >= {'simplenn', 'mlp'}
  assert len(data['simplenn']['from_mlp']) == 2 and len(data['mlp']['from_simplenn']) == 2


def test_soft_loss_study_grid_is_one_program(tmp_path):
  _, data, workdir = _run_quick('soft_loss_study', 'cpu', tmp_path, teacher='simplenn',
                                temperatures=(1.0, 4.5))
  assert len(data['grid']) == 4 * 2
  results = json.load(open(os.path.join(workdir, 'student_kd', 'results.json')))
  assert len(results['members']) == 4 * 2 * 2
  assert {m['kind'] for m in results['members']} == {'kl', 'mse_logits', 'mse_probs', 'cosine'}
  assert os.path.exists(os.path.join(workdir, 'kinds.png'))


@pytest.mark.parametrize('args, fragment', [
    (['--preset=nope'], 'known: seed001'),
    (['--dataset=svhn'], 'svhn'),
    (['--seeds=-1'], '--seeds'),
])
def test_launcher_bad_flags_fail_in_one_line(args, fragment, tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', 'experiments.cifar_kd',
                        f'--workdir={tmp_path}/run', *args], cwd=root, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and fragment in errors[0], out.stderr[-2000:]
