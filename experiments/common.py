"""What the launchers share: flags, training recipes, stages, reports.

The conv-net launchers use all of it; hinton_mnist builds its own MLP configs
and shares the flags, `Stages.run`, the report rows, selections and writer.

A launcher describes its experiment as stages, each one kdjax run (or one
vectorised sweep) in its own sub-directory of `--workdir`. Finished stages
are returned as they are and an interrupted one resumes from its checkpoint,
so rerunning a launcher's command continues where it stopped.

Every run holds out the same seeded part of the training split as
validation (VALIDATION_FRACTION, VALIDATION_SEED), teachers included. A
report's choices (best T, grid point, kind...) are made on it (`select`), and
each report row carries the settings its runs trained with, read back from
their results.json (`row`). `--quick` runs a preset at smoke-test size on the
full preset's code path (`shrunk`, `shrunk_preset`).
"""

import copy
import dataclasses
import json
import os
import sys
import time
from typing import Callable, Sequence

import ml_collections
import numpy as np
from absl import app, flags

from kdjax import analysis, cli, report
from kdjax import config as config_lib
from kdjax.errors import ConfigError, KDError

WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all stages and the report.')
DATASET = flags.DEFINE_string('dataset', None, "TFDS name (default: the preset's).")
PRESET = flags.DEFINE_string('preset', None, 'Which set-up to run (see --helpfull).')
QUICK = flags.DEFINE_bool(
    'quick', False, 'Minutes instead of hours. Conv launchers: every stage at smoke-test size '
    '(few epochs, examples and grid values, narrow MLPs) on the full preset\'s code path; '
    'hinton_mnist: its demo (2 epochs, a small grid).')
SEEDS = flags.DEFINE_integer('seeds', 0, "Seeds per student (0: the preset's).")
EPOCHS = flags.DEFINE_integer('epochs', 0, "Epochs per run (0: the preset's).")
TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', -1, "Training examples per run (0: all, -1: the preset's).")
DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir ("" = default).')
TEMPERATURE = flags.DEFINE_float('temperature', 4.0,
                                 'Distillation temperature (launchers without a T grid).')
ALPHA = flags.DEFINE_float('alpha', 0.9, 'Weight of the soft term (launchers without a grid).')

# Every launcher holds out the same seeded images of the training split, for
# teachers and students alike: no teacher has trained on a student's
# validation images, and every choice a report makes is made on them.
VALIDATION_FRACTION = 0.1
VALIDATION_SEED = 0

QUICK_EXAMPLES = 48
QUICK_BATCH = 16
QUICK_WIDTH = 16


def base_config(recipe: str) -> ml_collections.ConfigDict:
  """A run config for `recipe`: 'sgd' (configs/cifar_resnet.py), 'adam' (seed 004),
  'repdistiller' (the CIFAR-100 distillation benchmark's SGD step schedule), 'byot'
  (a Be Your Own Teacher PyTorch implementation: SGD 0.1, /10 at epochs 75, 130, 180) or
  'papernot' (seed 001's defensive distillation: SGD 0.01, Nesterov, constant)."""
  from configs import cifar_resnet
  c = cifar_resnet.get_config()
  if recipe == 'adam':  # seed 004: Adam 1e-3, constant, no weight decay
    c.optimizer.name = 'adam'
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.0
    c.schedule.name = 'constant'
  elif recipe == 'repdistiller':  # CIFAR-100 benchmark: SGD 0.05, /10 at 150, 180, 210 of 240
    c.optimizer.learning_rate = 0.05
    c.optimizer.nesterov = False
    c.schedule.name = 'step'
    c.schedule.boundaries = (150, 180, 210)
    c.schedule.step_factor = 0.1
  elif recipe == 'papernot':  # seed 001's defensive distillation: SGD 0.01, Nesterov
    c.optimizer.learning_rate = 0.01
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 1e-6
    c.schedule.name = 'constant'
  elif recipe == 'byot':  # a BYOT PyTorch implementation: SGD 0.1, /10 at 75, 130, 180 of 200
    c.optimizer.learning_rate = 0.1
    c.optimizer.nesterov = False
    c.schedule.name = 'step'
    c.schedule.boundaries = (75, 130, 180)
    c.schedule.step_factor = 0.1
  elif recipe != 'sgd':
    raise ValueError(recipe)
  return c


@dataclasses.dataclass
class Setup:
  """How every run of an experiment is sized, from the preset and the flags."""
  dataset: str
  recipe: str = 'sgd'
  epochs: int = 200
  seeds: int = 1
  train_examples: int = 0
  validation_fraction: float = VALIDATION_FRACTION
  batch_size: int = 128
  model_options: dict = dataclasses.field(default_factory=dict)  # per model name
  quick: bool = False
  data_dir: str = ''
  sweep_mode: str = 'auto'  # config.sweep.mode of every run

  def config(self, model: str, *, epochs: int | None = None) -> ml_collections.ConfigDict:
    """The config that trains `model` alone under this setup."""
    c = base_config(self.recipe)
    c.dataset = self.dataset
    c.data_dir = self.data_dir
    c.model.name = model
    c.model.update(self.model_options.get(model, {}))
    c.num_epochs = epochs or self.epochs
    c.eval_every = max(1, c.num_epochs // 10)
    c.checkpoint_every = c.eval_every
    c.train_examples = self.train_examples
    c.sweep.mode = self.sweep_mode
    c.validation_fraction = self.validation_fraction
    c.validation_seed = VALIDATION_SEED
    c.batch_size = self.batch_size
    from kdjax.data import catalog
    if catalog.get_info(self.dataset).image_shape[-1] == 1:
      # 28×28 grayscale digits and clothes: a smaller shift than CIFAR's 4,
      # and no mirror images (a mirrored digit is not the same digit).
      c.augment.max_shift = 2
      c.augment.flip = False
    return shrunk(c) if self.quick else c


def shrunk(config: ml_collections.ConfigDict, *, widths: bool = True) -> ml_collections.ConfigDict:
  """`config` at smoke-test size, on the code path of the full-size run.

  Only sizes change: epochs, training examples, batch sizes and, with
  `widths`, the hidden widths of MLPs (the one family with a width option;
  the depth is kept). Everything that picks a code path stays: optimizer,
  schedule (warm-up and step boundaries scaled with the epochs, every
  boundary still crossed), an evaluation and checkpoint cadence above one
  epoch where the full run's is, augmentation, the teacher and how it is
  run, sweep axes and mode, the validation split and class filters.

  Args:
    config: a run config.
    widths: narrow MLP hidden layers to QUICK_WIDTH units.

  Returns:
    A shrunk copy; `config` is left as it is.
  """
  c = copy.deepcopy(config)
  full_epochs = c.num_epochs
  # Three epochs with a cadence of two: epoch 1 trains without evaluating,
  # epoch 2 is on the cadence, epoch 3 is the off-cadence last one.
  c.num_epochs = 3 if c.eval_every > 1 else min(full_epochs, 2)
  c.eval_every = min(c.eval_every, 2)
  c.checkpoint_every = min(c.checkpoint_every, 2)
  scale = c.num_epochs / full_epochs
  if len(c.schedule.boundaries):
    c.schedule.boundaries = tuple(sorted({min(max(1, round(b * scale)), c.num_epochs - 1)
                                          for b in c.schedule.boundaries}))
  if c.schedule.warmup_epochs:
    c.schedule.warmup_epochs = min(max(1, round(c.schedule.warmup_epochs * scale)),
                                   c.num_epochs - 1)
  c.train_examples = QUICK_EXAMPLES
  c.batch_size = QUICK_BATCH
  c.eval_batch_size = 2 * QUICK_BATCH
  if widths and c.model.name == 'mlp':
    from kdjax import models
    hidden = c.model.get('hidden') or models.create('mlp', num_classes=10).hidden
    with c.model.unlocked():
      c.model.hidden = tuple(min(QUICK_WIDTH, h) for h in hidden)
  return c


def shrunk_preset(preset: dict) -> dict:
  """A preset at smoke-test size: every swept list cut to its first two values
  (a grid stays a grid, seeds stay a seed sweep), one student of a list."""
  out = dict(preset)
  for key in ('temperatures', 'alphas', 'kinds'):
    if key in out:
      out[key] = tuple(out[key])[:2]
  if 'students' in out:
    out['students'] = tuple(out['students'])[:1]
  if 'pairs' in out:  # the pairs a quick run keeps (default: the first)
    out['pairs'] = tuple(out.get('quick_pairs', out['pairs'][:1]))
  if 'extra' in out:
    out['extra'] = shrunk_preset(out['extra'])
  if 'seeds' in out:  # a preset may keep fewer (a long list of stages)
    out['seeds'] = min(out['seeds'], out.get('quick_seeds', 2))
  if 'generations' in out:
    out['generations'] = min(out['generations'], 2)
  return out


class Stages:
  """Runs named stages under one workdir and keeps their results.

  The wall seconds of each stage are kept in `stage_seconds.json` across
  invocations, so a report's total covers stages that an earlier invocation
  ran. `setup` sizes the runs of `alone` and `distill`; a launcher that
  builds its own configs and calls `run` can leave it out.
  """

  def __init__(self, workdir: str, setup: Setup | None = None):
    self.workdir = workdir
    self.setup = setup
    self.results: dict[str, dict] = {}
    self.start = time.perf_counter()

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def run(self, name: str, config: ml_collections.ConfigDict) -> dict:
    from kdjax import train
    print(f'== stage {name} ==', flush=True)
    already_done = os.path.exists(os.path.join(self.path(name), 'results.json'))
    start = time.perf_counter()
    result = train.train_and_evaluate(config, self.path(name))
    # Read back each time: the file is the record across invocations, and the
    # first stage's run is what creates the workdir.
    times_path = os.path.join(self.workdir, 'stage_seconds.json')
    seconds = report.read_json(times_path) if os.path.exists(times_path) else {}
    if not already_done:
      seconds[name] = time.perf_counter() - start
    elif name not in seconds:  # finished before wall times were kept
      seconds[name] = result.get('train_seconds', 0) + result.get('compile_seconds', 0)
    report.write_json(times_path, seconds)
    result['workdir'] = self.path(name)
    self.results[name] = result
    return result

  def alone(self, name: str, model: str, *, seeds: int | None = None,
            epochs: int | None = None, seed: int = 0, changes: dict | None = None) -> dict:
    """`model` trained on the labels, once per seed (one vectorised program).

    `changes` (config field -> value) are applied last.
    """
    c = self.setup.config(model, epochs=epochs)
    _set_seed(c, seed)
    c.sweep.seed = _seed_axis(self.setup.seeds if seeds is None else seeds, seed)
    return self.run(name, config_lib.override(c, changes or {}))

  def distill(self, name: str, model: str, teacher: str, *, temperatures: Sequence[float],
              alphas: Sequence[float], kinds: Sequence[str] = ('kl',),
              seeds: int | None = None, epochs: int | None = None, seed: int = 0,
              changes: dict | None = None) -> dict:
    """`model` taught by the run in `teacher` (a path), over T × alpha × kind × seed.

    With one seed, the run uses `seed` (e.g. the chain it belongs to) for its
    initialisation, dropout and augmentation, and as its data seed; a seed
    sweep counts up from `seed`, each member with its own data order.
    """
    c = self.setup.config(model, epochs=epochs)
    _set_seed(c, seed)
    c.teacher.workdir = teacher
    c.distill.temperature, c.distill.alpha, c.distill.kind = (
        float(temperatures[0]), float(alphas[0]), kinds[0])
    c.sweep.temperature = tuple(float(t) for t in temperatures) if len(temperatures) > 1 else ()
    c.sweep.alpha = tuple(float(a) for a in alphas) if len(alphas) > 1 else ()
    c.sweep.kind = tuple(kinds) if len(kinds) > 1 else ()
    c.sweep.seed = _seed_axis(self.setup.seeds if seeds is None else seeds, seed)
    return self.run(name, config_lib.override(c, changes or {}))

  def teacher_of(self, name: str) -> str:
    """A finished stage as a teacher: the run itself, or its first member."""
    result = self.results[name]
    return result['members'][0]['workdir'] if 'members' in result else result['workdir']

  def wall_minutes(self) -> float:
    """Minutes since this invocation started: the stages it ran, not those it skipped."""
    return (time.perf_counter() - self.start) / 60

  def stage_minutes(self) -> float:
    """Minutes of every stage of this invocation, including those run before it."""
    times_path = os.path.join(self.workdir, 'stage_seconds.json')
    seconds = report.read_json(times_path) if os.path.exists(times_path) else {}
    return sum(seconds.get(name, 0) for name in self.results) / 60


def _set_seed(c: ml_collections.ConfigDict, seed: int) -> None:
  # One seed for the model (init, dropout, augmentation) and the data order:
  # runs compared across seeds differ in both, never in one alone.
  c.seed = seed
  c.data_seed = seed


def _seed_axis(seeds: int, first: int = 0) -> tuple:
  return tuple(range(first, first + seeds)) if seeds > 1 else ()


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
  candidates = [k for k, rows in groups.items() if not any(_diverged(r) for r in rows)]
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


def _diverged(run: dict) -> bool:
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
  diverged = sum(_diverged(r) for r in rows)
  if diverged:
    return f'diverged ({diverged} of {len(rows)} runs)'
  mean, std = analysis.mean_std([100 * r[field] for r in rows])
  return f'{mean:.2f}%' if len(rows) == 1 else f'{mean:.2f} ± {std:.2f}%'


def mean_accuracy(rows: list[dict], field: str = 'test_accuracy') -> float:
  """The mean of `field` over `rows`; NaN when a run diverged (it has none)."""
  if any(_diverged(r) or r.get(field) is None for r in rows):
    return float('nan')
  return float(np.mean([r[field] for r in rows]))


def plot_curves(path: str, curves: dict[str, list[dict]], title: str) -> None:
  """Test accuracy against epoch, one line per label (mean over its runs)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, rows in curves.items():
    histories = []
    for row in rows:
      if _diverged(row):
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


def chosen_text(chosen) -> str:
  """A selection's `chosen` settings as text ('T=5, alpha=0.1') or a label as it is."""
  if isinstance(chosen, dict):
    return setting_text(list(chosen), list(chosen.values()))
  return str(chosen)


def make_setup(preset: dict, *, dataset: str | None = None, epochs: int = 0, seeds: int = 0,
               train_examples: int = -1, quick: bool = False, data_dir: str = '',
               sweep_mode: str = 'auto') -> tuple[Setup, dict]:
  """The Setup and the preset a launcher runs, from a preset and its flags' values.

  `quick` shrinks both (see `shrunk` and `shrunk_preset`); 0 / -1 / None
  take the preset's value.
  """
  if quick:
    preset = shrunk_preset(preset)
  setup = Setup(
      dataset=dataset or preset['dataset'], recipe=preset.get('recipe', 'sgd'),
      epochs=epochs or preset['epochs'], seeds=seeds or preset.get('seeds', 1),
      train_examples=preset.get('train_examples', 0) if train_examples == -1 else train_examples,
      validation_fraction=preset.get('validation_fraction', VALIDATION_FRACTION),
      batch_size=preset.get('batch_size', 128), model_options=preset.get('model_options', {}),
      quick=quick, data_dir=data_dir, sweep_mode=sweep_mode)
  return setup, preset


def launch(presets: dict[str, dict], body: Callable[[Stages, dict], str], *,
           default_preset: str) -> None:
  """Parses the shared flags and runs `body(stages, preset)` guarded by kdjax's CLI rules."""

  def main(argv):
    if len(argv) > 1:
      cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
    if not WORKDIR.value:
      cli.fail('--workdir is required')
    cli.configure_cache()
    cli.join_job()  # --coordinator: one job over many processes, as kdjax.main
    name = PRESET.value or default_preset
    if name not in presets:
      cli.fail(f'--preset={name} is unknown; known: {", ".join(presets)}')
    preset = presets[name]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
      sys.path.insert(0, root)

    def go():
      for flag, value in (('--seeds', SEEDS.value), ('--epochs', EPOCHS.value)):
        if value < 0:
          raise ConfigError(f'{flag}={value} must be >= 0')
      if TRAIN_EXAMPLES.value < -1:
        raise ConfigError(f'--train_examples={TRAIN_EXAMPLES.value} must be >= -1')
      setup, preset_now = make_setup(
          preset, dataset=DATASET.value, epochs=EPOCHS.value, seeds=SEEDS.value,
          train_examples=TRAIN_EXAMPLES.value, quick=QUICK.value, data_dir=DATA_DIR.value)
      from kdjax.data import catalog
      catalog.get_info(setup.dataset)  # an unknown name fails here, in one line
      # Not created here: each stage's run makes its directory once its
      # checks pass, so a refused first stage leaves nothing behind.
      workdir = os.path.abspath(WORKDIR.value)
      stages = Stages(workdir, setup)
      print(body(stages, dict(preset_now, name=name)), flush=True)

    cli.run_guarded(go)

  app.run(main)


def command_line() -> str:
  """The command that is running, for the report."""
  module = os.path.splitext(os.path.basename(sys.argv[0]))[0]
  return ' '.join([f'python -m experiments.{module}', *sys.argv[1:]])
