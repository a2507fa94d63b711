"""The launchers' shared absl flags, and `launch`, which parses them and runs a body."""

import os
import sys
from typing import Callable

from absl import app, flags

from experiments.common.setup import make_setup
from experiments.common.stages import Stages
from kdjax import cli
from kdjax.errors import ConfigError

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
SWAP_MODEL = flags.DEFINE_multi_string(
    'swap_model', [], 'NAME=PACKAGE.MODULE:FACTORY[=JSON]: train the preset\'s model NAME '
    '(teacher, student, assistant...) as your own Flax module, built by FACTORY(num_classes, '
    '**JSON options); repeatable (docs/custom.md).')

# The repository root (above experiments/), where configs/ is imported from.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    if _ROOT not in sys.path:
      sys.path.insert(0, _ROOT)

    def go():
      for flag, value in (('--seeds', SEEDS.value), ('--epochs', EPOCHS.value)):
        if value < 0:
          raise ConfigError(f'{flag}={value} must be >= 0')
      if TRAIN_EXAMPLES.value < -1:
        raise ConfigError(f'--train_examples={TRAIN_EXAMPLES.value} must be >= -1')
      setup, preset_now = make_setup(
          preset, dataset=DATASET.value, epochs=EPOCHS.value, seeds=SEEDS.value,
          train_examples=TRAIN_EXAMPLES.value, quick=QUICK.value, data_dir=DATA_DIR.value,
          swaps=SWAP_MODEL.value)
      from kdjax.data import catalog
      catalog.get_info(setup.dataset)  # an unknown name fails here, in one line
      # Not created here: each stage's run makes its directory once its
      # checks pass, so a refused first stage leaves nothing behind.
      workdir = os.path.abspath(WORKDIR.value)
      stages = Stages(workdir, setup)
      print(body(stages, dict(preset_now, name=name)), flush=True)

    cli.run_guarded(go)

  app.run(main)
