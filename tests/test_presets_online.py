"""experiments.online --quick end to end on mock data, one test per preset.

Each preset's recipe (Adam, translations, the validation split, vmapped cohorts with one
data order per cohort) shrunk in size only: two members, one cohort of each kind, three
steps an epoch, the codistilled copies refreshed every 2 steps so that a refresh falls
inside the run. The report's rows are held against each member's results.json.
"""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from experiments import common, online

pytestmark = pytest.mark.slow  # end to end: `make test-all`


def _read(path):
  with open(path) as f:
    return json.load(f)


@pytest.mark.parametrize('name', sorted(online.PRESETS))
def test_online_preset_quick_runs_end_to_end(tmp_path, name):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  setup, preset = common.make_setup(online.PRESETS[name], quick=True,
                                    data_dir=str(tmp_path / 'tfds'))
  assert setup.seeds == 2 and setup.dataset == online.PRESETS[name]['dataset']
  workdir = str(tmp_path / 'online')
  os.makedirs(workdir)
  with tfds.testing.mock_data(num_examples=64):
    text = online.body(common.Stages(workdir, setup), dict(preset, name=name))
  report = _read(os.path.join(workdir, 'report.json'))
  assert [r['online'] for r in report['rows']] == [None, 'dml', 'codistill']
  for row, kind in zip(report['rows'], online.KINDS):
    assert row['seeds'] == [0, 1] and row['data_seeds'] == [0, 0]  # one order per cohort
    assert row['model'] == 'mlp' and row['teacher_model'] is None
    for workdir_m, seed in zip(row['workdirs'], row['seeds']):
      results = _read(os.path.join(workdir_m, 'results.json'))
      config = results['config']
      assert results['seed'] == seed and os.path.exists(os.path.join(workdir_m, 'logits.npz'))
      assert config['online']['kind'] == (None if kind == 'independent' else kind)
      assert (results['online'] or {}).get('kind') == config['online']['kind']
      assert config['model']['hidden'] == [16, 16]  # shrunk from the preset's widths
      assert config['augment']['max_shift'] == 2 and config['optimizer']['name'] == 'adam'
      assert config['online']['refresh_steps'] == (100 if kind == 'independent' else 2)
      assert os.path.isdir(os.path.join(workdir_m, 'checkpoints'))
  for kind in online.KINDS:
    (cohort,) = report['kinds'][kind]['ensembles']
    assert 0 <= cohort['test_accuracy'] <= 1 and 0 <= cohort['validation_accuracy'] <= 1
  assert {s['selected_on'] for s in report['selections']} == {'validation'}
  assert 'DML cohort' in text and 'codistilled cohort' in text


def test_ensemble_by_hand(tmp_path):
  """The ensemble averages the members' softmax outputs, not their logits: on example 0,
  the mean of the probabilities of class 0 is (0.0000454 + 0.881 + 0.881) / 3 = 0.587,
  class 0, while the mean logits (1.33, 3.33) would say class 1."""
  rows = []
  for m, test in enumerate(([[0.0, 10.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 1.0]],
                            [[2.0, 0.0], [1.0, 0.0]])):
    directory = tmp_path / f'm{m}'
    directory.mkdir()
    np.savez(directory / 'logits.npz', test=np.array(test))
    rows.append({'workdir': str(directory)})
  assert online.ensemble(rows, {'test': np.array([0, 1])}) == {'test_accuracy': 1.0}
  assert online.ensemble(rows, {'test': np.array([1, 1])}) == {'test_accuracy': 0.5}


def test_consistent_mixup_run_has_its_teacher_in_the_step_and_agreement(tmp_path):
  """Function matching end to end on mock MNIST: the inputs are not translated, so 'auto'
  would cache the teacher's logits of the plain images; with distill.consistent the teacher
  runs in the step on the student's mixed images, and results.json has the
  teacher–student agreement on validation and test."""
  from kdjax import config as config_lib
  from kdjax import train

  def config(**changes):
    return config_lib.override(config_lib.default(), dict({
        'model.hidden': (16,), 'num_epochs': 2, 'batch_size': 16, 'eval_batch_size': 32,
        'validation_fraction': 0.25, 'summary_writer': 'none',
        'data_dir': str(tmp_path / 'tfds')}, **changes))

  teacher_dir, student_dir = str(tmp_path / 'teacher'), str(tmp_path / 'student')
  with tfds.testing.mock_data(num_examples=64):
    train.train_and_evaluate(config(), teacher_dir)
    student = train.train_and_evaluate(config(**{
        'teacher.workdir': teacher_dir, 'distill.consistent': True, 'augment.mixup': 0.2,
        'distill.alpha': 1.0, 'distill.temperature': 1.0}), student_dir)
  assert student['teacher']['cached'] is False
  assert set(student['agreement']) == {'validation', 'test'}
  for agreement in student['agreement'].values():
    assert 0 <= agreement['top1_agreement'] <= 1 and agreement['kl_teacher_student'] >= 0
  assert student['config']['augment'] == dict(student['config']['augment'], mixup=0.2,
                                               max_shift=0)
