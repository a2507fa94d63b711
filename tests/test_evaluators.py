"""Evaluators by name: agreement and calibration by hand, the registry's rules, and runs
on the real MNIST whose results.json gets each evaluator's section."""

import json
import os

import jax
import numpy as np
import pytest

from kdjax import checks, data, evaluators
from kdjax import config as config_lib
from kdjax import models
from kdjax.errors import ConfigError
from kdjax.evaluators import agreement, calibration
from kdjax.evaluators import exits as exits_evaluator
from kdjax.train import sweep as sweep_lib

LN2, LN3 = np.log(2.0), np.log(3.0)


def test_agreement_of_three_examples_by_hand():
  # Logits are log-probabilities plus a per-row constant (softmax ignores it).
  teacher = np.log([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]) + [[7.0], [0.0],
                                                                                [-3.0]]
  student = np.log([[0.25, 0.5, 0.25], [0.25, 0.5, 0.25], [0.125, 0.125, 0.75]])
  # Row 0 disagrees (teacher 0, student 1); rows 1 and 2 agree.
  # KL(p || q) per row: 0.5 ln 2 + 0.25 ln(1/2) = ln2 / 4; 0; 2 · 0.25 ln 2 + 0.5 ln(2/3)
  # = ln 2 − ln3 / 2.
  kl = (LN2 / 4 + 0.0 + LN2 - LN3 / 2) / 3  # 0.10571
  got = agreement.agreement(teacher, student)
  assert got['top1_agreement'] == pytest.approx(2 / 3)
  assert got['kl_teacher_student'] == pytest.approx(kl, rel=1e-12)
  assert agreement.agreement(teacher, teacher) == {'top1_agreement': 1.0,
                                                   'kl_teacher_student': 0.0}


def test_expected_calibration_error_and_nll_by_hand():
  probs = np.array([[0.9, 0.05, 0.05],  # confidence 0.9, right: bin (13/15, 14/15]
                    [0.05, 0.9, 0.05],  # 0.9, wrong: the same bin
                    [0.7, 0.2, 0.1],  # 0.7, right: bin (10/15, 11/15]
                    [0.2, 0.5, 0.3]])  # 0.5, wrong: bin (7/15, 8/15]
  labels = np.array([0, 0, 0, 2])
  logits = np.log(probs) + 4.0
  # (2/4)·|1/2 − 0.9| + (1/4)·|1 − 0.7| + (1/4)·|0 − 0.5| = 0.2 + 0.075 + 0.125
  assert calibration.expected_calibration_error(logits, labels) == pytest.approx(0.4)
  # One bin: |accuracy − mean confidence| = |0.5 − 0.75|.
  assert calibration.expected_calibration_error(logits, labels, num_bins=1) == pytest.approx(0.25)
  nll = -(np.log(0.9) + np.log(0.05) + np.log(0.7) + np.log(0.3)) / 4  # 1.16544
  assert calibration.mean_nll(logits, labels) == pytest.approx(nll, rel=1e-12)


def test_an_unknown_evaluator_is_refused_in_one_line(tmp_path):
  from kdjax import train
  c = config_lib.default()
  c.evaluators = ('auto', 'nope')
  with pytest.raises(ConfigError) as raised:
    checks.validate(c)
  message = str(raised.value)
  assert '\n' not in message and message.startswith('config.evaluators=')
  assert "unknown evaluator 'nope'" in message and 'calibration' in message
  with pytest.raises(ConfigError, match='config.evaluators'):  # before anything is written
    train.train_and_evaluate(c, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')


@pytest.mark.parametrize('chosen, expected', [
    (('agreement',), "'agreement' needs a teacher"),
    (('exits',), "'exits' needs a multi-exit model"),
    (('calibration', 'calibration'), 'must not repeat'),
])
def test_an_evaluator_checks_the_config_it_reads(chosen, expected):
  c = config_lib.default()
  c.evaluators = chosen
  with pytest.raises(ConfigError, match=expected):
    checks.validate(c)


def _context(config, model=None, teacher=None, members=None, **fields):
  defaults = dict(state=None, image_shape=(28, 28, 1), logits={}, labels={},
                  predict=lambda *args: {})
  return evaluators.Context(config=config, members=members or sweep_lib.Members.of(config),
                            model=model, teacher=teacher, **dict(defaults, **fields))


def _resolved(context) -> list[str]:
  return [e.name for e in evaluators.resolve(context)]


def test_auto_is_what_applies_to_the_run():
  c = config_lib.default()
  assert _resolved(_context(c)) == []
  assert _resolved(_context(c, teacher=object())) == ['agreement']
  exit_model = models.create('multi_exit', num_classes=10, base='cifar_resnet',
                             blocks=(1, 1, 1), widths=(4, 4, 8, 8), exits=(1, 2))
  assert _resolved(_context(c, model=exit_model)) == ['exits']
  c.evaluators = ('calibration', 'auto')
  assert _resolved(_context(c, teacher=object())) == ['calibration', 'agreement']
  c.evaluators = ('agreement',)
  assert _resolved(_context(c, teacher=object())) == ['agreement']


def test_the_exits_evaluator_scores_every_exit_of_a_multi_exit_model():
  model = models.create('multi_exit', num_classes=3, base='cifar_resnet', blocks=(1, 1, 1),
                        widths=(4, 4, 8, 8), exits=(1, 2))
  images = np.random.default_rng(0).normal(size=(12, 8, 8, 1)).astype(np.float32)
  labels = {'test': np.arange(12) % 3, 'validation': (np.arange(12) + 1) % 3}
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  state = type('State', (), {'params': variables['params'],
                             'model_state': {'batch_stats': variables['batch_stats']}})()
  deepest = np.asarray(model.apply(variables, images, train=False))

  def predict(network, network_variables, num_members):
    assert num_members == 0
    outputs = np.asarray(network.apply(network_variables, images, train=False))
    return {split: outputs[None] for split in labels}

  context = _context(config_lib.default(), model=model, state=state, image_shape=(8, 8, 1),
                     labels=labels, predict=predict)
  sections = exits_evaluator.evaluate(context)
  assert [e['name'] for e in sections.shared['exits']] == ['exit1', 'exit2', 'deepest']
  assert sections.shared['exits'][-1]['params'] < models.count_params(variables['params'])
  (member,) = sections.members
  for split, y in labels.items():
    evaluation = member['exit_evaluation'][split]
    assert evaluation['exit_accuracy']['deepest'] == pytest.approx(
        np.mean(deepest.argmax(-1) == y))
    assert evaluation['anytime'][-1]['exit_fractions'] == [0.0, 0.0, 1.0]


def test_two_evaluators_may_not_write_one_section():
  c = config_lib.default()
  c.evaluators = ('first', 'second')

  def same_section(context):
    del context
    return evaluators.Sections(members=({'same': 1},))

  try:
    evaluators.register('first')(same_section)
    evaluators.register('second')(same_section)
    with pytest.raises(ValueError, match="'first' and 'second' both write the section 'same'"):
      evaluators.run(_context(c))
  finally:
    evaluators.unregister('first')
    evaluators.unregister('second')


def test_an_evaluator_may_not_replace_a_field_of_results_json():
  from kdjax.train import results as results_lib
  assert results_lib.add_sections({'test_accuracy': 0.9}, {'ece': 0.1}) == {
      'test_accuracy': 0.9, 'ece': 0.1}
  with pytest.raises(ValueError, match="'test_accuracy'"):
    results_lib.add_sections({'test_accuracy': 0.9}, {'test_accuracy': 1.0})


def _tiny_config(data_dir, **changes):
  """A 16-unit MLP, 1 epoch on 512 MNIST examples with a validation split."""
  c = config_lib.default()
  c.data_dir, c.model.hidden, c.train_examples = data_dir, (16,), 512
  c.batch_size, c.num_epochs, c.validation_fraction = 64, 1, 0.05
  c.summary_writer = 'none'
  return config_lib.override(c, changes)


def _read(directory):
  with open(os.path.join(directory, 'results.json')) as f:
    results = json.load(f)
  return results, dict(np.load(os.path.join(directory, 'logits.npz')))


@pytest.fixture
def margin_evaluator():
  """An evaluator of the test's own: each member's mean top-1 margin per split."""

  def evaluate(context):
    return evaluators.Sections(members=tuple(
        {'mean_margin': {split: float(np.mean(np.diff(np.sort(logits[m], -1)[:, -2:], axis=-1)))
                         for split, logits in context.logits.items()}}
        for m in range(context.members.count)))

  evaluators.register('mean_margin')(evaluate)
  yield 'mean_margin'
  evaluators.unregister('mean_margin')


@pytest.fixture(scope='module')
def teacher_dir(mnist_data_dir, tmp_path_factory):
  from kdjax import train
  workdir = str(tmp_path_factory.mktemp('teacher'))
  train.train_and_evaluate(_tiny_config(mnist_data_dir, **{'model.hidden': (64,)}), workdir)
  return workdir


def test_a_registered_evaluator_writes_its_own_section(teacher_dir, mnist_data_dir, tmp_path,
                                                       margin_evaluator):
  from kdjax import train
  plain, _ = _read(teacher_dir)  # the default: results.json as before evaluators
  assert not {'agreement', 'calibration', 'exits', 'exit_evaluation'} & set(plain)
  c = _tiny_config(mnist_data_dir, evaluators=('auto', margin_evaluator))
  returned = train.train_and_evaluate(c, str(tmp_path / 'run'))
  results, logits = _read(tmp_path / 'run')
  assert returned['mean_margin'] == results['mean_margin']
  assert set(results['mean_margin']) == {'validation', 'test'}
  for split, value in results['mean_margin'].items():
    top2 = np.sort(logits[split], -1)[:, -2:]
    assert value == pytest.approx(np.mean(top2[:, 1] - top2[:, 0]), rel=1e-6)
  assert not {'agreement', 'calibration'} & set(results)


def test_a_distilled_run_reports_its_agreement_with_the_teacher(teacher_dir, mnist_data_dir,
                                                                 tmp_path):
  from kdjax import train
  c = _tiny_config(mnist_data_dir, **{'teacher.workdir': teacher_dir,
                                      'evaluators': ('auto', 'calibration')})
  train.train_and_evaluate(c, str(tmp_path / 'student'))
  results, logits = _read(tmp_path / 'student')
  _, teacher_logits = _read(teacher_dir)
  assert results['teacher']['cached'] is True  # the teacher's variables still evaluate
  assert set(results['agreement']) == {'validation', 'test'}
  # The teacher's logits are those of its own final evaluation (the same split seed).
  for split in ('validation', 'test'):
    expected = agreement.agreement(teacher_logits[split], logits[split])
    for key, value in results['agreement'][split].items():
      assert value == pytest.approx(expected[key], abs=1e-5)
    assert results['agreement'][split]['kl_teacher_student'] > 0
  dataset = data.load('mnist', data_dir=mnist_data_dir, validation_fraction=0.05)
  for split, y in (('validation', dataset.validation.labels), ('test', dataset.test.labels)):
    section = results['calibration'][split]
    assert section['ece'] == pytest.approx(
        calibration.expected_calibration_error(logits[split], y), abs=1e-6)
    assert section['nll'] == pytest.approx(calibration.mean_nll(logits[split], y), rel=1e-5)


def test_every_member_of_a_distilled_sweep_gets_its_agreement(teacher_dir, mnist_data_dir,
                                                               tmp_path):
  from kdjax import train
  c = _tiny_config(mnist_data_dir, **{'teacher.workdir': teacher_dir, 'sweep.seed': (0, 1),
                                      'sweep.mode': 'vmap'})
  sweep = train.train_and_evaluate(c, str(tmp_path / 'sweep'))
  _, teacher_logits = _read(teacher_dir)
  found = []
  for row in sweep['members']:
    results, logits = _read(row['workdir'])
    expected = agreement.agreement(teacher_logits['test'], logits['test'])
    assert results['agreement']['test']['top1_agreement'] == pytest.approx(
        expected['top1_agreement'])
    found.append(results['agreement']['test']['kl_teacher_student'])
  assert found[0] != found[1]  # each member's own students, not member 0's twice
