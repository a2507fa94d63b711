"""experiments.method_zoo's tables: cells, model names, published numbers and the cost
per method."""

import os

import numpy as np

from experiments import common
from experiments.method_zoo_reference import REFERENCE
from kdjax import report


def stage_name(student: str, teacher: str, method: str) -> str:
  """A method's stage: `<student>_from_<teacher>_<method>`, '+' as '_'."""
  return f'{student}_from_{teacher}_{method.replace("+", "_")}'


def cell(runs: list[dict] | None) -> str:
  """'best-validation-epoch accuracy (last epoch)' over seeds; n/a for a pair the method
  cannot compare."""
  if runs is None:
    return 'n/a'
  return (f'{common.accuracy_text(runs, "test_accuracy_at_best_validation")} '
          f'({common.accuracy_text(runs)})')


def _per_epoch_seconds(stage: dict | None) -> float:
  if stage is None:
    return float('nan')
  runs = common.members(stage)
  return stage.get('train_seconds', 0.0) / max(1, len(runs) * stage.get('epochs', 1))


def members_of(stage: dict | None) -> list[dict] | None:
  return None if stage is None else common.members(stage)


def model_text(model: str, preset: dict) -> str:
  """A model's name in the table, with its stem where it is not the CIFAR one."""
  stem = preset.get('model_options', {}).get(model, {}).get('stem', 'cifar')
  return model if stem == 'cifar' else f'{model} ({stem} stem)'


def published(pair: tuple, column: str) -> str:
  value = REFERENCE.get(pair, {}).get(column)
  return '' if value is None else f'{value:.2f}'


def cost_rows(workdir: str, pairs, methods, taught: dict) -> list[list[str]]:
  """Per method: wall minutes over its stages, seconds per epoch per run, and that cost
  relative to KD's (the wall minutes of every candidate stage of a method whose setting
  was chosen on validation, `<stage>_rw<weight>`)."""
  kd_cost = np.mean([_per_epoch_seconds(taught[(t, s, 'kd')]) for t, s in pairs])
  seconds_path = os.path.join(workdir, 'stage_seconds.json')
  seconds = report.read_json(seconds_path) if os.path.exists(seconds_path) else {}
  costs = []
  for method in methods:
    ran = [(t, s) for t, s in pairs if taught[(t, s, method)] is not None]
    if not ran:
      costs.append([method, 'n/a', 'n/a', 'n/a'])
      continue
    per_epoch = np.mean([_per_epoch_seconds(taught[(t, s, method)]) for t, s in ran])
    names = [stage_name(s, t, method) for t, s in ran]
    wall = sum(value for key, value in seconds.items()
               if any(key == name or key.startswith(f'{name}_rw') for name in names))
    costs.append([method, f'{wall / 60:.1f}', f'{per_epoch:.2f}', f'{per_epoch / kd_cost:.2f}'])
  return costs
