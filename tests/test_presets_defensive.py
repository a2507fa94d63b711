"""experiments.defensive_distillation --quick end to end on mock MNIST and CIFAR-10.

The preset's recipe (seed 001's SGD, the defensive objective at each T, no
augmentation, teachers then distilled students) with its first two T, then
every attack on the first 16 test images of each network, the eps curves,
transferability and the report; each row's label is held against its run.
The attacks themselves are checked on a real MNIST network in
tests/test_attacks.py.
"""

import json
import os

import pytest
import tensorflow_datasets as tfds
from absl import flags

from experiments import common, defensive_distillation
from tests.test_presets import check_report_rows

pytestmark = pytest.mark.slow  # end to end: `make test-all`


@pytest.mark.parametrize('name, last', [('mnist', 100.0), ('cifar10', 2.0)])
def test_defensive_distillation_quick_runs_end_to_end(tmp_path, name, last, patches_conv):
  """Quick mode keeps a preset's first two temperatures: {1, 100} and {1, 2}.

  With kdjax's CPU convolution: JSMA's per-class gradients run many times slower
  through XLA's (the tests' default, tests/__init__.py)."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  setup, preset = common.make_setup(defensive_distillation.PRESETS[name], quick=True,
                                    data_dir=str(tmp_path / 'tfds'))
  assert preset['temperatures'] == (1.0, last)
  workdir = str(tmp_path / 'dd')
  os.makedirs(workdir)
  with tfds.testing.mock_data(num_examples=64):
    text = defensive_distillation.body(common.Stages(workdir, setup),
                                       dict(preset, name=name))
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  assert check_report_rows(report) == 3  # the undefended teacher, distilled at both T
  with open(os.path.join(workdir, f'distilled_T{last:g}', 'results.json')) as f:
    student = json.load(f)
  config = student['config']
  assert config['train_temperature'] == last and config['distill']['objective'] == 'defensive'
  assert student['alpha'] == 1.0 and student['temperature'] == last
  assert config['optimizer']['nesterov'] and config['augment']['max_shift'] == 0
  attacks = report['attacks']
  assert set(attacks) == {'undefended', 'distilled T=1', f'distilled T={last:g}'}
  assert set(attacks['undefended']) == {'FGSM (softmax)', 'PGD (softmax)', 'PGD (log-softmax CE)',
                                        'PGD (logit margin)', 'C&W L2', 'JSMA (softmax)',
                                        'JSMA (logits)'}
  for per_attack in attacks.values():
    for attack, result in per_attack.items():
      if attack.startswith(('FGSM', 'PGD')) and result['mean_linf'] is not None:
        assert result['mean_linf'] <= preset['eps'] + 1e-6  # the eps-bounded ones
  assert report['logit_norms'][f'distilled T={last:g}'] > 0
  assert len(report['transfer']) == 2 and 'the defence stops' in report['verdict']
  assert 'Transferability' in text
  for figure in ('success_vs_eps.png', 'logit_norms.png'):
    assert os.path.exists(os.path.join(workdir, figure))
