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
Every stage, the teacher included, holds out the same seeded 10 % of the
training split as validation; the soft-target T, the 30-30 / 300-300 grid
points and the omitted digit's bias are chosen on it, and the test set only
gives the numbers reported. Writes report.md, report.json and PNG figures
into --workdir.
"""

import os
import sys

import ml_collections
import numpy as np
from absl import app, flags

from experiments import common
from kdjax import analysis, cli, report
from kdjax import config as config_lib
from kdjax.errors import KDError

# --workdir, --quick, --seeds, --data_dir and --train_examples are the
# launchers' shared flags (experiments/common/flags.py); --quick here is the demo
# (2 epochs, a small grid), --seeds 0 means 1 and --train_examples -1 means all.
_OMIT = flags.DEFINE_integer('omit', 3, 'The digit left out of the transfer set.')

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


def _base(name: str, data_dir: str, train_examples: int) -> ml_collections.ConfigDict:
  module = __import__(f'configs.{name}', fromlist=['get_config'])
  config = module.get_config()
  config.data_dir = data_dir
  config.train_examples = train_examples
  # Every stage, the teacher included, holds out the same seeded images: no
  # teacher has trained on a student's validation images, and every choice
  # the report makes is made on them.
  config.validation_fraction = common.VALIDATION_FRACTION
  config.validation_seed = common.VALIDATION_SEED
  return config


def _stages(quick: bool, seeds: int, omit: int, *, data_dir: str = '', train_examples: int = 0):
  """(name, config) for every stage; a config with a teacher names it by stage.

  `quick` keeps every stage and its recipe (evaluated every epoch, as in the
  full run) with 2 epochs and smaller grids.
  """
  epochs = {'teacher': 2 if quick else 60, 'student': 2 if quick else 30}
  seed_axis = tuple(range(seeds)) if seeds > 1 else ()
  stages = []

  teacher = _base('mnist_teacher', data_dir, train_examples)
  teacher.num_epochs = epochs['teacher']
  stages.append(('teacher', teacher))

  def student(hidden, **changes):
    c = _base('mnist_student', data_dir, train_examples)
    c.model.hidden = hidden
    c.num_epochs = epochs['student']
    c.sweep.seed = seed_axis
    return config_lib.override(c, changes)

  def distilled(hidden, temperatures, alphas, **changes):
    # Soft targets only (alpha 1) at T = 20 unless `changes` say otherwise:
    # the caller's changes are applied last.
    c = student(hidden)
    c.teacher.workdir = 'teacher'
    c.distill.temperature = 20.0
    c.distill.alpha = 1.0
    c.sweep.temperature = temperatures
    c.sweep.alpha = alphas
    return config_lib.override(c, changes)

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


def run(workdir: str, *, quick: bool, seeds: int, omit: int, data_dir: str = '',
        train_examples: int = 0) -> str:
  """Runs every stage (skipping finished ones), writes the report and returns its markdown."""
  from kdjax import data as data_lib

  if seeds < 1:
    raise KDError(f'--seeds={seeds} must be >= 1')
  if not 0 <= omit <= 9:
    raise KDError(f'--omit={omit} must be a digit 0-9')
  if train_examples < 0:
    raise KDError(f'--train_examples={train_examples} must be >= 0 (0 = all)')
  # The first stage's run creates `workdir` once its checks pass.
  stages = common.Stages(workdir)
  for name, config in _stages(quick, seeds, omit, data_dir=data_dir,
                              train_examples=train_examples):
    if config.teacher.workdir:  # a stage name: that stage's directory
      config.teacher.workdir = stages.path(config.teacher.workdir)
    stages.run(name, config)
  results = stages.results

  dataset = data_lib.load('mnist', data_dir=data_dir or None,
                          validation_fraction=common.VALIDATION_FRACTION,
                          validation_seed=common.VALIDATION_SEED)
  labels_test, labels_val = dataset.test.labels, dataset.validation.labels
  num_omitted = int((labels_test == omit).sum())
  members = {name: report.members(r) for name, r in results.items()}

  table, selections, oracle_lines = [], [], []

  def row(key, label, stage, runs, paper, omitted=False, **fields):
    errors_ = [r['test_errors'] for r in runs]
    accuracy = [r['test_accuracy'] for r in runs]
    omitted_errors = [r['per_class_errors'][omit] for r in runs] if omitted else None
    table.append(common.row(
        label, runs, key=key, stage=stage,
        test_errors=float(np.mean(errors_)), test_errors_std=analysis.mean_std(errors_)[1],
        omitted_errors=None if omitted_errors is None else float(np.mean(omitted_errors)),
        reference=paper, **fields,
        text=[label, _fmt(errors_), _fmt(accuracy, 100, 2, '%'),
              _fmt(omitted_errors) + f' / {num_omitted}' if omitted else '',
              paper, f'`{stage}`']))

  row('teacher', 'teacher 1200-1200', 'teacher', members['teacher'], PAPER['teacher'])
  row('student', '800-800 alone', 'student', members['student'], PAPER['student'])
  distill = report.group(members['distill_T'])
  t20 = distill.get((20.0, 1.0))
  if t20:
    row('distill_T20', '800-800 distilled, T=20, soft only', 'distill_T', t20,
        PAPER['distill_T20'])
  if len(distill) > 1:
    best_t, selection, oracle = common.select('800-800 distilled, soft only: T', distill,
                                              ('temperature', 'alpha'))
    selection['chosen'] = {'temperature': best_t[0]}
    selections.append(selection)
    row('distill_chosen_T', f'800-800 distilled, soft only, T={best_t[0]:g} '
        '(chosen on validation)', 'distill_T', distill[best_t], '', selected_on='validation')
    oracle_lines.append('800-800 soft only, T: ' + common.oracle_text(
        distill, oracle, f'T={oracle[0]:g}'))
  row('distill_mixed', '800-800 distilled, T=20, alpha=0.9', 'distill_mixed',
      members['distill_mixed'], '')
  for width in (30, 300):
    row(f'grid_{width}_alone', f'{width}-{width} alone', f'grid_{width}_alone',
        members[f'grid_{width}_alone'], PAPER[f'grid_{width}_alone'])
    groups = report.group(members[f'grid_{width}'])
    best, selection, oracle = common.select(f'{width}-{width} distilled: T and alpha', groups,
                                            ('temperature', 'alpha'))
    selections.append(selection)
    row(f'grid_{width}_chosen', f'{width}-{width} distilled, T={best[0]:g}, alpha={best[1]:g} '
        '(grid point chosen on validation)', f'grid_{width}', groups[best],
        PAPER[f'grid_{width}_best'], selected_on='validation')
    if len(groups) > 1:
      oracle_lines.append(f'{width}-{width} grid: ' + common.oracle_text(
          groups, oracle, f'T={oracle[0]:g}, alpha={oracle[1]:g}'))
  row('omit_alone', f'800-800 alone, no {omit}s', 'omit_alone', members['omit_alone'],
      PAPER['omit_alone'], omitted=True)
  row('omit_distill', f'800-800 distilled, no {omit}s, T=20, soft only', 'omit_distill',
      members['omit_distill'], PAPER['omit_distill'], omitted=True)
  bias_rows = _omit_bias_rows(results['omit_distill'], omit, labels_test, labels_val)
  for variant in ('paper +3.5', 'chosen on validation'):
    chosen = [r for r in bias_rows if r['variant'] == variant]
    biases = ', '.join(f'{r["bias"]:+.1f}' for r in chosen)
    errors_ = [r['test_errors'] for r in chosen]
    label = f'800-800 distilled, no {omit}s, T=20, soft only, bias {variant}'
    table.append(common.row(
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
      'validation_accuracy': table[-1]['validation_accuracy'],
      'test_accuracy': table[-1]['test_accuracy'], 'candidates': 201, 'seeds': len(chosen)})

  by_key = {r['key']: r for r in table}
  targets = _targets(by_key, bias_rows, omit, num_omitted, stages.stage_minutes())
  grids, sections = {}, []
  sections.append(('Results', ['model', 'test errors', 'accuracy', f'errors on {omit}s',
                               'paper / seeds', 'sub-workdir'], [r['text'] for r in table]))
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
  notes = ('Figures: `errors_vs_temperature.png`, `grid_30.png`, `grid_300.png`, '
           '`omitted_digit_per_class.png`.\n')
  if oracle_lines:
    notes += '\n' + '\n'.join(f'- {line}' for line in oracle_lines) + '\n'
  text = common.write_report(
      stages, title=f'Hinton et al. (2015) on MNIST{" (quick)" if quick else ""}',
      command=common.command_line(), sections=sections, seeds=seeds,
      data={'quick': quick, 'seeds': seeds, 'omitted_digit': omit, 'grids': grids,
            'bias_adjustment': bias_rows, 'targets': targets},
      rows=[{k: v for k, v in r.items() if k != 'text'} for r in table],
      selections=selections, notes=notes)
  _plots(workdir, results, omit, labels_test)
  print(text, flush=True)
  return text


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if not common.WORKDIR.value:
    cli.fail('--workdir is required')
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cli.configure_cache()
  train_examples = common.TRAIN_EXAMPLES.value
  cli.run_guarded(run, os.path.abspath(common.WORKDIR.value), quick=common.QUICK.value,
                  seeds=common.SEEDS.value or 1, omit=_OMIT.value,
                  data_dir=common.DATA_DIR.value,
                  train_examples=0 if train_examples == -1 else train_examples)


if __name__ == '__main__':
  app.run(main)
