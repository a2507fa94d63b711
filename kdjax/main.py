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

import importlib.machinery
import importlib.util
import os
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from kdjax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and results.')


def _config_argument(argv: list[str]) -> str | None:
  """The value of the last --config (`FILE` or `FILE:ARGUMENT`), as absl reads it, or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      value = arg.split('=', 1)[1]
    elif arg == '--config' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _add_config_root_to_path(path: str) -> None:
  """Lets a config file import its siblings (`from configs import base`)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  if root not in sys.path:
    sys.path.insert(0, root)


def _check_config_file(argument: str) -> None:
  """Runs the config file once, so that its mistakes are named as such, in one line.

  ml_collections defers a missing file to the first use of the config (a
  multi-line IOError) and lets the file's own exceptions escape as
  tracebacks or as if an override were wrong.
  """
  path, *extra = argument.split(':', 1)
  if not os.path.isfile(path):
    cli.fail(f'--config={path}: no such file; give a config file, e.g. '
             'configs/mnist_student.py')
  try:
    # A source loader reads any file name, as ml_collections does.
    loader = importlib.machinery.SourceFileLoader('_kdjax_config_check', path)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, 'get_config', None)):
      cli.fail(f'--config={path}: the file defines no get_config()')
    config = module.get_config(*extra)
  except Exception as e:  # pylint: disable=broad-except  # anything the file raises
    cli.fail(f'cannot load --config={path}: {type(e).__name__}: {_first_line(e)}')
  if not isinstance(config, ml_collections.ConfigDict):
    cli.fail(f'--config={path}: get_config() returned {type(config).__name__}, '
             'not an ml_collections.ConfigDict')


def _first_line(error: BaseException) -> str:
  lines = str(error).strip().splitlines()
  return lines[0] if lines else ''


def _override_error(error: Exception, argv: list[str]) -> str:
  """One line for an override ml_collections refused: which flag, and why."""
  overrides = [a for a in argv if a.startswith('--config.')]
  if isinstance(error, (KeyError, AttributeError)):
    # ml_collections raises KeyError('name') for a field the config lacks.
    name = str(error).strip('"\'')
    for arg in overrides:
      path = arg[len('--config.'):].split('=', 1)[0].split('.')
      if name in path:
        block = '.'.join(path[:path.index(name)])
        if block == 'model':
          return (f'{arg}: the config file\'s model block has no option {name!r} '
                  '(its options are those the file sets; add the option there)')
        where = f'config.{block}' if block else 'the config'
        return (f'{arg}: {where} has no field {name!r} '
                '(kdjax/config.py:default() lists every field)')
  return f'bad --config override: {_first_line(error)}'


def main(argv: list[str]) -> None:
  argument = _config_argument(argv)
  if argument is None and any(a.startswith('--config.') for a in argv):
    cli.fail('--config is required (a file in configs/) for --config.FIELD overrides')
  if argument is not None:
    _add_config_root_to_path(argument.split(':', 1)[0])
    _check_config_file(argument)
  try:
    flags.FLAGS(argv)
  except flags.Error as e:
    cli.fail(_first_line(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown --config.field or a wrong type.
    cli.fail(_override_error(e, argv))
  if not _WORKDIR.value:  # '' would be the current directory
    cli.fail('--workdir is required')
  config = _CONFIG.value
  if config is None:
    cli.fail('--config is required (a file in configs/)')
  cli.configure_cache()
  cli.join_job()
  # Import after flag parsing so that `--help` and flag errors are fast.
  # train_and_evaluate refuses a config that cannot run (kdjax.train.preflight)
  # before it writes anything into the workdir.
  from kdjax import train
  cli.run_guarded(train.train_and_evaluate, config, _WORKDIR.value)


if __name__ == '__main__':
  main(sys.argv)
