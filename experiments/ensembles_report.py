"""experiments.ensembles' report: the ensemble table and Hinton §6's 3 % table."""

import os

import numpy as np

from experiments import common
from kdjax import report


def _hidden(runs: list[dict]) -> str:
  """'256-256': the hidden widths the runs trained with, read back from results.json."""
  results = report.read_json(os.path.join(runs[0]['workdir'], 'results.json'))
  return '-'.join(str(h) for h in results['config']['model']['hidden'])


def _stage(run: dict, root: str) -> str:
  """The stage (sub-workdir of the launcher's workdir) a run belongs to."""
  return f'`{os.path.relpath(run["workdir"], root).split(os.sep)[0]}`'


def _error(accuracy: float) -> str:
  return f'{100 * (1 - accuracy):.2f}%'


def share_of_gain(alone: float, ensemble: float, student: float) -> float | None:
  """The share of the ensemble's gain over the network alone that a student keeps, in %:
  100 (student − alone) / (ensemble − alone); None when the ensemble gains nothing."""
  gain = ensemble - alone
  return None if gain <= 0 else 100 * (student - alone) / gain


def _ensemble_table(preset, runs, section, root) -> tuple[list, list, dict]:
  """(table rows, report rows, numbers) of the ensemble and its students."""
  hidden = _hidden(runs['teachers'])
  table, rows = [], []
  for run in runs['teachers']:
    table.append([f'teacher seed {run["seed"]}', _error(run['test_accuracy']),
                  common.accuracy_text([run]), '', f'`{os.path.relpath(run["workdir"], root)}`'])
    rows.append(common.row(f'teacher seed {run["seed"]}, mlp {hidden}', [run], stage='teachers'))
  k = len(runs['teachers'])
  teachers_mean = common.mean_accuracy(runs['teachers'])
  table.append([f'the {k} teachers, mean ± std', _error(teachers_mean),
                common.accuracy_text(runs['teachers']), '', '`teachers`'])
  ensemble = section['test_accuracy']
  table.append([f'ensemble of the {k} (mean of their probabilities)', _error(ensemble),
                f'{100 * ensemble:.2f}%', f'{preset["hinton"]["ensemble"]}% (10 models)',
                '`teachers`'])
  alone = common.mean_accuracy(runs['alone'])
  numbers = {'ensemble_test_accuracy': ensemble, 'teachers_mean': teachers_mean,
             'members_test_accuracy': [m['test_accuracy'] for m in section['members']]}
  for key, label, reference in (
      ('alone', f'mlp {hidden} alone', 'baseline'),
      ('one', f'mlp {hidden} from one teacher (seed 0), T={runs["one"][0]["temperature"]:g}, '
       f'alpha={runs["one"][0]["alpha"]:g}', None),
      ('ensemble', f'mlp {hidden} from the ensemble, T={runs["ensemble"][0]["temperature"]:g}, '
       f'alpha={runs["ensemble"][0]["alpha"]:g}', 'distilled')):
    accuracy = common.mean_accuracy(runs[key])
    share = share_of_gain(alone, ensemble, accuracy) if key != 'alone' else None
    numbers[key] = {'test_accuracy': accuracy, 'share_of_gain': share}
    table.append([label + ('' if share is None else f' (keeps {share:.0f}% of the gain)'),
                  _error(accuracy), common.accuracy_text(runs[key]),
                  f'{preset["hinton"][reference]}%' if reference else '',
                  _stage(runs[key][0], root)])
    rows.append(common.row(label, runs[key], stage=key))
  return table, rows, numbers


def _subset_table(preset, runs, small, root) -> tuple[list, list, dict]:
  """(table rows, report rows, numbers) of §6: 3 % of the data, hard or soft targets."""
  hidden = _hidden(runs['alone'])
  table, rows, numbers = [], [], {}
  soft = runs['subset_soft'][0]
  for key, label, reference in (
      ('subset_alone', f'mlp {hidden} alone on {small} examples, hard labels', 'subset_hard'),
      ('subset_soft', f'mlp {hidden} on {small} examples, the ensemble\'s soft targets, '
       f'T={soft["temperature"]:g}, alpha={soft["alpha"]:g}', 'subset_soft'),
      ('alone', f'mlp {hidden} alone on all the training examples', 'baseline')):
    final = common.mean_accuracy(runs[key])
    stopped = common.mean_accuracy(runs[key], 'test_accuracy_at_best_validation')
    numbers[key] = {'test_accuracy': final, 'test_accuracy_at_best_validation': stopped}
    table.append([label, common.accuracy_text(runs[key]),
                  common.accuracy_text(runs[key], 'test_accuracy_at_best_validation'),
                  f'{preset["hinton"][reference]}%',
                  _stage(runs[key][0], root)])
    rows.append(common.row(label, runs[key], stage=key))
  return table, rows, numbers


def write(stages, preset: dict, runs: dict, section: dict, small: int, selections: list,
          hinton: dict) -> str:
  """Writes report.md and report.json; returns the markdown."""
  preset = dict(preset, hinton=hinton)
  root = stages.workdir
  ensemble_rows, ensemble_report, numbers = _ensemble_table(preset, runs, section, root)
  subset_rows, subset_report, subset_numbers = _subset_table(preset, runs, small, root)
  k = len(runs['teachers'])
  notes = (f'The {k} teachers trained as one program (a seed sweep: each its own '
           'initialisation, dropout and data order). The ensemble\'s accuracy is the mean of '
           'its members\' probabilities at T = 1; its students learn from that mean at their '
           'T. Share of the gain: 100 (student − alone) / (ensemble − alone), means over '
           f'seeds; Hinton\'s speech table: (60.8 − 58.9) / (61.1 − 58.9) = 86 %. '
           'The 3 % runs train as many steps as the full-data runs; "epoch chosen on '
           'validation" is their test accuracy at the epoch of best validation accuracy '
           '(early stopping, as Hinton\'s hard-label run).\n')
  return common.write_report(
      stages, title=f'An ensemble of {k} in one network, preset {preset["name"]}',
      command=common.command_line(),
      sections=[
          (f'{k} teachers, their ensemble and a network of one teacher\'s size (§1, §4)',
           ['network', 'test error', 'test accuracy', 'Hinton (speech, frame accuracy)',
            'sub-workdir'], ensemble_rows),
          (f'Soft targets as a regulariser (§6): {small} training examples '
           f'({100 * preset["subset"]:g} % of {_full(runs)})',
           ['network', 'test accuracy (final epoch)', 'test accuracy (epoch chosen on validation)',
            'Hinton (frame accuracy)', 'sub-workdir'], subset_rows)],
      data=dict(numbers, subset=subset_numbers, subset_examples=small, teachers=k,
                ensemble_members=section['members'],
                teacher_errors=[int(r.get('test_errors') or 0) for r in runs['teachers']],
                teacher_spread=float(np.std([r['test_accuracy'] for r in runs['teachers']]))),
      rows=ensemble_report + subset_report, selections=selections, notes=notes)


def _full(runs: dict) -> str:
  first = runs['alone'][0]['workdir']
  return f'{report.read_json(os.path.join(first, "results.json"))["num_train_examples"]:,}'
