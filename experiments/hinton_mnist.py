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
from absl import app, flags

from experiments import common
from experiments import hinton_mnist_report as hinton_report
from kdjax import cli
from kdjax import config as config_lib
from kdjax.errors import KDError

# --workdir, --quick, --seeds, --data_dir and --train_examples are the
# launchers' shared flags (experiments/common/flags.py); --quick here is the demo
# (2 epochs, a small grid), --seeds 0 means 1 and --train_examples -1 means all.
_OMIT = flags.DEFINE_integer('omit', 3, 'The digit left out of the transfer set.')

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


def run(workdir: str, *, quick: bool, seeds: int, omit: int, data_dir: str = '',
        train_examples: int = 0) -> str:
  """Runs every stage (skipping finished ones), writes the report and returns its markdown."""
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
  text = hinton_report.write(stages, quick=quick, seeds=seeds, omit=omit, data_dir=data_dir)
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
