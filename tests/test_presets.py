"""Every launcher preset runs to the end, and every report row says what its runs trained.

Each preset runs with its own recipe (optimizer, schedule, augmentation, sweep
mode, evaluation cadence, the teacher in the step, the validation split),
shrunk by `common.shrunk` / `shrunk_preset` in sizes only, on
`tfds.testing.mock_data`. Named conv nets, which have no width option, are
narrowed here (tiny widths, one block or conv per stage, the same module
classes), so a preset of ResNet-101 runs in seconds on the CPU.

Every row of every report is then held against the results.json of each of
its runs: the settings its label states (model, T, alpha, kind, teacher,
omitted classes, 'alone') and its fields (seeds, data seeds, dataset).
"""

import contextlib
import importlib
import json
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from experiments import common
from kdjax import models
from kdjax.models import resnet, vgg
import tests

LAUNCHERS = ('cifar_kd', 'reversed_kd', 'self_kd', 'heterogeneous_kd', 'soft_loss_study',
             'method_zoo')


def presets(launchers) -> list[tuple[str, str]]:
  return [(launcher, name) for launcher in launchers
          for name in importlib.import_module(f'experiments.{launcher}').PRESETS]


# cifar_kd's and method_zoo's presets run from their own files
# (tests/test_presets_cifar_kd.py, tests/test_presets_method_zoo.py), so that
# the files share the test workers.
PRESETS = presets(LAUNCHERS[1:-1])
MOCK_EXAMPLES = 64


def _narrow(factory, **kwargs):
  """The module `factory` builds, at tiny width with one block (or conv) per stage."""
  module = factory(**kwargs)
  if isinstance(module, resnet.ResNet):
    return module.clone(blocks=(1,) * len(module.blocks),
                        widths=(4, 4, 8, 8, 8)[:len(module.widths)])
  if isinstance(module, vgg.VGG):
    return module.clone(stages=tuple((8,) for _ in module.stages))
  return module


@pytest.fixture(scope='module')
def preset_env(tmp_path_factory):
  """Flags parsed, narrowed conv nets, mock data and kdjax's own CPU convolution (programs
  come from the run's cache).

  A preset trains each stage for a few epochs: the narrowed nets run several times
  slower through XLA's convolution at the suite's optimisation level (tests/__init__.py)
  than through kdjax's, which compiles a little slower; kdjax's is also what a
  launcher uses outside the tests."""
  for launcher in LAUNCHERS:
    importlib.import_module(f'experiments.{launcher}')
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  with contextlib.ExitStack() as stack:
    patch = stack.enter_context(pytest.MonkeyPatch.context())
    patch.setenv(tests.CPU_CONV_ENV, 'patches')
    for name in models.names():
      module = models.create(name, num_classes=10)
      if isinstance(module, (resnet.ResNet, vgg.VGG)):
        factory = models._REGISTRY[name]  # pylint: disable=protected-access
        patch.setitem(models._REGISTRY, name,  # pylint: disable=protected-access
                      lambda factory=factory, **kw: _narrow(factory, **kw))
    stack.enter_context(tfds.testing.mock_data(num_examples=MOCK_EXAMPLES))
    yield str(tmp_path_factory.mktemp('tfds'))


def _label_claims(label: str) -> dict:
  """The settings a row's label states, parsed back from its words."""
  claims = {}
  words = re.findall(r'[\w.-]+', label)
  named = [w for w in words if w in models.names()]
  if named:
    claims['model'] = named[0]
  teacher = re.search(r'(?:taught by|from) ([\w-]+)', label)
  if teacher and teacher.group(1) in models.names():
    claims['teacher_model'] = teacher.group(1)
  widths = re.search(r'\b(\d+)-(\d+)\b', label)
  if widths:
    claims['hidden'] = [int(widths.group(1)), int(widths.group(2))]
  for key, pattern in (('temperature', r'\bT=([\d.]+)'), ('alpha', r'\balpha=([\d.]+)')):
    found = re.search(pattern, label)
    if found:
      claims[key] = float(found.group(1))
  found = re.search(r'\bkind=(\w+)', label)
  if found:
    claims['kind'] = found.group(1)
  found = re.search(r'\bmethod=(\w+)', label)
  if found:
    claims['method'] = found.group(1)
  if 'soft only' in label:
    claims['alpha'] = 1.0
  omitted = re.search(r'\bno (\d)s\b', label)
  claims['omit_classes'] = [int(omitted.group(1))] if omitted else []
  if re.search(r'\balone\b', label) or label.startswith('teacher'):
    claims['teacher_model'] = None
  return claims


def check_report_rows(report: dict) -> int:
  """Asserts that each row of `report` states what its runs trained with; returns the count."""
  assert report['rows']
  for row in report['rows']:
    claims = _label_claims(row['label'])
    assert row['workdirs'] and len(row['workdirs']) == len(row['seeds'])
    # Seeds vary the initialisation and the data order together.
    assert len(set(row['data_seeds'])) == len(set(row['seeds'])) == len(row['seeds']), row
    for workdir, seed, data_seed in zip(row['workdirs'], row['seeds'], row['data_seeds']):
      with open(os.path.join(workdir, 'results.json')) as f:
        results = json.load(f)
      config = results['config']
      trained = {
          'model': results['model'], 'hidden': config['model'].get('hidden'),
          'teacher_model': (results['teacher'] or {}).get('model'),
          'temperature': results['temperature'], 'alpha': results['alpha'],
          'kind': results['kind'], 'method': (results.get('method') or {}).get('name'),
          'omit_classes': list(results.get('omit_classes', config['omit_classes']))}
      for key, claimed in claims.items():
        if key == 'hidden' and trained['hidden'] is None:
          continue
        assert trained[key] == claimed, (row['label'], key, trained[key], workdir)
      # The row's own fields are the run's, not the launcher's intent.
      assert seed == results['seed'] and row['dataset'] == results['dataset'], row['label']
      assert data_seed == results.get('data_seed', config['data_seed']), row['label']
      assert row['model'] == results['model'], row['label']
      for key in ('temperature', 'alpha', 'kind'):
        expected = results[key] if results['teacher'] else None
        assert row[key] == expected, (row['label'], key)
  return len(report['rows'])


def check_selections(report: dict) -> None:
  for selection in report['selections']:
    assert selection['selected_on'] == 'validation', selection
    assert 0 <= selection['validation_accuracy'] <= 1 and 0 <= selection['test_accuracy'] <= 1


def _run_preset(launcher, name, data_dir, workdir, overrides=None, reuse=False):
  module = importlib.import_module(f'experiments.{launcher}')
  setup, preset = common.make_setup(dict(module.PRESETS[name], **(overrides or {})),
                                    quick=True, data_dir=data_dir)
  os.makedirs(workdir, exist_ok=reuse)
  text = module.body(common.Stages(workdir, setup), dict(preset, name=name))
  with open(os.path.join(workdir, 'report.json')) as f:
    return text, json.load(f), setup, preset


def _read(path):
  with open(path) as f:
    return json.load(f)


def _check_cifar_kd(data, workdir, preset):
  student = preset['students'][0]
  grid = data['students'][student]['grid']
  assert len(grid) == len(preset['temperatures']) * len(preset['alphas'])
  assert {len(runs) for runs in grid.values()} == {data['setup']['seeds']}
  kd_dir = os.path.join(workdir, f'{student}_kd')
  kd = dict(_read(os.path.join(kd_dir, 'results.json')), workdir=kd_dir)
  # Augmented inputs: the teacher runs in the step, in every member.
  for member in common.members(kd):
    assert _read(os.path.join(member['workdir'], 'results.json'))['teacher']['cached'] is False
  if 'extra' in preset:
    for axis in ('temperature', 'alpha'):
      assert len(data[f'{preset["extra"]["student"]}_{axis}_sweep']) == 2


def _check_reversed_kd(data, workdir, preset):
  assert data['params']['teacher'] < data['params']['student'] or preset['name'] != 'cpu'
  assert len(data['alone']) == len(data['distilled']) == data['setup']['seeds']


def _check_heterogeneous_kd(data, workdir, preset):
  a, b = preset['models']
  assert len(data[a][f'from_{b}']) == len(data[b][f'from_{a}']) == data['setup']['seeds']


def _check_soft_loss_study(data, workdir, preset):
  kd = _read(os.path.join(workdir, 'student_kd', 'results.json'))
  assert {m['kind'] for m in kd['members']} == set(preset['kinds'])
  assert len(kd['members']) == len(preset['kinds']) * len(preset['temperatures']) * (
      data['setup']['seeds'])


def _check_self_kd(data, workdir, preset):
  from experiments import self_kd
  gen0 = common.members(dict(_read(os.path.join(workdir, 'gen0', 'results.json')),
                             workdir=os.path.join(workdir, 'gen0')))
  seeds = set()
  for s, first in enumerate(gen0):
    teacher = first['workdir']
    for k in range(1, preset['generations'] + 1):
      results = _read(os.path.join(workdir, f'gen{k}_seed{s}', 'results.json'))
      # Generation k of chain s: taught by generation k-1 of chain s, with a seed
      # (and data order) of its own.
      assert results['teacher']['workdir'] == teacher
      assert results['seed'] == results['data_seed'] == self_kd.generation_seed(s, k, False)
      seeds.add(results['seed'])
      teacher = os.path.join(workdir, f'gen{k}_seed{s}')
  assert len(seeds) == len(gen0) * preset['generations']


def _check_method_zoo(data, workdir, preset):
  """Every method asked for (all, or the preset's `methods`) ran on every kept pair (each
  preset's pairs can run them all, FSP's equal channels included), each stage with the method,
  optimizer and logit standardisation its label names."""
  from experiments import method_zoo
  pairs = [tuple(p) for p in data['pairs']]
  assert pairs == list(preset['pairs'])
  chosen = list(preset.get('methods') or method_zoo.METHODS)
  assert sorted(data['methods']) == sorted(chosen) and 'kd' in chosen
  ran = 0
  for teacher, student in pairs:
    accuracy = data['accuracy'][f'{teacher}->{student}']
    assert sorted(accuracy) == sorted(chosen)
    for method in chosen:
      name = method_zoo.method_name(method) or None
      candidates = method_zoo.relation_weights(method, preset, quick=True)
      ran += len(candidates) if name is not None else 0
      stage = os.path.join(workdir, f'{student}_from_{teacher}_{method.replace("+", "_")}')
      with open(os.path.join(stage, 'results.json')) as f:
        results = json.load(f)
      runs = common.members(results)
      first = json.load(open(os.path.join(runs[0].get('workdir') or stage, 'results.json')))
      config = first['config']
      assert (first.get('method') or {}).get('name') == name
      assert first['alpha'] == method_zoo.ALPHAS.get(method, 0.0)
      # DOT and logit standardisation are not methods: the config says which ran.
      assert (config['optimizer']['name'] == 'dot') == (method == 'kd+dot'), method
      assert config['distill']['standardize'] == method.endswith('+ls'), method
      if method == 'kd+ls':
        assert first['temperature'] == 2.0
      if method == 'dkd+ls':
        assert (config['method']['dkd_alpha'], config['method']['dkd_beta'],
                config['method']['dkd_temperature']) == (9.0, 72.0, 2.0)
      if name == 'mlkd':
        assert (first['method']['weight'], config['method']['mlkd_temperature']) == (
            (9.0, 2.0) if method == 'mlkd+ls' else (0.9, 4.0))
        assert first['teacher']['cached'] is False  # two augmented views: in the step
        assert candidates == tuple(preset.get('mlkd_relation_weights', (1.0,)))[:2]
        for weight in candidates:  # one stage per candidate class- and batch-level weight
          path = stage if weight == 1.0 else f'{stage}_rw{weight:g}'
          member = common.members(json.load(open(os.path.join(path, 'results.json'))))[0]
          run = json.load(open(os.path.join(member.get('workdir') or path, 'results.json')))
          assert (run['config']['method']['mlkd_class_weight'],
                  run['config']['method']['mlkd_batch_weight']) == (weight, weight)
      if method == 'ctkd':  # the learned temperature, in (1, 21), at every epoch
        assert all(1.0 < h['train_temperature'] < 21.0 for h in first['history'])
      if method in ('ab', 'ft', 'fsp'):  # the init stage: the first epoch of a quick run
        assert config['method']['init_epochs'] == 1
        assert np.isfinite(first['history'][0]['train_method_init'])
      if name is not None and method != 'ctkd':  # the method's unweighted term, finite
        assert all(np.isfinite(h['train_method']) for h in first['history'])
  labels = [r['label'] for r in data['rows']]
  assert sum('method=' in label for label in labels) == ran
  chosen_mlkd = [m for m in chosen
                 if len(method_zoo.relation_weights(m, preset, quick=True)) > 1]
  assert sorted(s['what'].split(', ')[1].split(':')[0] for s in data['selections']) == sorted(
      chosen_mlkd * len(pairs))
  assert all(s['selected_on'] == 'validation' for s in data['selections'])


EXTRA_CHECKS = {'method_zoo': _check_method_zoo, 'cifar_kd': _check_cifar_kd, 'reversed_kd': _check_reversed_kd,
                'heterogeneous_kd': _check_heterogeneous_kd,
                'soft_loss_study': _check_soft_loss_study, 'self_kd': _check_self_kd}


@pytest.mark.slow
@pytest.mark.parametrize('launcher, name', PRESETS, ids=[f'{l}:{n}' for l, n in PRESETS])
def test_preset_runs_to_the_end(launcher, name, preset_env, tmp_path):
  run_and_check(launcher, name, preset_env, tmp_path)


def run_and_check(launcher, name, preset_env, tmp_path, overrides=None, reuse=False):
  """Runs one preset shrunk (with `overrides` of its entries, if any), then checks its
  stages, report rows and selections. With `reuse`, `tmp_path / name` may hold an earlier
  invocation's finished stages, which the launcher then skips (as a user's rerun does)."""
  text, data, setup, preset = _run_preset(launcher, name, preset_env, str(tmp_path / name),
                                          overrides, reuse)
  full = importlib.import_module(f'experiments.{launcher}').PRESETS[name]
  # Every stage finished with its own recipe, shrunk in sizes only.
  for stage, workdir in data['stages'].items():
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
    config = results['config']
    assert config['validation_fraction'] == full.get('validation_fraction', 0.1), stage
    assert config['validation_seed'] == common.VALIDATION_SEED
    recipe_optimizer = common.base_config(full.get('recipe', 'sgd')).optimizer.name
    assert config['optimizer']['name'] == (
        'dot' if stage.endswith('_kd_dot') else recipe_optimizer), stage
    channels = 1 if setup.dataset in ('mnist', 'fashion_mnist') else 3
    assert config['augment']['flip'] == (channels == 3), stage
    if full['epochs'] // 10 > 1:  # the full run evaluates every few epochs: so does this one
      assert config['eval_every'] == 2 and config['num_epochs'] == 3, stage
      history = common.members(results)[0]
      history = json.load(open(os.path.join(history.get('workdir') or workdir,
                                            'results.json')))['history']
      assert [h['epoch'] for h in history if 'test_accuracy' in h] == [2, 3], stage
    if results.get('teacher') and 'members' not in results:
      assert results['teacher']['cached'] is False  # augmented inputs: teacher in the step
  for written in ('report.md', 'curves.png'):
    assert (tmp_path / name / written).exists(), written
  fraction = full.get('validation_fraction', 0.1)
  assert f'alidation: seeded {100 * fraction:g} % of the training split' in text
  assert check_report_rows(data) >= 2
  check_selections(data)
  assert 'test-set oracle' not in json.dumps(data['selections'])
  for line in text.splitlines():  # the test-set best appears only where labelled so
    if 'oracle' in line:
      assert 'test-set oracle (not a valid selection)' in line, line
  EXTRA_CHECKS[launcher](data, str(tmp_path / name), dict(preset, name=name))


def test_hinton_mnist_stages_train_what_their_rows_say():
  from experiments import hinton_mnist
  plan = dict(hinton_mnist._stages(  # pylint: disable=protected-access
      quick=False, seeds=1, omit=3))
  assert (plan['distill_mixed'].distill.temperature, plan['distill_mixed'].distill.alpha) == (
      20.0, 0.9)
  assert plan['omit_distill'].distill.alpha == 1.0 and plan['distill_T'].distill.alpha == 1.0
  assert tuple(plan['omit_distill'].omit_classes) == (3,)
  for name, config in plan.items():  # one held-out split for every stage, teacher included
    assert (config.validation_fraction, config.validation_seed) == (
        common.VALIDATION_FRACTION, common.VALIDATION_SEED), name


def test_a_row_whose_label_is_not_what_its_run_trained_fails(tmp_path):
  # hinton_mnist's old bug: the "alpha=0.9" stage trained with alpha 1.
  results = {'model': 'mlp', 'dataset': 'mnist', 'seed': 0, 'data_seed': 0,
             'temperature': 20.0, 'alpha': 1.0, 'kind': 'kl', 'omit_classes': [],
             'teacher': {'model': 'mlp'}, 'test_accuracy': 0.5,
             'config': {'model': {'name': 'mlp', 'hidden': [800, 800]}, 'omit_classes': [],
                        'data_seed': 0}}
  (tmp_path / 'results.json').write_text(json.dumps(results))
  row = {'workdirs': [str(tmp_path)], 'seeds': [0], 'data_seeds': [0], 'dataset': 'mnist',
         'model': 'mlp', 'temperature': 20.0, 'alpha': 1.0, 'kind': 'kl'}
  assert check_report_rows({'rows': [dict(row, label='800-800 distilled, T=20, soft only')]})
  for wrong in ('800-800 distilled, T=20, alpha=0.9', '800-800 distilled, T=2, soft only',
                '300-300 distilled, T=20, soft only', '800-800 alone',
                '800-800 distilled, no 3s, T=20, soft only'):
    with pytest.raises(AssertionError):
      check_report_rows({'rows': [dict(row, label=wrong)]})
  with pytest.raises(AssertionError):  # a row field copied from the launcher's intent
    check_report_rows({'rows': [dict(row, label='800-800 distilled, T=20, soft only',
                                     alpha=0.9)]})
