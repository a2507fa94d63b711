"""A run's directory: created or reused, its config compared, a finished run recognised.

Resume precedence: a workdir whose config.json matches the config resumes
from its latest checkpoint (or returns its results when it finished); one
that holds a different config is refused unless `config.overwrite`, which
removes that run's checkpoints and results; an empty or absent workdir
starts from scratch.
"""

import os
import shutil
import tempfile

from kdjax import config as config_lib
from kdjax import report
from kdjax.errors import WorkdirError

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'


def prepare(workdir: str, config_dict: dict, overwrite: bool) -> dict | None:
  """Makes `workdir` ready for this config; returns the finished results if the run is done."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'workdir {workdir} exists and is not a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} cannot be created: {e.strerror}') from None
  try:  # os.access says yes to root even on read-only mounts: really write
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-probe-'):
      pass
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} is not writable: {e.strerror}') from None
  config_path = os.path.join(workdir, CONFIG_FILE)
  results_path = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(config_path):
    changed = differing_saved_fields(workdir, config_dict)
    if changed and not overwrite:
      raise WorkdirError(
          f'workdir {workdir} holds a run with a different config '
          f'({", ".join(changed[:6])}{", ..." if len(changed) > 6 else ""}); '
          'use another --workdir, or pass --config.overwrite=True to replace that run')
    if changed:
      for name in ('checkpoints', RESULTS_FILE):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        elif os.path.exists(path):
          os.remove(path)
    elif os.path.exists(results_path):
      return report.read_json(results_path)
  report.write_json(config_path, config_dict)
  return None


def differing_saved_fields(workdir: str, config_dict: dict) -> list[str]:
  """Fields of the run saved in `workdir` that differ from `config_dict`.

  Fields added to kdjax since that run was saved take their defaults.
  """
  saved = report.read_json(os.path.join(workdir, CONFIG_FILE))
  saved = config_lib.to_json_dict(config_lib.from_json_dict(saved))
  return config_lib.differing_fields(saved, config_dict)
