"""kdjax's tests.

Every program the tests compile, in the test process and in the processes
the tests start, is compiled at XLA's backend optimisation level 0
(`XLA_FLAGS`, set by conftest.py): the suite's programs are small and
compiled once or twice, so compiling dominates and level 0 compiles several
times faster (a `jax.random.normal`: 0.25 s against 2 s on a 2-core CPU).
It changes how fast the code runs, not what it computes; two runs a test
compares are compiled alike.
"""

import os

XLA_FLAGS = '--xla_backend_optimization_level=0'


def xla_flags(*extra: str) -> str:
  """XLA_FLAGS for a process a test starts: the test process's flags and `extra`."""
  return ' '.join((os.environ.get('XLA_FLAGS', XLA_FLAGS), *extra))
