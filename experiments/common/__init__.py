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

One module per concern, all re-exported here for `common.NAME`:

  flags.py    the shared absl flags and `launch`
  setup.py    recipes (`base_config`), `Setup`, `make_setup`, `shrunk`, `shrunk_preset`,
              `--swap_model` (`parse_swaps`, `preset_models`)
  stages.py   `Stages`: run, alone, distill, teacher_of, wall and stage minutes
  rows.py     report rows read back from results.json, selections, accuracy text
  reports.py  report.md and report.json, plots, which process writes, the command line
"""

from experiments.common.flags import (ALPHA, DATA_DIR, DATASET, EPOCHS, PRESET, QUICK, SEEDS,
                                      SWAP_MODEL, TEMPERATURE, TRAIN_EXAMPLES, WORKDIR, launch)
from experiments.common.reports import (command_line, plot_curves, save_figure, sync,
                                        write_report, writes_files)
from experiments.common.rows import (ROW_SETTINGS, accuracy_text, chosen_text, group,
                                     is_diverged, mean_accuracy, members, oracle_text, row,
                                     run_settings, select, setting_text, validation_text)
from experiments.common.setup import (QUICK_BATCH, QUICK_EXAMPLES, QUICK_WIDTH,
                                      VALIDATION_FRACTION, VALIDATION_SEED, Setup, base_config,
                                      make_setup, parse_swaps, preset_models, shrunk,
                                      shrunk_preset)
from experiments.common.stages import Stages

__all__ = [
    'ALPHA', 'DATA_DIR', 'DATASET', 'EPOCHS', 'PRESET', 'QUICK', 'SEEDS', 'SWAP_MODEL', 'TEMPERATURE',
    'TRAIN_EXAMPLES', 'WORKDIR', 'launch', 'command_line', 'plot_curves', 'save_figure', 'sync',
    'write_report', 'writes_files', 'ROW_SETTINGS', 'accuracy_text', 'chosen_text', 'group',
    'is_diverged', 'mean_accuracy', 'members', 'oracle_text', 'row', 'run_settings', 'select',
    'setting_text', 'validation_text', 'QUICK_BATCH', 'QUICK_EXAMPLES', 'QUICK_WIDTH',
    'VALIDATION_FRACTION', 'VALIDATION_SEED', 'Setup', 'base_config', 'make_setup', 'shrunk',
    'shrunk_preset', 'parse_swaps', 'preset_models', 'Stages'
]
