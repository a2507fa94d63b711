"""Every stage config of every launcher preset, and every objective's loss, as recorded.

`tests/reference/stage_configs.json` (`python -m tests.stage_configs`) holds the
resolved config of each stage of each preset; `tests/reference/losses.json`
(`python -m tests.reference_losses`) the metrics of one train step of every
objective and method on a fixed batch. A change to how losses are composed must
leave both as they were: a metric recorded there keeps its value (new metrics may
be added beside it), and a stage keeps its config field for field (a field added to
the schema since must hold its default).
"""

import importlib
import json

import pytest

from kdjax import config as config_lib
from tests import reference_losses, stage_configs

with open(stage_configs.REFERENCE) as f:
  STAGES = json.load(f)
with open(reference_losses.REFERENCE) as f:
  LOSSES = json.load(f)
# 307 stages, most of a minute of tracing: in the slow tier.
SLOW_PRESETS = ('method_zoo/repdistiller',)


def test_every_preset_and_every_case_is_recorded():
  expected = {f'{launcher}/{name}' for launcher in stage_configs.LAUNCHERS
              for name in importlib.import_module(f'experiments.{launcher}').PRESETS}
  assert set(STAGES) == expected | {'hinton_mnist/full', 'hinton_mnist/quick'}
  assert set(LOSSES) == set(reference_losses.cases())
  # The stand-in results let each launcher reach its report: every stage is recorded.
  assert sum(len(v['stages']) for v in STAGES.values()) == 514
  assert len(STAGES['method_zoo/repdistiller']['stages']) == 307


DEFAULT = config_lib.to_json_dict(config_lib.default())


def _recorded_fields(got: dict, want: dict, default: dict, path: str = '') -> dict:
  """`got` limited to the fields `want` records; a field added to the schema since the
  recording must hold its default value (a shorthand run leaves it unset)."""
  out = {}
  for key, value in got.items():
    if key not in want:
      assert key in default and value == default[key], f'new field {path}{key}={value!r}'
    elif isinstance(value, dict) and isinstance(want[key], dict):
      out[key] = _recorded_fields(value, want[key], default.get(key) or {}, f'{path}{key}.')
    else:
      out[key] = value
  return out


def _compare_stages(keys):
  captured = stage_configs.capture(keys)
  for key in keys:
    if key.startswith('hinton_mnist/'):
      continue
    assert captured[key]['stopped'] == STAGES[key]['stopped'], key
    assert [name for name, _ in captured[key]['stages']] == [
        name for name, _ in STAGES[key]['stages']], key
    for (name, got), (_, want) in zip(captured[key]['stages'], STAGES[key]['stages']):
      assert _recorded_fields(got, want, DEFAULT) == want, f'{key} stage {name}'
  for key in ('hinton_mnist/full', 'hinton_mnist/quick'):
    assert [n for n, _ in captured[key]['stages']] == [n for n, _ in STAGES[key]['stages']]
    for (name, got), (_, want) in zip(captured[key]['stages'], STAGES[key]['stages']):
      assert _recorded_fields(got, want, DEFAULT) == want, f'{key} stage {name}'


def test_every_stage_config_is_unchanged():
  _compare_stages([k for k in STAGES if k not in SLOW_PRESETS])


@pytest.mark.slow
def test_method_zoo_repdistiller_stage_configs_are_unchanged():
  _compare_stages(list(SLOW_PRESETS))


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(reference_losses.cases()))
def test_every_loss_value_is_unchanged(name):
  got = reference_losses.value(reference_losses.cases()[name])
  for metric, want in LOSSES[name].items():
    assert got[metric] == pytest.approx(want, rel=2e-5, abs=1e-7), (name, metric)
