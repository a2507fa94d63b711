"""experiments.imagenet_kd end to end under mock ImageNet: import, evaluate, distil, report.

The preset's recipe (SGD with its step boundaries scaled and crossed, the
evaluation cadence, the T sweep run in turn, the held-out validation slice,
bf16 compute, streamed input with the teacher in the step) at smoke-test
size. The teacher is torchvision-layout random weights written by
`--teacher_state_dict=random`, so the run goes through the import; its
architecture is cut to ResNet-18 and both networks are narrowed as in
tests/test_presets.py (the import of full-size ResNet-18 and ResNet-50 is
checked against torchvision in tests/test_weights.py).
"""

import json
import os

import pytest
import tensorflow_datasets as tfds
from absl import flags

from experiments import common, imagenet_kd
from kdjax import models
from tests.test_presets import _narrow, check_report_rows, check_selections

pytestmark = pytest.mark.slow  # end to end: `make test-all`


def test_imagenet_kd_quick_runs_end_to_end(tmp_path, monkeypatch):
  factory = models._REGISTRY['resnet18']  # pylint: disable=protected-access
  monkeypatch.setitem(models._REGISTRY, 'resnet18',  # pylint: disable=protected-access
                      lambda **kw: _narrow(factory, **kw))
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  flags.FLAGS.teacher_state_dict = 'random'
  try:
    setup, preset = common.make_setup(imagenet_kd.PRESETS['standard'], quick=True)
    preset = dict(preset, teacher='resnet18', name='standard')
    workdir = str(tmp_path / 'ik')
    os.makedirs(workdir)
    with tfds.testing.mock_data(num_examples=48):
      text = imagenet_kd.body(common.Stages(workdir, setup), preset)
  finally:
    flags.FLAGS.teacher_state_dict = ''
  with open(os.path.join(workdir, 'report.json')) as f:
    report = json.load(f)
  assert check_report_rows(report) == 4  # teacher, alone, T=0.5, T=1
  check_selections(report)
  assert report['selections'][0]['chosen'] in ({'temperature': 0.5}, {'temperature': 1.0})
  teacher = report['teacher']
  assert teacher['imported']['from'] == 'torchvision' and teacher['test_top5_accuracy'] is not None
  with open(os.path.join(workdir, 'student_kd', 'results.json')) as f:
    kd = json.load(f)
  assert kd['sweep_mode'] == 'loop' and [m['temperature'] for m in kd['members']] == [0.5, 1.0]
  with open(kd['members'][0]['workdir'] + '/results.json') as f:
    member = json.load(f)
  config = member['config']
  assert config['model']['dtype'] == 'bfloat16' and config['optimizer']['name'] == 'sgd'
  assert config['schedule']['boundaries'] == [1, 2] and member['teacher']['cached'] is False
  assert member['input_pipeline'] == 'stream' and 'test_top5_accuracy' in member
  assert member['teacher']['imported']['arch'] == 'resnet18'
  assert '| teacher resnet18 (random weights: a smoke test) |' in text
  assert 'top-5 (test)' in text and os.path.exists(os.path.join(workdir, 'curves.png'))
