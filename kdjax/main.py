"""Trains one model from a config file.

  python -m kdjax.main --config=configs/mnist_teacher.py --workdir=/tmp/teacher \
      [--config.num_epochs=3 ...]

A teacher or a student trained alone has no `teacher.workdir`; a distilled
student points `--config.teacher.workdir` at a finished teacher run.

A multi-process job (several hosts, or several processes on one) runs the
same command in every process with `--coordinator=HOST:PORT
--num_processes=N --process_id=I`, or `--coordinator=auto` where JAX detects
the cluster itself (SLURM, Cloud TPU, Kubernetes). All processes form one
device mesh; process 0 writes the results.
"""

import sys

from absl import flags
from ml_collections import config_flags

from kdjax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'HOST:PORT of process 0 in a multi-process job, or "auto" to '
    'detect the cluster (SLURM, Cloud TPU, Kubernetes).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index in the job.')


def _add_config_root_to_path(argv: list[str]) -> None:
  """Lets a config file import its siblings (`from configs import base`)."""
  import os
  for arg in argv:
    if arg.startswith('--config='):
      root = os.path.dirname(os.path.dirname(os.path.abspath(arg.split('=', 1)[1])))
      if root not in sys.path:
        sys.path.insert(0, root)


def main(argv: list[str]) -> None:
  _add_config_root_to_path(argv)
  try:
    flags.FLAGS(argv)
  except flags.Error as e:
    cli.fail(str(e).splitlines()[0])
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown --config.field or a wrong type.
    cli.fail(f'bad --config override: {str(e).splitlines()[0]}')
  if _WORKDIR.value is None:
    cli.fail('--workdir is required')
  try:
    config = _CONFIG.value
  except Exception as e:  # the config file itself failed to load
    cli.fail(f'cannot load --config: {str(e).splitlines()[0]}')
  if config is None:
    cli.fail('--config is required (a file in configs/)')
  if _COORDINATOR.value:
    cli.init_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _NUM_PROCESSES.value is not None or _PROCESS_ID.value is not None:
    cli.fail('--num_processes and --process_id need --coordinator')
  # Import after flag parsing so that `--help` and flag errors are fast.
  from kdjax import train
  cli.run_guarded(train.train_and_evaluate, config, _WORKDIR.value)


if __name__ == '__main__':
  main(sys.argv)
