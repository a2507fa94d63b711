"""Config schema: sweeps expand to members, and each member is a plain run."""

import pytest

from kdjax import checks
from kdjax import config as config_lib
from kdjax.errors import ConfigError


def _distill_config(**sweep):
  c = config_lib.default()
  c.teacher.workdir = '/some/teacher'
  for key, value in sweep.items():
    c.sweep[key] = value
  return c


def test_sweep_members_cover_the_product_with_labels():
  c = _distill_config(temperature=(1.0, 5.0), kind=('kl', 'cosine'), learning_rate=(0.1, 0.01))
  members = config_lib.sweep_members(c)
  assert len(members) == 8
  labels = [m['label'] for m in members]
  assert labels[0] == 'T1_lr0.1_kl' and labels[-1] == 'T5_lr0.01_cosine'
  assert len(set(labels)) == 8
  plain = config_lib.member_config(c, members[-1])
  assert (plain.distill.temperature, plain.distill.kind, plain.optimizer.learning_rate) == (
      5.0, 'cosine', 0.01)
  assert config_lib.sweep_members(plain) == []


def test_no_sweep_means_no_members():
  assert config_lib.sweep_members(config_lib.default()) == []


@pytest.mark.parametrize('axis, values, fragment', [
    ('kind', ('kl', 'huber'), 'sweep.kind'),
    ('learning_rate', (0.1, -1.0), 'sweep.learning_rate'),
    ('temperature', (2.0, 2.0), 'must not repeat'),
    ('alpha', (0.5, 1.5), 'sweep.alpha'),
])
def test_bad_sweeps_are_refused_by_name(axis, values, fragment):
  c = _distill_config(**{axis: values})
  with pytest.raises(ConfigError, match=fragment.replace('.', r'\.')):
    checks.validate(c)


def test_distillation_sweeps_need_a_teacher():
  c = config_lib.default()
  c.sweep.kind = ('kl', 'cosine')
  with pytest.raises(ConfigError, match='needs teacher.workdir'):
    checks.validate(c)


def test_saved_config_round_trips_with_the_model_options_it_had():
  import ml_collections
  c = config_lib.default()
  c.model = ml_collections.ConfigDict({'name': 'resnet8', 'dtype': 'float32'})
  back = config_lib.from_json_dict(config_lib.to_json_dict(c))
  assert back.model.to_dict() == {'name': 'resnet8', 'dtype': 'float32'}
  assert config_lib.to_json_dict(back) == config_lib.to_json_dict(c)


def test_a_seed_sweep_gives_each_member_its_own_data_order_unless_told_not_to():
  c = config_lib.default()
  c.seed, c.data_seed, c.sweep.seed = 10, 100, (10, 11, 13)
  assert [m['data_seed'] for m in config_lib.sweep_members(c)] == [100, 101, 103]
  assert [config_lib.member_config(c, m).data_seed for m in config_lib.sweep_members(c)] == [
      100, 101, 103]
  c.sweep.couple_data_seed = False
  assert [m['data_seed'] for m in config_lib.sweep_members(c)] == [100, 100, 100]


def test_flips_of_grayscale_digits_need_allow_flip():
  c = config_lib.default()
  c.augment.flip = True
  with pytest.raises(ConfigError, match=r'config\.augment\.flip=True: mnist'):
    checks.validate(c)
  c.augment.allow_flip = True
  checks.validate(c)
