"""The report of `python -m experiments.hinton_mnist`: its rows, choices, tables,
targets and figures, from the finished stages."""

import os

import numpy as np

from experiments import common
from kdjax import analysis, report

PAPER = {  # Hinton et al. 2015 §3 and the seeds, as test errors / accuracy.
    'teacher': '67 errors (paper); 99.37% (seed 001)',
    'student': '146 errors (paper); 99.07% (seed 000)',
    'distill_T20': '74 errors (paper); 99.21% (seed 000, T=4.5)',
    'grid_30_alone': '97.50% (seed 001)',
    'grid_30_best': '98.07% at T=5, alpha=0.5 (seed 001)',
    'grid_300_alone': '99.22% (seed 001)',
    'grid_300_best': '99.12% (seed 001)',
    'omit_alone': '89.10% (seed 001); 0% on the omitted digit (seed 002)',
    'omit_distill': '206 errors, 133 on 3s (paper); 92 errors, 27 on 3s (seed 001)',
    'omit_bias_paper': '109 errors, 14 on 3s (paper, bias +3.5)',
}


def write(stages: common.Stages, *, quick: bool, seeds: int, omit: int,
          data_dir: str = '') -> str:
  """Writes report.md, report.json and the figures of the finished stages; returns the
  markdown."""
  from kdjax import data as data_lib
  results = stages.results
  dataset = data_lib.load('mnist', data_dir=data_dir or None,
                          validation_fraction=common.VALIDATION_FRACTION,
                          validation_seed=common.VALIDATION_SEED)
  labels_test, labels_val = dataset.test.labels, dataset.validation.labels
  members = {name: report.members(r) for name, r in results.items()}
  table = _Table(omit, int((labels_test == omit).sum()))
  selections, oracle_lines = [], []
  distill = _distilled_rows(table, members, selections, oracle_lines)
  bias_rows = _omitted_digit_rows(table, members, results['omit_distill'], labels_test,
                                  labels_val, selections)
  by_key = {r['key']: r for r in table.rows}
  targets = _targets(by_key, bias_rows, omit, table.num_omitted, stages.stage_minutes())
  sections, grids = _sections(table, members, distill, targets, quick)
  notes = ('Figures: `errors_vs_temperature.png`, `grid_30.png`, `grid_300.png`, '
           '`omitted_digit_per_class.png`.\n')
  if oracle_lines:
    notes += '\n' + '\n'.join(f'- {line}' for line in oracle_lines) + '\n'
  text = common.write_report(
      stages, title=f'Hinton et al. (2015) on MNIST{" (quick)" if quick else ""}',
      command=common.command_line(), sections=sections, seeds=seeds,
      data={'quick': quick, 'seeds': seeds, 'omitted_digit': omit, 'grids': grids,
            'bias_adjustment': bias_rows, 'targets': targets},
      rows=[{k: v for k, v in r.items() if k != 'text'} for r in table.rows],
      selections=selections, notes=notes)
  _plots(stages.workdir, results, omit, labels_test)
  return text


def _fmt(values, scale=1.0, digits=0, suffix=''):
  mean, std = analysis.mean_std([scale * v for v in values])
  text = f'{mean:.{digits}f}{suffix}'
  return text + (f' ± {std:.{digits}f}' if len(values) > 1 else '')


def _omit_bias_rows(results: dict, omit: int, labels_test, labels_val) -> list[dict]:
  """The distilled omitted-digit student with its class bias raised."""
  rows = []
  for member in report.members(results):
    logits = np.load(os.path.join(member['workdir'], 'logits.npz'))
    chosen = analysis.choose_bias(logits['validation'], labels_val, omit)
    for name, delta in (('paper +3.5', 3.5), ('chosen on validation', chosen)):
      adjusted = analysis.adjust_bias(logits['test'], omit, delta)
      validation = analysis.adjust_bias(logits['validation'], omit, delta)
      rows.append({'variant': name, 'bias': delta, 'seed': member.get('seed'),
                   'workdir': member['workdir'],
                   'test_errors': analysis.errors(adjusted, labels_test),
                   'validation_errors': analysis.errors(validation, labels_val),
                   'omitted_errors': analysis.errors(adjusted, labels_test, omit),
                   'omitted_accuracy': 1 - analysis.errors(adjusted, labels_test, omit)
                   / int((labels_test == omit).sum())})
  return rows


def _targets(by_key, bias_rows, omit, num_omitted, wall_minutes: float) -> list[dict]:
  """The full run's targets, each with what was measured and by how much it is missed."""
  out = []

  def add(target, measured, met, short_by=''):
    out.append({'target': target, 'measured': measured, 'met': bool(met),
                'short_by': '' if met else short_by})

  teacher = by_key['teacher']['test_errors']
  add('teacher <= 80 test errors', f'{teacher:.0f} errors', teacher <= 80,
      f'{teacher - 80:.0f} errors')
  alone = by_key['student']['test_errors']
  for key, short in (('distill_T20', '800-800 distilled T=20, soft only'),
                     ('distill_mixed', '800-800 distilled T=20, alpha=0.9')):
    if key not in by_key:
      continue
    errors = by_key[key]['test_errors']
    fewer = 1 - errors / alone
    add(f'{short}: <= 95 errors', f'{errors:.0f} errors', errors <= 95,
        f'{errors - 95:.0f} errors')
    add(f'{short}: >= 30% fewer errors than alone ({alone:.0f})',
        f'{100 * fewer:.1f}% fewer', fewer >= 0.3, f'{100 * (0.3 - fewer):.1f} points')
  chosen = [r for r in bias_rows if r['variant'] == 'chosen on validation']
  on_omitted = float(np.mean([r['omitted_accuracy'] for r in chosen]))
  add(f'no-{omit}s student, bias chosen on validation: >= 95% of the {num_omitted} {omit}s '
      'right', f'{100 * on_omitted:.1f}%', on_omitted >= 0.95,
      f'{100 * (0.95 - on_omitted):.1f} points')
  best = by_key['grid_30_chosen']['test_accuracy']
  base = by_key['grid_30_alone']['test_accuracy']
  add('30-30: distilled (T, alpha chosen on validation) beats alone',
      f'{100 * best:.2f}% vs {100 * base:.2f}%', best > base,
      f'{100 * (base - best):.2f} points')
  add('whole experiment <= 60 min', f'{wall_minutes:.1f} min (sum over stages)',
      wall_minutes <= 60, f'{wall_minutes - 60:.1f} min')
  return out


def _plots(workdir, results, omit, labels_test):
  import matplotlib.pyplot as plt
  distill_rows = report.group(report.members(results['distill_T']))
  temps = sorted(k[0] for k in distill_rows)
  errs = [np.mean([r['test_errors'] for r in distill_rows[(t, 1.0)]]) for t in temps]
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(temps, errs, marker='o', label='800-800 distilled')
  alone = np.mean([r['test_errors'] for r in report.members(results['student'])])
  ax.axhline(alone, color='gray', ls='--', label='800-800 alone')
  ax.set_xscale('log')
  ax.set_xlabel('temperature T')
  ax.set_ylabel('test errors')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'errors_vs_temperature.png'), dpi=100)
  plt.close(fig)

  for width in (30, 300):
    groups = report.group(report.members(results[f'grid_{width}']))
    ts = sorted({k[0] for k in groups})
    alphas = sorted({k[1] for k in groups})
    grid = np.array([[100 * np.mean([r['test_accuracy'] for r in groups[(t, a)]])
                      for t in ts] for a in alphas])
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    image = ax.imshow(grid, cmap='viridis')
    ax.set_xticks(range(len(ts)), [f'{t:g}' for t in ts])
    ax.set_yticks(range(len(alphas)), [f'{a:g}' for a in alphas])
    ax.set_xlabel('temperature')
    ax.set_ylabel('alpha')
    for i in range(len(alphas)):
      for j in range(len(ts)):
        ax.text(j, i, f'{grid[i, j]:.2f}', ha='center', va='center', color='w')
    fig.colorbar(image, label='test accuracy (%)')
    ax.set_title(f'{width}-{width} students')
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f'grid_{width}.png'), dpi=100)
    plt.close(fig)

  counts = np.bincount(labels_test, minlength=10)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for offset, stage in ((-0.2, 'omit_alone'), (0.2, 'omit_distill')):
    per_class_errors = [r['per_class_errors'] for r in report.members(results[stage])]
    per_class = 1 - np.mean(per_class_errors, 0) / counts
    ax.bar(np.arange(10) + offset, 100 * per_class, width=0.4, label=stage)
  ax.set_xticks(range(10))
  ax.set_xlabel(f'digit (omitted: {omit})')
  ax.set_ylabel('test accuracy (%)')
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'omitted_digit_per_class.png'), dpi=100)
  plt.close(fig)


class _Table:
  """The report's rows, each a `common.row` with a `key` and the cells of its line in the
  results table (`text`)."""

  def __init__(self, omit: int, num_omitted: int):
    self.omit = omit
    self.num_omitted = num_omitted  # test images of the omitted digit
    self.rows: list[dict] = []

  def add(self, key, label, stage, runs, paper, omitted=False, **fields):
    """A row of `runs` (member rows); `omitted` counts the errors on the omitted digit."""
    errors_ = [r['test_errors'] for r in runs]
    accuracy = [r['test_accuracy'] for r in runs]
    omitted_errors = [r['per_class_errors'][self.omit] for r in runs] if omitted else None
    self.rows.append(common.row(
        label, runs, key=key, stage=stage,
        test_errors=float(np.mean(errors_)), test_errors_std=analysis.mean_std(errors_)[1],
        omitted_errors=None if omitted_errors is None else float(np.mean(omitted_errors)),
        reference=paper, **fields,
        text=[label, _fmt(errors_), _fmt(accuracy, 100, 2, '%'),
              _fmt(omitted_errors) + f' / {self.num_omitted}' if omitted else '',
              paper, f'`{stage}`']))


def _distilled_rows(table: _Table, members: dict, selections: list,
                    oracle_lines: list) -> dict:
  """The rows of the teacher, the 800-800 students and the 30-30 / 300-300 grids, with T
  and the grid points chosen on validation; returns the soft-target runs by (T, alpha)."""
  table.add('teacher', 'teacher 1200-1200', 'teacher', members['teacher'], PAPER['teacher'])
  table.add('student', '800-800 alone', 'student', members['student'], PAPER['student'])
  distill = report.group(members['distill_T'])
  t20 = distill.get((20.0, 1.0))
  if t20:
    table.add('distill_T20', '800-800 distilled, T=20, soft only', 'distill_T', t20,
              PAPER['distill_T20'])
  if len(distill) > 1:
    best_t, selection, oracle = common.select('800-800 distilled, soft only: T', distill,
                                              ('temperature', 'alpha'))
    selection['chosen'] = {'temperature': best_t[0]}
    selections.append(selection)
    table.add('distill_chosen_T', f'800-800 distilled, soft only, T={best_t[0]:g} '
              '(chosen on validation)', 'distill_T', distill[best_t], '',
              selected_on='validation')
    oracle_lines.append('800-800 soft only, T: ' + common.oracle_text(
        distill, oracle, f'T={oracle[0]:g}'))
  table.add('distill_mixed', '800-800 distilled, T=20, alpha=0.9', 'distill_mixed',
            members['distill_mixed'], '')
  for width in (30, 300):
    table.add(f'grid_{width}_alone', f'{width}-{width} alone', f'grid_{width}_alone',
              members[f'grid_{width}_alone'], PAPER[f'grid_{width}_alone'])
    groups = report.group(members[f'grid_{width}'])
    best, selection, oracle = common.select(f'{width}-{width} distilled: T and alpha', groups,
                                            ('temperature', 'alpha'))
    selections.append(selection)
    table.add(f'grid_{width}_chosen', f'{width}-{width} distilled, T={best[0]:g}, '
              f'alpha={best[1]:g} (grid point chosen on validation)', f'grid_{width}',
              groups[best], PAPER[f'grid_{width}_best'], selected_on='validation')
    if len(groups) > 1:
      oracle_lines.append(f'{width}-{width} grid: ' + common.oracle_text(
          groups, oracle, f'T={oracle[0]:g}, alpha={oracle[1]:g}'))
  return distill


def _omitted_digit_rows(table: _Table, members: dict, omit_distill: dict, labels_test,
                        labels_val, selections: list) -> list[dict]:
  """The rows of the students trained without the omitted digit, and of the distilled one
  with that digit's bias raised (by the paper's 3.5 and by a value chosen on validation);
  returns the bias rows."""
  omit, num_omitted = table.omit, table.num_omitted
  table.add('omit_alone', f'800-800 alone, no {omit}s', 'omit_alone', members['omit_alone'],
            PAPER['omit_alone'], omitted=True)
  table.add('omit_distill', f'800-800 distilled, no {omit}s, T=20, soft only', 'omit_distill',
            members['omit_distill'], PAPER['omit_distill'], omitted=True)
  bias_rows = _omit_bias_rows(omit_distill, omit, labels_test, labels_val)
  for variant in ('paper +3.5', 'chosen on validation'):
    chosen = [r for r in bias_rows if r['variant'] == variant]
    biases = ', '.join(f'{r["bias"]:+.1f}' for r in chosen)
    errors_ = [r['test_errors'] for r in chosen]
    label = f'800-800 distilled, no {omit}s, T=20, soft only, bias {variant}'
    table.rows.append(common.row(
        label, members['omit_distill'], key=f'omit_bias_{variant.split()[0]}',
        stage='omit_distill', bias=[r['bias'] for r in chosen],
        test_errors=float(np.mean(errors_)),
        test_accuracy=1 - float(np.mean(errors_)) / len(labels_test),
        test_accuracy_std=analysis.mean_std([e / len(labels_test) for e in errors_])[1],
        validation_accuracy=1 - float(np.mean([r['validation_errors'] for r in chosen]))
        / len(labels_val),
        omitted_errors=float(np.mean([r['omitted_errors'] for r in chosen])),
        reference=PAPER['omit_bias_paper'] if variant.startswith('paper') else '',
        text=[f'{label} ({biases})', _fmt(errors_),
              _fmt([1 - e / len(labels_test) for e in errors_], 100, 2, '%'),
              _fmt([r['omitted_errors'] for r in chosen]) + f' / {num_omitted}',
              PAPER['omit_bias_paper'] if variant.startswith('paper') else '',
              '`omit_distill`']))
  chosen = [r for r in bias_rows if r['variant'] == 'chosen on validation']
  selections.append({
      'what': f'bias added to the logit of {omit} (no-{omit}s student)',
      'chosen': {'bias': [r['bias'] for r in chosen]}, 'selected_on': 'validation',
      'validation_accuracy': table.rows[-1]['validation_accuracy'],
      'test_accuracy': table.rows[-1]['test_accuracy'], 'candidates': 201,
      'seeds': len(chosen)})
  return bias_rows


def _sections(table: _Table, members: dict, distill: dict, targets: list[dict],
              quick: bool) -> tuple[list, dict]:
  """The report's tables, and the 30-30 / 300-300 grids' mean accuracies for report.json."""
  grids, sections = {}, []
  sections.append(('Results', ['model', 'test errors', 'accuracy',
                               f'errors on {table.omit}s', 'paper / seeds', 'sub-workdir'],
                   [r['text'] for r in table.rows]))
  sections.append(('800-800 distilled (soft targets only) vs temperature',
                   ['T', 'validation accuracy', 'test errors', 'test accuracy'],
                   [[f'{k[0]:g}', _fmt([r['validation_accuracy'] for r in v], 100, 2, '%'),
                     _fmt([r['test_errors'] for r in v]),
                     _fmt([r['test_accuracy'] for r in v], 100, 2, '%')]
                    for k, v in sorted(distill.items())]))
  for width in (30, 300):
    groups = report.group(members[f'grid_{width}'])
    ts = sorted({k[0] for k in groups})
    alphas = sorted({k[1] for k in groups})
    grids[f'{width}'] = {f'T={t:g},alpha={a:g}': float(np.mean(
        [r['test_accuracy'] for r in groups[(t, a)]])) for t in ts for a in alphas}
    grids[f'{width}_validation'] = {f'T={t:g},alpha={a:g}': float(np.mean(
        [r['validation_accuracy'] for r in groups[(t, a)]])) for t in ts for a in alphas}
    for split, field in (('validation', 'validation_accuracy'), ('test', 'test_accuracy')):
      alone = _fmt([r[field] for r in members[f'grid_{width}_alone']], 100, 2, '%')
      sections.append((f'{width}-{width} students: {split} accuracy, T × alpha (alone: {alone})',
                       ['alpha \\ T'] + [f'{t:g}' for t in ts],
                       [[f'{a:g}'] + [_fmt([r[field] for r in groups[(t, a)]], 100, 2, '%')
                                      for t in ts] for a in alphas]))
  sections.append((f'Targets of the full run{" (this is a quick run)" if quick else ""}',
                   ['target', 'measured', 'met', 'short by'],
                   [[t['target'], t['measured'], 'yes' if t['met'] else 'NO', t['short_by']]
                    for t in targets]))
  return sections, grids
