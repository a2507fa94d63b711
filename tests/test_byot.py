"""Be Your Own Teacher: the loss by hand, its stop-gradients, exit sizes, anytime inference,
and the launcher's presets end to end."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import byot, checks, config as config_lib, models
from kdjax.errors import ConfigError
from kdjax.models import flops as flops_lib
from kdjax.models import multi_exit
from tests import test_presets
from tests.test_presets import preset_env  # noqa: F401  (a module fixture: set up here too)


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  return z - np.log(np.sum(np.exp(z)))


LOGITS = np.array([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]],  # exit 1
                   [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0]],  # exit 2
                   [[3.0, 1.0, -2.0], [0.5, 0.0, 2.5]]], np.float32)  # deepest
HINTS = np.array([[[1.0, 0.0], [2.0, 1.0]], [[0.5, 0.5], [0.0, 2.0]]], np.float32)  # [E-1, B, 2]
DEEPEST_HINT = np.array([[1.5, 0.0], [1.0, 1.0]], np.float32)
LABELS = np.array([0, 2])


def _by_hand(alpha, temperature, feature_weight, t_squared, deepest_weight=1.0):
  """The BYOT loss of example b, term by term in float64 loops."""
  out = []
  for b in range(2):
    total = -deepest_weight * _log_softmax(LOGITS[2, b])[LABELS[b]]
    teacher = np.exp(_log_softmax(LOGITS[2, b] / temperature))
    for i in range(2):
      ce = -_log_softmax(LOGITS[i, b])[LABELS[b]]
      kl = sum(teacher[k] * (np.log(teacher[k]) - _log_softmax(LOGITS[i, b] / temperature)[k])
               for k in range(3))
      feature = sum((HINTS[i, b, d] - DEEPEST_HINT[b, d])**2 for d in range(2))
      total += ((1 - alpha) * ce + alpha * (temperature**2 if t_squared else 1) * kl
                + feature_weight * feature)
    out.append(total)
  return np.array(out)


@pytest.mark.parametrize('t_squared', [True, False])
def test_loss_matches_a_hand_computed_value(t_squared):
  loss = jax.jit(lambda *a: byot.byot_loss(*a, alpha=0.3, temperature=3.0, feature_weight=0.03,
                                           t_squared=t_squared)[0])
  np.testing.assert_allclose(loss(LOGITS, HINTS, DEEPEST_HINT, LABELS),
                             _by_hand(0.3, 3.0, 0.03, t_squared), rtol=1e-5)
  # The PyTorch code's weighting of the deepest cross-entropy, as an option.
  value = byot.byot_loss(LOGITS, HINTS, DEEPEST_HINT, LABELS, alpha=0.3, temperature=3.0,
                         feature_weight=0.03, t_squared=t_squared, deepest_weight=0.7)[0]
  np.testing.assert_allclose(value, _by_hand(0.3, 3.0, 0.03, t_squared, 0.7), rtol=1e-5)


def test_the_deepest_exit_gets_no_teacher_gradient():
  def total(logits, hints, deepest_hint, **weights):
    return jnp.sum(byot.byot_loss(logits, hints, deepest_hint, LABELS, temperature=3.0,
                                  **weights)[0])

  full = jax.grad(total, argnums=(0, 1, 2))(LOGITS, HINTS, DEEPEST_HINT, alpha=0.5,
                                            feature_weight=1.0)
  labels_only = jax.grad(total, argnums=(0, 1, 2))(LOGITS, HINTS, DEEPEST_HINT, alpha=0.0,
                                                   feature_weight=0.0)
  # The deepest logits see their cross-entropy only; its feature map sees nothing.
  np.testing.assert_allclose(full[0][-1], labels_only[0][-1], rtol=1e-6)
  np.testing.assert_array_equal(full[2], 0.0)
  # The shallow exits do receive the teacher terms.
  assert not np.allclose(full[0][:-1], labels_only[0][:-1])
  assert np.abs(full[1]).sum() > 0


def _conv(k, c_in, c_out):
  return k * k * c_in * c_out


def _bn(c):
  return 2 * c


def test_resnet18_exit_parameters_counted_by_hand():
  model = models.create('multi_exit', num_classes=100, base='resnet18')
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False))
  stem = _conv(3, 3, 64) + _bn(64)

  def basic(c_in, c_out):  # two 3x3 conv-BN, a 1x1 conv-BN projection where the shape changes
    projection = _conv(1, c_in, c_out) + _bn(c_out) if c_in != c_out else 0
    return _conv(3, c_in, c_out) + _conv(3, c_out, c_out) + 2 * _bn(c_out) + projection

  stages = [basic(64, 64) * 2, basic(64, 128) + basic(128, 128),
            basic(128, 256) + basic(256, 256), basic(256, 512) + basic(512, 512)]
  fc = 512 * 100 + 100

  def exit_head(c_in, k):  # 1x1 to 128, kxk stride k, 1x1 to 512, each with BN; then fc
    return (_conv(1, c_in, 128) + _bn(128) + _conv(k, 128, 128) + _bn(128)
            + _conv(1, 128, 512) + _bn(512) + fc)

  expected = [stem + sum(stages[:1]) + exit_head(64, 8),
              stem + sum(stages[:2]) + exit_head(128, 4),
              stem + sum(stages[:3]) + exit_head(256, 2),
              stem + sum(stages) + fc]
  assert multi_exit.exit_params(model, variables['params']) == expected
  assert expected[-1] == 11_220_132  # the CIFAR ResNet-18 of 100 classes
  assert models.count_params(variables['params']) == expected[-1] + sum(
      exit_head(c, k) for c, k in ((64, 8), (128, 4), (256, 2)))


@pytest.mark.parametrize('options', [
    dict(base='cifar_resnet', blocks=(1, 1, 1), widths=(4, 4, 8, 8), exits=(1, 2)),
    dict(base='cifar_resnet', blocks=(1, 1, 1), widths=(4, 4, 8, 8), block='bottleneck',
         shortcut='B', stem='imagenet', exits=(1,), attention=True),
])
def test_exits_have_the_deepest_shape_and_grow_in_cost(options):
  model = models.create('multi_exit', num_classes=10, **options)
  image_shape = (16, 16, 1)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False))

  def outputs(variables):
    logits, features = model.apply(variables, jnp.ones((2, *image_shape)), train=False,
                                   return_features=True)
    return logits, multi_exit.exit_outputs(features, model.exits)

  logits, (exit_logits, hints, deepest) = jax.eval_shape(outputs, variables)
  assert len(exit_logits) == len(model.exit_names) == len(options['exits']) + 1
  assert exit_logits[-1].shape == logits.shape == (2, 10)
  assert all(h.shape == deepest.shape for h in hints)
  cost = multi_exit.exit_flops(model, variables, image_shape)
  assert cost == sorted(cost) and len(set(cost)) == len(cost)
  # Stopping at the deepest exit costs at least the plain network.
  plain = model.backbone
  plain_variables = {k: v['backbone'] for k, v in variables.items()}
  assert cost[-1] > flops_lib.forward_flops_per_example(plain, plain_variables, image_shape)


def test_bad_exits_and_bad_bases_fail_in_one_line():
  with pytest.raises(ConfigError, match='model.exits'):
    models.create('multi_exit', num_classes=10, base='resnet8', exits=(3,))
  with pytest.raises(ConfigError, match='not a ResNet'):
    models.create('multi_exit', num_classes=10, base='vgg8')
  c = config_lib.default()
  c.distill.objective = 'byot'
  with pytest.raises(ConfigError, match="model.name='mlp'"):
    checks.validate(c)
  c.model = c.model.__class__({'name': 'multi_exit', 'base': 'resnet8'})
  c.byot.alpha = 1.5
  with pytest.raises(ConfigError, match='byot.alpha'):
    checks.validate(c)


def test_anytime_thresholds_pick_the_first_and_the_last_exit():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 50, 10)) * 3
  labels = rng.integers(0, 10, size=50)
  assert np.all(byot.anytime(logits, 0.0) == 0)
  assert np.all(byot.anytime(logits, 1.01) == 2)
  curve = byot.anytime_curve(logits, labels, [1.0, 2.0, 5.0], [0.0, 0.7, 1.01])
  first, middle, last = curve
  assert first['flops'] == 1.0 and first['exit_fractions'] == [1.0, 0.0, 0.0]
  assert first['accuracy'] == np.mean(logits[0].argmax(-1) == labels)
  assert last['flops'] == 5.0 and last['accuracy'] == np.mean(logits[2].argmax(-1) == labels)
  # In between, each example answers at the first exit that is confident enough.
  probs = byot.softmax(logits).max(-1)
  expected = np.where(probs[0] > 0.7, 0, np.where(probs[1] > 0.7, 1, 2))
  np.testing.assert_array_equal(byot.anytime(logits, 0.7), expected)
  assert middle['flops'] == pytest.approx(np.mean(np.array([1.0, 2.0, 5.0])[expected]))


def _check_byot(data, workdir, preset):
  """Per-exit results in each BYOT run; a row per network; a threshold chosen on validation."""
  byot_stage = os.path.join(workdir, 'byot')
  with open(os.path.join(byot_stage, 'results.json')) as f:
    stage = json.load(f)
  from experiments import common
  for run in common.members(dict(stage, workdir=byot_stage)):
    with open(os.path.join(run['workdir'], 'results.json')) as f:
      results = json.load(f)
    assert results['objective'] == 'byot' and results['model'] == 'multi_exit'
    names = [e['name'] for e in results['exits']]
    assert names == [f'exit{s}' for s in preset['exits']] + ['deepest']
    assert results['exits'][-1]['params'] < results['params']
    evaluation = results['exit_evaluation']
    assert set(evaluation) == {'validation', 'test'}
    assert evaluation['test']['exit_accuracy']['deepest'] == results['test_accuracy']
    anytime = evaluation['test']['anytime']
    assert anytime[0]['exit_fractions'][0] == 1.0 and anytime[-1]['exit_fractions'][-1] == 1.0
    assert all(np.isfinite(h['train_byot_kl']) for h in results['history'])
  assert (data['selections'][0]['what'] == 'anytime threshold'
          and data['selections'][0]['selected_on'] == 'validation')
  assert os.path.exists(os.path.join(workdir, 'anytime.png'))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['paper', 'seed000', 'cpu'])
def test_preset_runs_to_the_end(name, preset_env, tmp_path, monkeypatch):  # noqa: F811
  # Mock data: CIFAR-100 for `paper`, CIFAR-10 for `seed000`, Fashion-MNIST for `cpu`.
  monkeypatch.setitem(test_presets.EXTRA_CHECKS, 'byot', _check_byot)
  test_presets.run_and_check('byot', name, preset_env, tmp_path)


@pytest.mark.parametrize('name', ['seed000', 'paper', 'cpu'])
def test_every_preset_builds_valid_configs(name):
  from absl import flags
  from experiments import byot as launcher
  from experiments import common
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  preset = launcher.PRESETS[name]
  setup, _ = common.make_setup(preset)
  setup.model_options = launcher._model_options(preset)  # pylint: disable=protected-access
  plain = setup.config(preset['base'])
  with_exits = config_lib.override(setup.config('multi_exit'), {'distill.objective': 'byot'})
  for c in (plain, with_exits):
    checks.validate(c)
    assert c.validation_fraction == 0.1 and c.dataset == preset['dataset']
  assert with_exits.model.base == preset['base']
  assert tuple(with_exits.model.exits) == tuple(preset['exits'])
  if name != 'cpu':  # the BYOT code's CIFAR recipe
    assert (with_exits.optimizer.name, with_exits.optimizer.learning_rate,
            with_exits.optimizer.weight_decay, with_exits.batch_size) == ('sgd', 0.1, 5e-4, 128)
    assert tuple(with_exits.schedule.boundaries) == (75, 130, 180)
  assert preset['dataset'] == {'seed000': 'cifar10', 'paper': 'cifar100',
                               'cpu': 'fashion_mnist'}[name]


def test_an_unknown_preset_fails_in_one_line(tmp_path):
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, '-m', 'experiments.byot', f'--workdir={tmp_path}/run',
                        '--preset=nope'], cwd=root, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'known: seed000, paper, cpu' in errors[0], out.stderr[-2000:]


@pytest.mark.slow
def test_a_vectorised_seed_sweep_evaluates_every_member_at_every_exit(preset_env,  # noqa: F811
                                                                       tmp_path):
  # Mock MNIST (preset_env): the sweep's path, not its accuracy.
  from configs import mnist_student
  from kdjax.train import loop
  c = mnist_student.get_config()
  c.data_dir = preset_env
  c.model = c.model.__class__({'name': 'multi_exit', 'base': 'cifar_resnet',
                               'blocks': (1, 1, 1), 'widths': (4, 4, 8, 8), 'exits': (1, 2)})
  c = config_lib.override(c, {
      'distill.objective': 'byot', 'train_examples': 0, 'batch_size': 16, 'num_epochs': 1,
      'validation_fraction': 0.25, 'sweep.seed': (0, 1), 'sweep.mode': 'vmap',
      'eval_batch_size': 16})
  results = loop.train_and_evaluate(c, str(tmp_path / 'run'))
  assert [e['name'] for e in results['exits']] == ['exit1', 'exit2', 'deepest']
  assert len(results['members']) == 2
  for member in results['members']:
    with open(os.path.join(member['workdir'], 'results.json')) as f:
      member_results = json.load(f)
    # Each member's deepest exit is its own network's evaluation.
    for split in ('validation', 'test'):
      evaluation = member_results['exit_evaluation'][split]
      assert evaluation['exit_accuracy']['deepest'] == member_results[f'{split}_accuracy']
      assert len(evaluation['anytime']) == len(byot.THRESHOLDS)
