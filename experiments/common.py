"""What the conv-net launchers share: flags, training recipes, stages, reports.

A launcher describes its experiment as stages, each one kdjax run (or one
vectorised sweep) in its own sub-directory of `--workdir`. Finished stages
are returned as they are and an interrupted one resumes from its checkpoint,
so rerunning a launcher's command continues where it stopped.
"""

import dataclasses
import os
import sys
import time
from typing import Callable, Sequence

import ml_collections
import numpy as np
from absl import app, flags

from kdjax import analysis, cli, report
from kdjax.errors import ConfigError

WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for all stages and the report.')
DATASET = flags.DEFINE_string('dataset', None, "TFDS name (default: the preset's).")
PRESET = flags.DEFINE_string('preset', None, 'Which set-up to run (see --helpfull).')
QUICK = flags.DEFINE_bool('quick', False, 'One short epoch on a few examples per stage.')
SEEDS = flags.DEFINE_integer('seeds', 0, "Seeds per student (0: the preset's).")
EPOCHS = flags.DEFINE_integer('epochs', 0, "Epochs per run (0: the preset's).")
TRAIN_EXAMPLES = flags.DEFINE_integer(
    'train_examples', -1, "Training examples per run (0: all, -1: the preset's).")
DATA_DIR = flags.DEFINE_string('data_dir', '', 'TFDS data dir ("" = default).')
TEMPERATURE = flags.DEFINE_float('temperature', 4.0,
                                 'Distillation temperature (launchers without a T grid).')
ALPHA = flags.DEFINE_float('alpha', 0.9, 'Weight of the soft term (launchers without a grid).')

QUICK_EXAMPLES = 64
QUICK_BATCH = 32


def base_config(recipe: str) -> ml_collections.ConfigDict:
  """A run config for `recipe`: 'sgd' (configs/cifar_resnet.py) or 'adam' (seed 004)."""
  from configs import cifar_resnet
  c = cifar_resnet.get_config()
  if recipe == 'adam':  # seed 004: Adam 1e-3, constant, no weight decay
    c.optimizer.name = 'adam'
    c.optimizer.learning_rate = 1e-3
    c.optimizer.weight_decay = 0.0
    c.schedule.name = 'constant'
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
  validation_fraction: float = 0.0
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
    c.batch_size = self.batch_size
    from kdjax.data import catalog
    if catalog.get_info(self.dataset).image_shape[-1] == 1:
      c.augment.max_shift = 2  # 28×28 grayscale: a smaller shift than CIFAR's 4
    if self.quick:
      c.num_epochs, c.eval_every, c.checkpoint_every = 1, 1, 1
      c.train_examples = QUICK_EXAMPLES
      c.batch_size = c.eval_batch_size = QUICK_BATCH
    return c


class Stages:
  """Runs named stages under one workdir and keeps their results."""

  def __init__(self, workdir: str, setup: Setup):
    self.workdir = workdir
    self.setup = setup
    self.results: dict[str, dict] = {}
    self.start = time.perf_counter()

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def run(self, name: str, config: ml_collections.ConfigDict) -> dict:
    from kdjax import train
    print(f'== stage {name} ==', flush=True)
    result = train.train_and_evaluate(config, self.path(name))
    result['workdir'] = self.path(name)
    self.results[name] = result
    return result

  def alone(self, name: str, model: str, *, seeds: int | None = None,
            epochs: int | None = None, seed: int = 0) -> dict:
    """`model` trained on the labels, once per seed (one vectorised program)."""
    c = self.setup.config(model, epochs=epochs)
    c.seed = seed
    c.sweep.seed = _seed_axis(self.setup.seeds if seeds is None else seeds)
    return self.run(name, c)

  def distill(self, name: str, model: str, teacher: str, *, temperatures: Sequence[float],
              alphas: Sequence[float], kinds: Sequence[str] = ('kl',),
              seeds: int | None = None, epochs: int | None = None, seed: int = 0) -> dict:
    """`model` taught by the run in `teacher` (a path), over T × alpha × kind × seed.

    With one seed, the run uses `seed` (e.g. the chain it belongs to).
    """
    c = self.setup.config(model, epochs=epochs)
    c.seed = seed
    c.teacher.workdir = teacher
    c.distill.temperature, c.distill.alpha, c.distill.kind = (
        float(temperatures[0]), float(alphas[0]), kinds[0])
    c.sweep.temperature = tuple(float(t) for t in temperatures) if len(temperatures) > 1 else ()
    c.sweep.alpha = tuple(float(a) for a in alphas) if len(alphas) > 1 else ()
    c.sweep.kind = tuple(kinds) if len(kinds) > 1 else ()
    c.sweep.seed = _seed_axis(self.setup.seeds if seeds is None else seeds)
    return self.run(name, c)

  def teacher_of(self, name: str) -> str:
    """A finished stage as a teacher: the run itself, or its first member."""
    result = self.results[name]
    return result['members'][0]['workdir'] if 'members' in result else result['workdir']

  def wall_minutes(self) -> float:
    return (time.perf_counter() - self.start) / 60


def _seed_axis(seeds: int) -> tuple:
  return tuple(range(seeds)) if seeds > 1 else ()


members = report.members
group = report.group


def accuracy_text(rows: list[dict], field: str = 'test_accuracy') -> str:
  """'91.23%' for one run, '91.23 ± 0.40%' over seeds."""
  mean, std = analysis.mean_std([100 * r[field] for r in rows])
  return f'{mean:.2f}%' if len(rows) == 1 else f'{mean:.2f} ± {std:.2f}%'


def mean_accuracy(rows: list[dict], field: str = 'test_accuracy') -> float:
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
      results = report.read_json(os.path.join(row['workdir'], 'results.json'))
      histories.append([(h['epoch'], h['test_accuracy']) for h in results['history']
                        if 'test_accuracy' in h])
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
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_report(stages: Stages, *, title: str, command: str,
                 sections: list[tuple[str, list[str], list[list[str]]]],
                 data: dict, notes: str = '') -> str:
  """Writes report.md (tables) and report.json (numbers); returns the markdown."""
  md = [f'# {title}\n',
        f'Command: `{command}`; wall time of the stages run now: '
        f'{stages.wall_minutes():.1f} min; {stages.setup.seeds} seed(s) per student; '
        f'dataset `{stages.setup.dataset}`.\n']
  for heading, header, rows in sections:
    md.append(f'## {heading}\n')
    md.append(report.markdown_table(header, rows))
    md.append('')
  if notes:
    md.append(notes)
  text = '\n'.join(md)
  with open(os.path.join(stages.workdir, 'report.md'), 'w') as f:
    f.write(text)
  report.write_json(os.path.join(stages.workdir, 'report.json'), dict(
      data, wall_seconds=stages.wall_minutes() * 60, setup=dataclasses.asdict(stages.setup),
      stages={name: r['workdir'] for name, r in stages.results.items()}))
  return text


def launch(presets: dict[str, dict], body: Callable[[Stages, dict], str], *,
           default_preset: str) -> None:
  """Parses the shared flags and runs `body(stages, preset)` guarded by kdjax's CLI rules."""

  def main(argv):
    if len(argv) > 1:
      cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
    if not WORKDIR.value:
      cli.fail('--workdir is required')
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
      setup = Setup(
          dataset=DATASET.value or preset['dataset'], recipe=preset.get('recipe', 'sgd'),
          epochs=EPOCHS.value or preset['epochs'], seeds=SEEDS.value or preset.get('seeds', 1),
          train_examples=(preset.get('train_examples', 0) if TRAIN_EXAMPLES.value == -1
                          else TRAIN_EXAMPLES.value),
          validation_fraction=preset.get('validation_fraction', 0.0),
          batch_size=preset.get('batch_size', 128),
          model_options=preset.get('model_options', {}), quick=QUICK.value,
          data_dir=DATA_DIR.value)
      from kdjax.data import catalog
      catalog.get_info(setup.dataset)  # an unknown name fails here, in one line
      workdir = os.path.abspath(WORKDIR.value)
      os.makedirs(workdir, exist_ok=True)
      stages = Stages(workdir, setup)
      print(body(stages, dict(preset, name=name)), flush=True)

    cli.run_guarded(go)

  app.run(main)


def command_line() -> str:
  """The command that is running, for the report."""
  module = os.path.splitext(os.path.basename(sys.argv[0]))[0]
  return ' '.join([f'python -m experiments.{module}', *sys.argv[1:]])
