"""experiments.defensive_distillation --quick end to end on mock MNIST.

The preset's recipe (seed 001's SGD, the defensive objective at each T, no
augmentation, teachers then distilled students) with its T, {1, 100}, then
every attack on the first 16 test images of each network, the eps curves,
transferability and the report; each row's label is held against its run.
The attacks themselves are checked on a real MNIST network in
tests/test_attacks.py.
"""

import json
import os

import tensorflow_datasets as tfds
from absl import flags

from experiments import common, defensive_distillation
from tests.test_presets import check_report_rows


def test_defensive_distillation_quick_runs_end_to_end(tmp_path):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  setup, preset = common.make_setup(defensive_distillation.PRESETS['mnist'], quick=True,
                                    data_dir=str(tmp_path / 'tfds'))
  assert preset['temperatures'] == (1.0, 100.0)
  workdir = str(tmp_path / 'dd')
  os.makedirs(workdir)
  with tfds.testing.mock_data(num_examples=64):
    text = defensive_distillation.body(common.Stages(workdir, setup),
                                       dict(preset, name='mnist'))
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  assert check_report_rows(report) == 3  # the undefended teacher, distilled at T = 1 and 100
  with open(os.path.join(workdir, 'distilled_T100', 'results.json')) as f:
    student = json.load(f)
  config = student['config']
  assert config['train_temperature'] == 100.0 and config['distill']['objective'] == 'defensive'
  assert student['alpha'] == 1.0 and student['temperature'] == 100.0
  assert config['optimizer']['nesterov'] and config['augment']['max_shift'] == 0
  attacks = report['attacks']
  assert set(attacks) == {'undefended', 'distilled T=1', 'distilled T=100'}
  assert set(attacks['undefended']) == {'FGSM (softmax)', 'PGD (softmax)', 'PGD (log-softmax CE)',
                                        'PGD (logit margin)', 'C&W L2', 'JSMA (softmax)',
                                        'JSMA (logits)'}
  for per_attack in attacks.values():
    for result in per_attack.values():
      if result['mean_linf'] is not None and result['mean_l0'] > 100:  # the eps-bounded ones
        assert result['mean_linf'] <= preset['eps'] + 1e-6
  assert report['logit_norms']['distilled T=100'] > 0
  assert len(report['transfer']) == 2 and 'the defence stops' in report['verdict']
  assert 'Transferability' in text
  for figure in ('success_vs_eps.png', 'logit_norms.png'):
    assert os.path.exists(os.path.join(workdir, figure))
