"""A launcher's report.md and report.json, its plots, and which process writes them."""

import dataclasses
import os
import sys

import numpy as np

from experiments.common.rows import chosen_text, is_diverged, validation_text
from experiments.common.stages import Stages
from kdjax import report


def plot_curves(path: str, curves: dict[str, list[dict]], title: str) -> None:
  """Test accuracy against epoch, one line per label (mean over its runs)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, rows in curves.items():
    histories = []
    for row in rows:
      if is_diverged(row):
        continue
      results = report.read_json(os.path.join(row['workdir'], 'results.json'))
      histories.append([(h['epoch'], h['test_accuracy']) for h in results['history']
                        if 'test_accuracy' in h])
    if not histories:
      continue
    epochs = [e for e, _ in histories[0]]
    values = np.mean([[100 * a for _, a in h] for h in histories], axis=0)
    ax.plot(epochs, values, marker='.', label=label)
  ax.set_xlabel('epoch')
  save_figure(fig, ax, path, title)


def save_figure(fig, ax, path: str, title: str) -> None:
  """Titles an accuracy plot, adds its legend, writes the PNG and frees the figure."""
  import matplotlib.pyplot as plt
  ax.set_ylabel('test accuracy (%)')
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  if writes_files():
    fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(stages: Stages, *, title: str, command: str,
                 sections: list[tuple[str, list[str], list[list[str]]]],
                 data: dict, rows: list[dict], selections: list[dict] = (),
                 notes: str = '', seeds: int | None = None) -> str:
  """Writes report.md (tables) and report.json (numbers); returns the markdown.

  report.json holds `data`, the `rows` (see `row`: each with the settings its
  runs trained with), the `selections` (see `select`) and the wall time, of
  this invocation and of every stage however many invocations ran them.
  `seeds` (seeds per student) defaults to the setup's.
  """
  first = next(iter(stages.results.values()))
  validation = validation_text(first)
  setup = stages.setup
  seeds = setup.seeds if seeds is None else seeds
  stage_minutes = stages.stage_minutes()
  md = [f'# {title}\n',
        f'Command: `{command}`; wall time of the stages run now: '
        f'{stages.wall_minutes():.1f} min (all stages, including those run before: '
        f'{stage_minutes:.1f} min); {seeds} seed(s) per student'
        + (f'; dataset `{setup.dataset}`' if setup else '') + '.\n',
        f'{validation[0].upper()}{validation[1:]}.\n']
  if selections:
    md.append('Chosen on the validation split: ' + '; '.join(
        f'{s["what"]}: {chosen_text(s["chosen"])} ({100 * s["validation_accuracy"]:.2f}% '
        f'validation, {100 * s["test_accuracy"]:.2f}% test)' for s in selections) + '.\n')
  for heading, header, table in sections:
    md.append(f'## {heading}\n')
    md.append(report.markdown_table(header, table))
    md.append('')
  if notes:
    md.append(notes)
  text = '\n'.join(md)
  out = dict(data, rows=rows, selections=list(selections), validation=validation,
             wall_seconds=stages.wall_minutes() * 60, stage_minutes=stage_minutes,
             stages={name: r['workdir'] for name, r in stages.results.items()})
  if setup:
    out['setup'] = dataclasses.asdict(setup)
  if writes_files():  # in a multi-process job, process 0 writes the report
    with open(os.path.join(stages.workdir, 'report.md'), 'w') as f:
      f.write(text)
    report.write_json(os.path.join(stages.workdir, 'report.json'), out)
  return text


def writes_files() -> bool:
  """Whether this process writes a launcher's shared files (process 0 of a job)."""
  import jax
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process of a multi-process job reaches `name`."""
  import jax
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def command_line() -> str:
  """The command that is running, for the report."""
  module = os.path.splitext(os.path.basename(sys.argv[0]))[0]
  return ' '.join([f'python -m experiments.{module}', *sys.argv[1:]])
