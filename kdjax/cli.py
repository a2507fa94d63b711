"""What every kdjax command line shares: one-line errors and exit codes."""

import sys

from absl import flags

from kdjax import caching
from kdjax.errors import KDError, Preempted

EXIT_USER_ERROR = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what schedulers expect of a terminated job


CACHE_DIR = flags.DEFINE_string(
    'cache_dir', None, 'Where decoded datasets and compiled programs are kept between runs '
    '(default: $KDJAX_CACHE_DIR, else $XDG_CACHE_HOME/kdjax, else ~/.cache/kdjax).')
CACHE = flags.DEFINE_bool(
    'cache', True, 'Reuse decoded datasets and compiled programs across processes '
    '(--nocache: decode and compile afresh, write nothing there).')


COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'HOST:PORT of process 0 in a multi-process job, or "auto" to '
    'detect the cluster (SLURM, Cloud TPU, Kubernetes).')
NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index in the job.')


def join_job() -> None:
  """Joins the multi-process job the flags name (kdjax.main and every launcher)."""
  if COORDINATOR.value:
    init_distributed(COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
  elif NUM_PROCESSES.value is not None or PROCESS_ID.value is not None:
    fail('--num_processes and --process_id need --coordinator')


def configure_cache() -> None:
  """Applies --cache_dir / --nocache (kdjax.caching) to this process."""
  caching.configure((CACHE_DIR.value or caching.default_dir()) if CACHE.value else None)


def fail(message: str, code: int = EXIT_USER_ERROR):
  """Prints `error: <message>` as one line on stderr and exits with `code`."""
  # Messages quoted from other libraries may run over several lines; the
  # contract (and the scripts that read it) is one line.
  lines = str(message).strip().splitlines()
  print(f'error: {lines[0] if lines else "failed"}', file=sys.stderr, flush=True)
  sys.exit(code)


def init_distributed(coordinator: str, num_processes: int | None,
                     process_id: int | None) -> None:
  """Joins a multi-process JAX job; one line and exit 2 if that fails."""
  auto = coordinator == 'auto'
  if not auto:
    host, _, port = coordinator.rpartition(':')
    if not host or not port.isdigit():
      fail(f'--coordinator={coordinator!r}: expected HOST:PORT or auto')
    if num_processes is None or process_id is None:
      fail('--coordinator=HOST:PORT needs --num_processes and --process_id')
    if not 0 <= process_id < num_processes:
      fail(f'--process_id={process_id} must be in [0, {num_processes})')
  import jax
  # CPU processes exchange collectives through gloo (accelerators use their own).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  try:
    jax.distributed.initialize(None if auto else coordinator,
                               num_processes=None if auto else num_processes,
                               process_id=None if auto else process_id)
  except (RuntimeError, ValueError) as e:
    fail(f'cannot join the job at --coordinator={coordinator}: {str(e).splitlines()[0]}')


def run_guarded(fn, *args, **kwargs):
  """Calls fn; a user mistake becomes one line on stderr and exit status 2."""
  from absl import logging
  # Library INFO logs (orbax's per-save lines) would drown the progress lines.
  logging.set_verbosity(logging.WARNING)
  # TFDS warns about a dataset folder it cannot read before kdjax says, in one
  # line, that the dataset is missing and how to prepare it.
  logging.get_absl_logger().addFilter(
      lambda record: 'has no dataset_info.json' not in record.getMessage())
  # A failed asynchronous write (full disk) is reported once, by kdjax; the
  # same failure re-logged by asyncio at exit would bury that line.
  import logging as std_logging
  import warnings
  std_logging.getLogger('asyncio').setLevel(std_logging.CRITICAL)
  warnings.filterwarnings('ignore', message='coroutine .* was never awaited')
  try:
    return fn(*args, **kwargs)
  except KDError as e:
    fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
  except Preempted as e:
    print(str(e), file=sys.stderr, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except OSError as e:  # the filesystem refused (full, read-only, gone): not a bug
    where = f'{e.filename}: ' if e.filename else ''
    fail(f'{where}{e.strerror or e}')
  except KeyboardInterrupt:
    fail('interrupted', 130)
