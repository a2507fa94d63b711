"""Report rows read back from results.json, the selections made on validation, and their text."""

import json
import os
from typing import Sequence

import numpy as np

from kdjax import analysis, report
from kdjax.errors import KDError

members = report.members
group = report.group

# The settings a report row states; all runs of a row must share them.
ROW_SETTINGS = ('dataset', 'model', 'model_options', 'temperature', 'alpha', 'kind',
                'method', 'omit_classes', 'teacher_model', 'teacher_dataset', 'validation')


def run_settings(workdir: str) -> dict:
  """What the run in `workdir` trained with, read back from its results.json.

  A report states these rather than what its launcher meant to run, so a
  launcher that sets a field wrongly cannot label a row with the intended
  value. Fields that older results.json files lack are read from the config
  saved beside them.
  """
  path = os.path.join(workdir, 'results.json')
  if os.path.exists(path):
    results = report.read_json(path)
  else:  # a sweep member that diverged in turn leaves its config only
    config = report.read_json(os.path.join(workdir, 'config.json'))
    results = {'config': config, 'dataset': config['dataset'], 'model': config['model']['name'],
               'test_accuracy': None, 'diverged': True}
    if config['teacher']['workdir']:
      teacher_results = report.read_json(os.path.join(config['teacher']['workdir'],
                                                      'results.json'))
      results.update(temperature=config['distill']['temperature'],
                     alpha=config['distill']['alpha'], kind=config['distill']['kind'],
                     teacher={'model': teacher_results['model'],
                              'workdir': config['teacher']['workdir'],
                              'dataset': teacher_results['dataset']})
  config = results.get('config', {})
  teacher = results.get('teacher') or {}
  validation = results.get('validation')
  if validation is None and config.get('validation_fraction'):
    validation = {'fraction': config['validation_fraction'],
                  'seed': config.get('validation_seed'), 'examples': None}
  distilled = bool(teacher)
  return {
      'workdir': workdir, 'dataset': results['dataset'], 'model': results['model'],
      'model_options': {k: v for k, v in config.get('model', {}).items()
                        if k not in ('name', 'dtype')},
      'temperature': results.get('temperature') if distilled else None,
      'alpha': results.get('alpha') if distilled else None,
      'kind': results.get('kind') if distilled else None,
      'method': (results.get('method') or {}).get('name'),
      'seed': results.get('seed', config.get('seed')),
      'data_seed': results.get('data_seed', config.get('data_seed')),
      'omit_classes': list(results.get('omit_classes', config.get('omit_classes', ()))),
      'teacher_model': teacher.get('model'), 'teacher_workdir': teacher.get('workdir'),
      'teacher_dataset': teacher.get('dataset'), 'validation': validation,
      'test_accuracy': results['test_accuracy'],
      'test_errors': results.get('test_errors'),
      'validation_accuracy': results.get('validation_accuracy'),
      'diverged': bool(results.get('diverged')) or results['test_accuracy'] is None,
  }


def row(label: str, runs: list[dict], **fields) -> dict:
  """A report.json row: `label` with the settings its runs trained with.

  Args:
    label: what the report says the row is (the launcher's intent, e.g.
      'resnet18 distilled, T=5, alpha=0.1'); tests hold it against the
      settings read back here.
    runs: the runs (member rows with a 'workdir') averaged in the row, one
      per seed.
    **fields: more fields for the row (e.g. `stage`, `reference`, `bias`).

  Returns:
    The row: label, every ROW_SETTINGS field, seeds, data_seeds, workdirs,
    and mean (and std) test and validation accuracy over the runs.

  Raises:
    KDError: the runs differ in a setting other than their seeds; a row
      compares one thing.
  """
  read = [run_settings(r['workdir']) for r in runs]
  out = {'label': label}
  for key in ROW_SETTINGS:
    values = {json.dumps(s[key], sort_keys=True) for s in read}
    if len(values) > 1:
      raise KDError(f'report row {label!r} mixes runs with different {key}: '
                    f'{", ".join(sorted(values))}')
    out[key] = read[0][key]
  finished = [s for s in read if not s['diverged']]
  mean, std = (analysis.mean_std([s['test_accuracy'] for s in finished]) if finished
               else (None, None))
  validation = [s['validation_accuracy'] for s in finished]
  out.update(seeds=[s['seed'] for s in read], data_seeds=[s['data_seed'] for s in read],
             workdirs=[s['workdir'] for s in read], diverged=len(read) - len(finished),
             test_accuracy=mean, test_accuracy_std=std,
             validation_accuracy=(None if None in validation or not validation
                                  else float(np.mean(validation))))
  out.update(fields)
  return out


def select(what: str, groups: dict[tuple, list[dict]], keys: Sequence[str]):
  """The group of runs with the best mean validation accuracy.

  Args:
    what: what is being chosen, e.g. 'resnet18: T and alpha of the distilled row'.
    groups: runs (member rows) by their settings, e.g. `group(rows, keys)`.
    keys: the names of the settings in each group's key.

  Returns:
    (chosen key, selection entry for report.json, the test-set oracle's key).
    The oracle (best on test) is only for a report line labelled as not a
    valid selection.

  Raises:
    KDError: a run has no validation accuracy (trained without a validation split).
  """
  # A setting with a diverged run is not a candidate: its mean is not defined.
  candidates = [k for k, rows in groups.items() if not any(is_diverged(r) for r in rows)]
  if not candidates:
    raise KDError(f'{what}: every candidate has a diverged run; nothing to choose')
  if any(r.get('validation_accuracy') is None for k in candidates for r in groups[k]):
    raise KDError(f'{what}: choosing needs a validation split; some runs trained without one')
  chosen = max(candidates, key=lambda k: mean_accuracy(groups[k], 'validation_accuracy'))
  oracle = max(candidates, key=lambda k: mean_accuracy(groups[k]))
  entry = {'what': what, 'chosen': dict(zip(keys, chosen)), 'selected_on': 'validation',
           'validation_accuracy': mean_accuracy(groups[chosen], 'validation_accuracy'),
           'test_accuracy': mean_accuracy(groups[chosen]),
           'candidates': len(candidates), 'diverged_candidates': len(groups) - len(candidates),
           'seeds': len(groups[chosen])}
  return chosen, entry, oracle


def is_diverged(run: dict) -> bool:
  """Whether a run (a member row) diverged: it has no test accuracy."""
  return bool(run.get('diverged')) or run.get('test_accuracy') is None


def oracle_text(groups: dict[tuple, list[dict]], oracle: tuple, name: str) -> str:
  """The report.md line for the best group on test, labelled so."""
  return (f'test-set oracle (not a valid selection): {name}, '
          f'{accuracy_text(groups[oracle])} test')


def setting_text(keys: Sequence[str], values: Sequence) -> str:
  """'T=5, alpha=0.1' for keys ('temperature', 'alpha')."""
  short = {'temperature': 'T', 'alpha': 'alpha', 'kind': 'kind', 'seed': 'seed'}
  return ', '.join(f'{short.get(k, k)}={v:g}' if isinstance(v, float) else f'{short.get(k, k)}={v}'
                   for k, v in zip(keys, values))


def validation_text(results: dict) -> str:
  """'validation: seeded 10 % of the training split, N images' for a run's results."""
  first = members(results)[0]
  settings = run_settings(first['workdir'])
  split = settings['validation']
  if not split:
    return 'validation: none (no validation split; nothing is chosen)'
  examples = split.get('examples')
  if examples is None:  # older results.json: count the saved validation logits
    with np.load(os.path.join(first['workdir'], 'logits.npz')) as logits:
      examples = len(logits['validation'])
  streamed = report.read_json(os.path.join(first['workdir'], 'results.json')).get(
      'input_pipeline') == 'stream'
  where = (f'the last {100 * split["fraction"]:.3g} % of the training split in stored order'
           if streamed else f'seeded {100 * split["fraction"]:g} % of the training split '
           f'(validation_seed {split["seed"]})')
  return (f'validation: {where}, {examples:,} images, the same for every run; '
          'every choice below is made on it, the test set only gives the number reported')


def accuracy_text(rows: list[dict], field: str = 'test_accuracy') -> str:
  """'91.23%' for one run, '91.23 ± 0.40%' over seeds, 'diverged (1 of 3 runs)'."""
  diverged = sum(is_diverged(r) for r in rows)
  if diverged:
    return f'diverged ({diverged} of {len(rows)} runs)'
  mean, std = analysis.mean_std([100 * r[field] for r in rows])
  return f'{mean:.2f}%' if len(rows) == 1 else f'{mean:.2f} ± {std:.2f}%'


def mean_accuracy(rows: list[dict], field: str = 'test_accuracy') -> float:
  """The mean of `field` over `rows`; NaN when a run diverged (it has none)."""
  if any(is_diverged(r) or r.get(field) is None for r in rows):
    return float('nan')
  return float(np.mean([r[field] for r in rows]))


def chosen_text(chosen) -> str:
  """A selection's `chosen` settings as text ('T=5, alpha=0.1') or a label as it is."""
  if isinstance(chosen, dict):
    return setting_text(list(chosen), list(chosen.values()))
  return str(chosen)
