r"""Hinton, Vinyals & Dean (2015) §3 on real MNIST, with the seeds' MNIST experiments.

  python -m experiments.hinton_mnist --workdir=runs/hinton_mnist            # full
  python -m experiments.hinton_mnist --workdir=runs/hinton_quick --quick    # minutes
  python -m experiments.hinton_mnist --workdir=runs/hinton_mnist --seeds=3  # mean ± std

Stages, each a kdjax run in its own sub-directory (finished stages are
skipped, an interrupted one resumes from its checkpoint):
  teacher         784-1200-1200-10, dropout, max-norm, ±2 px jitter
  student         784-800-800-10 alone
  distill_T       800-800 on soft targets only, T swept (one vectorised program)
  distill_mixed   800-800 at T = 20 with alpha = 0.9 (soft + hard labels)
  grid_30/300     30-30 and 300-300 students: alone, and the T × alpha grid of seed 001
  omit3_*         transfer set without 3s: alone, distilled, then the class-3 bias
                  raised by the paper's 3.5 and by a value chosen on validation
Writes report.md, report.json and PNG figures into --workdir.
"""

import os
import sys
import time

import ml_collections
import numpy as np
from absl import app, flags

from kdjax import analysis, cli, report
from kdjax import config as config_lib
from kdjax.errors import KDError

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all stages and the report.')
_QUICK = flags.DEFINE_bool('quick', False, 'A few epochs and a small grid: minutes.')
_SEEDS = flags.DEFINE_integer('seeds', 1, 'Seeds per student configuration (mean ± std).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir ("" = default).')
_OMIT = flags.DEFINE_integer('omit', 3, 'The digit left out of the transfer set.')
_TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', 0, 'Train every stage on a random subset of this many images (0 = all).')

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


# Every stage holds out the same seeded 10 % of the training split (teacher
# included, so it never trains on a student's validation images); every
# choice the report makes is made on it.
VALIDATION_FRACTION = 0.1


def _base(name: str) -> ml_collections.ConfigDict:
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  config = module.get_config()
  config.data_dir = _DATA_DIR.value
  config.train_examples = _TRAIN_EXAMPLES.value
  config.validation_fraction = VALIDATION_FRACTION
  return config


def _stages(quick: bool, seeds: int, omit: int):
  """(name, config) for every stage; a config with a teacher names it by stage."""
  epochs = {'teacher': 2 if quick else 60, 'student': 2 if quick else 30}
  seed_axis = tuple(range(seeds)) if seeds > 1 else ()
  stages = []

  teacher = _base('mnist_teacher')
  teacher.num_epochs = epochs['teacher']
  stages.append(('teacher', teacher))

  def student(hidden, **changes):
    c = _base('mnist_student')
    c.model.hidden = hidden
    c.num_epochs = epochs['student']
    c.sweep.seed = seed_axis
    return config_lib.override(c, changes)

  def distilled(hidden, temperatures, alphas, **changes):
    # Soft targets only (alpha 1) at T = 20 unless `changes` say otherwise.
    c = student(hidden)
    c.teacher.workdir = 'teacher'
    c.distill.temperature = 20.0
    c.distill.alpha = 1.0
    config_lib.override(c, changes)
    c.sweep.temperature = temperatures
    c.sweep.alpha = alphas
    return c

  stages.append(('student', student((800, 800))))
  stages.append(('distill_T', distilled((800, 800), (2.0, 20.0) if quick else
                                        (1.0, 2.0, 5.0, 10.0, 20.0, 40.0), ())))
  stages.append(('distill_mixed', distilled((800, 800), (), (), **{'distill.alpha': 0.9})))
  grid_t = (1.0, 5.0) if quick else (1.0, 5.0, 10.0)
  grid_a = (0.5,) if quick else (0.1, 0.5, 0.9)
  for width in (30, 300):
    stages.append((f'grid_{width}_alone', student((width, width))))
    stages.append((f'grid_{width}', distilled((width, width), grid_t, grid_a)))
  omit_changes = {'omit_classes': (omit,)}
  stages.append(('omit_alone', student((800, 800), **omit_changes)))
  stages.append(('omit_distill', distilled((800, 800), (), (), **omit_changes)))
  return stages


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
    for name, delta in (('paper +3.5', 3.5), (f'validation-chosen', chosen)):
      adjusted = analysis.adjust_bias(logits['test'], omit, delta)
      rows.append({'variant': name, 'bias': delta, 'seed': member.get('seed'),
                   'test_errors': analysis.errors(adjusted, labels_test),
                   'omitted_errors': analysis.errors(adjusted, labels_test, omit),
                   'omitted_accuracy': 1 - analysis.errors(adjusted, labels_test, omit)
                   / int((labels_test == omit).sum())})
  return rows


def _targets(table, results, bias_rows, omit, num_omitted, wall_minutes: float) -> list[dict]:
  """The full run's targets, each with what was measured and by how much it is missed."""
  by_model = {row['model']: row for row in table}
  out = []

  def add(target, measured, met, short_by=''):
    out.append({'target': target, 'measured': measured, 'met': bool(met),
                'short_by': '' if met else short_by})

  teacher = by_model['teacher 1200-1200']['test_errors']
  add('teacher <= 80 test errors', f'{teacher:.0f} errors', teacher <= 80,
      f'{teacher - 80:.0f} errors')
  alone = by_model['800-800 alone']['test_errors']
  for name in ('800-800 distilled, T=20, soft only', '800-800 distilled, T=20, alpha=0.9'):
    if name not in by_model:
      continue
    errors = by_model[name]['test_errors']
    fewer = 1 - errors / alone
    short = name.replace('800-800 distilled, ', '800-800 distilled ')
    add(f'{short}: <= 95 errors', f'{errors:.0f} errors', errors <= 95,
        f'{errors - 95:.0f} errors')
    add(f'{short}: >= 30% fewer errors than alone ({alone:.0f})',
        f'{100 * fewer:.1f}% fewer', fewer >= 0.3, f'{100 * (0.3 - fewer):.1f} points')
  chosen = [r for r in bias_rows if r['variant'] == 'validation-chosen']
  on_omitted = float(np.mean([r['omitted_accuracy'] for r in chosen]))
  add(f'no-{omit}s student, validation-chosen bias: >= 95% of the {num_omitted} {omit}s right',
      f'{100 * on_omitted:.1f}%', on_omitted >= 0.95, f'{100 * (0.95 - on_omitted):.1f} points')
  best = max(by_model[m]['test_accuracy'] for m in by_model
             if m.startswith('30-30 distilled'))
  base = by_model['30-30 alone']['test_accuracy']
  add('30-30: best distilled beats alone', f'{100 * best:.2f}% vs {100 * base:.2f}%', best > base,
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


def run(workdir: str, *, quick: bool, seeds: int, omit: int) -> dict:
  """Runs every stage (skipping finished ones) and writes the report."""
  from kdjax import data as data_lib
  from kdjax import train

  if seeds < 1:
    raise KDError(f'--seeds={seeds} must be >= 1')
  if not 0 <= omit <= 9:
    raise KDError(f'--omit={omit} must be a digit 0-9')
  if _TRAIN_EXAMPLES.value < 0:
    raise KDError(f'--train_examples={_TRAIN_EXAMPLES.value} must be >= 0 (0 = all)')
  os.makedirs(workdir, exist_ok=True)
  start = time.perf_counter()
  results = {}
  # Wall seconds per stage, kept across invocations, so the report's total
  # covers stages that an earlier invocation ran.
  times_path = os.path.join(workdir, 'stage_seconds.json')
  stage_seconds = report.read_json(times_path) if os.path.exists(times_path) else {}
  for name, config in _stages(quick, seeds, omit):
    if config.teacher.workdir:
      config.teacher.workdir = os.path.join(workdir, config.teacher.workdir)
    print(f'== stage {name} ==', flush=True)
    stage_dir = os.path.join(workdir, name)
    already_done = os.path.exists(os.path.join(stage_dir, 'results.json'))
    stage_start = time.perf_counter()
    results[name] = train.train_and_evaluate(config, stage_dir)
    if not already_done:
      stage_seconds[name] = time.perf_counter() - stage_start
    elif name not in stage_seconds:  # finished before wall times were kept
      stage_seconds[name] = (results[name].get('train_seconds', 0)
                             + results[name].get('compile_seconds', 0))
    report.write_json(times_path, stage_seconds)
    results[name]['workdir'] = os.path.join(workdir, name)
  wall_seconds = time.perf_counter() - start

  dataset = data_lib.load('mnist', data_dir=_DATA_DIR.value or None, validation_fraction=0.1)
  labels_test, labels_val = dataset.test.labels, dataset.validation.labels
  num_omitted = int((labels_test == omit).sum())

  table = []

  def row(label, stage, rows, paper, omitted=False):
    errors_ = [r['test_errors'] for r in rows]
    accuracy = [r['test_accuracy'] for r in rows]
    omitted_errors = [r['per_class_errors'][omit] for r in rows] if omitted else None
    table.append({
        'model': label, 'workdir': os.path.join(workdir, stage), 'seeds': len(rows),
        'test_errors': float(np.mean(errors_)), 'test_errors_std':
            analysis.mean_std(errors_)[1], 'test_accuracy': float(np.mean(accuracy)),
        'omitted_errors': None if omitted_errors is None else float(np.mean(omitted_errors)),
        'reference': paper,
        'text': [label, _fmt(errors_), _fmt(accuracy, 100, 2, '%'),
                 _fmt(omitted_errors) + f' / {num_omitted}' if omitted else '',
                 paper, f'`{stage}`']})

  row('teacher 1200-1200', 'teacher', report.members(results['teacher']), PAPER['teacher'])
  row('800-800 alone', 'student', report.members(results['student']), PAPER['student'])
  distill = report.group(report.members(results['distill_T']))
  t20 = distill.get((20.0, 1.0))
  if t20:
    row('800-800 distilled, T=20, soft only', 'distill_T', t20, PAPER['distill_T20'])
  row('800-800 distilled, T=20, alpha=0.9', 'distill_mixed',
      report.members(results['distill_mixed']), '')
  for width in (30, 300):
    row(f'{width}-{width} alone', f'grid_{width}_alone',
        report.members(results[f'grid_{width}_alone']), PAPER[f'grid_{width}_alone'])
    groups = report.group(report.members(results[f'grid_{width}']))
    best_key = max(groups, key=lambda k: np.mean([r['test_accuracy'] for r in groups[k]]))
    row(f'{width}-{width} distilled, best of grid (T={best_key[0]:g}, '
        f'alpha={best_key[1]:g})', f'grid_{width}', groups[best_key],
        PAPER[f'grid_{width}_best'])
  row(f'800-800 alone, no {omit}s', 'omit_alone', report.members(results['omit_alone']),
      PAPER['omit_alone'], omitted=True)
  row(f'800-800 distilled, no {omit}s', 'omit_distill', report.members(results['omit_distill']),
      PAPER['omit_distill'], omitted=True)
  bias_rows = _omit_bias_rows(results['omit_distill'], omit, labels_test, labels_val)
  for variant in ('paper +3.5', 'validation-chosen'):
    chosen = [r for r in bias_rows if r['variant'] == variant]
    biases = ', '.join(f'{r["bias"]:+.1f}' for r in chosen)
    table.append({
        'model': f'800-800 distilled, no {omit}s, bias {variant}', 'workdir':
            os.path.join(workdir, 'omit_distill'), 'seeds': len(chosen),
        'test_errors': float(np.mean([r['test_errors'] for r in chosen])),
        'test_accuracy': 1 - float(np.mean([r['test_errors'] for r in chosen])) / len(labels_test),
        'omitted_errors': float(np.mean([r['omitted_errors'] for r in chosen])),
        'bias': [r['bias'] for r in chosen],
        'reference': PAPER['omit_bias_paper'] if variant.startswith('paper') else '',
        'text': [f'800-800 distilled, no {omit}s, bias {biases} ({variant})',
                 _fmt([r['test_errors'] for r in chosen]),
                 _fmt([1 - r['test_errors'] / len(labels_test) for r in chosen], 100, 2, '%'),
                 _fmt([r['omitted_errors'] for r in chosen]) + f' / {num_omitted}',
                 PAPER['omit_bias_paper'] if variant.startswith('paper') else '',
                 '`omit_distill`']})

  stage_minutes = sum(stage_seconds.get(name, 0) for name in results) / 60
  targets = _targets(table, results, bias_rows, omit, num_omitted, stage_minutes)
  grids = {}
  md = [f'# Hinton et al. (2015) on MNIST{" (quick)" if quick else ""}\n',
        f'Command: `python -m experiments.hinton_mnist --workdir={workdir}'
        f'{" --quick" if quick else ""}{f" --seeds={seeds}" if seeds > 1 else ""}'
        f'{f" --train_examples={_TRAIN_EXAMPLES.value}" if _TRAIN_EXAMPLES.value else ""}`; '
        f'wall time of the stages run now: {wall_seconds / 60:.1f} min '
        f'(all stages, including those run before: {stage_minutes:.1f} min); '
        f'{seeds} seed(s) per student.\n',
        report.markdown_table(['model', 'test errors', 'accuracy', f'errors on {omit}s',
                               'paper / seeds', 'sub-workdir'],
                              [r['text'] for r in table])]
  md.append('\n## 800-800 distilled (soft targets only) vs temperature\n')
  md.append(report.markdown_table(
      ['T', 'test errors', 'accuracy'],
      [[f'{k[0]:g}', _fmt([r['test_errors'] for r in v]),
        _fmt([r['test_accuracy'] for r in v], 100, 2, '%')] for k, v in sorted(distill.items())]))
  for width in (30, 300):
    groups = report.group(report.members(results[f'grid_{width}']))
    ts = sorted({k[0] for k in groups})
    alphas = sorted({k[1] for k in groups})
    grids[f'{width}'] = {f'T={t:g},alpha={a:g}': float(np.mean(
        [r['test_accuracy'] for r in groups[(t, a)]])) for t in ts for a in alphas}
    alone = [r['test_accuracy'] for r in report.members(results[f'grid_{width}_alone'])]
    md.append(f'\n## {width}-{width} students: test accuracy, T × alpha '
              f'(alone: {_fmt(alone, 100, 2, "%")})\n')
    md.append(report.markdown_table(
        ['alpha \\ T'] + [f'{t:g}' for t in ts],
        [[f'{a:g}'] + [_fmt([r['test_accuracy'] for r in groups[(t, a)]], 100, 2, '%')
                       for t in ts] for a in alphas]))
  md.append(f'\n## Targets of the full run{" (this is a quick run)" if quick else ""}\n')
  md.append(report.markdown_table(
      ['target', 'measured', 'met', 'short by'],
      [[t['target'], t['measured'], 'yes' if t['met'] else 'NO', t['short_by']]
       for t in targets]))
  md.append('\nFigures: `errors_vs_temperature.png`, `grid_30.png`, `grid_300.png`, '
            '`omitted_digit_per_class.png`.\n')
  with open(os.path.join(workdir, 'report.md'), 'w') as f:
    f.write('\n'.join(md))
  out = {'quick': quick, 'seeds': seeds, 'omitted_digit': omit, 'wall_seconds': wall_seconds,
         'rows': [{k: v for k, v in r.items() if k != 'text'} for r in table],
         'grids': grids, 'bias_adjustment': bias_rows, 'targets': targets,
         'stage_minutes': stage_minutes}
  report.write_json(os.path.join(workdir, 'report.json'), out)
  _plots(workdir, results, omit, labels_test)
  print('\n'.join(md), flush=True)
  return out


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cli.run_guarded(run, os.path.abspath(_WORKDIR.value), quick=_QUICK.value,
                  seeds=_SEEDS.value, omit=_OMIT.value)


if __name__ == '__main__':
  app.run(main)
