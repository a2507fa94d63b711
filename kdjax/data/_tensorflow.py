"""TensorFlow, imported without the log lines it writes straight to stderr.

TensorFlow's native libraries log (oneDNN notices, absl's "log messages
before InitializeLog" warning) on file descriptor 2 while they load, and
recent versions ignore a TF_CPP_MIN_LOG_LEVEL set from inside the process.
kdjax keeps stderr for its own one-line errors, so the first import runs
with descriptor 2 pointed at /dev/null. Python errors still propagate.
"""

import contextlib
import os
import sys


@contextlib.contextmanager
def _stderr_silenced():
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as devnull:
      os.dup2(devnull.fileno(), 2)
      yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def load():
  """`import tensorflow` (quietly the first time); returns the module."""
  if 'tensorflow' not in sys.modules:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
    with _stderr_silenced():
      import tensorflow  # noqa: F401
  return sys.modules['tensorflow']
