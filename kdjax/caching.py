"""What kdjax keeps between processes: decoded datasets and compiled programs.

One directory holds both:
  DIR/data/NAME/VERSION/FINGERPRINT/SPLIT.{images,labels}.npy
      a split decoded once from its TFDS copy and read back memory-mapped;
      FINGERPRINT hashes the TFDS copy's files (names, sizes, mtimes and
      dataset_info.json), so a changed copy is decoded again.
  DIR/xla/
      JAX's persistent compilation cache: a rerun, a resumed run, each seed
      of a launcher and each test load compiled programs instead of
      compiling them again.

DIR is, in this order: what `configure` was given (the CLI's --cache_dir, or
--nocache for none), $KDJAX_CACHE_DIR ('off' for none), $XDG_CACHE_HOME/kdjax,
~/.cache/kdjax. Nothing in the cache changes a result: a cache hit returns
the bytes a miss would compute.
"""

import logging
import os

ENV = 'KDJAX_CACHE_DIR'
OFF = 'off'
# Programs that compile faster than this are not worth a file each.
_MIN_COMPILE_SECONDS = 0.05

_configured: dict = {}  # {'dir': str | None} once chosen


def default_dir() -> str | None:
  """$KDJAX_CACHE_DIR ('off': None), else $XDG_CACHE_HOME/kdjax, else ~/.cache/kdjax."""
  value = os.environ.get(ENV)
  if value is not None:
    return None if value.strip().lower() in (OFF, '') else os.path.abspath(
        os.path.expanduser(value))
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'kdjax')


def configure(directory: str | None) -> None:
  """Uses `directory` for every cache of this process; None turns caching off.

  Sets JAX's persistent compilation cache to DIR/xla (or off). Called by the
  command-line entry points from their flags; `ensure()`, at the start of
  every run, calls it with `default_dir()` when nothing has.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=import-outside-toplevel
  if directory is not None:
    directory = os.path.abspath(os.path.expanduser(directory))
  _configured['dir'] = directory
  xla = os.path.join(directory, 'xla') if directory else None
  if jax.config.jax_compilation_cache_dir != xla:
    jax.config.update('jax_compilation_cache_dir', xla)
    # JAX opens its cache at the first compile; a new directory needs a
    # reset, which JAX announces at INFO level on stderr.
    logger = logging.getLogger('jax._src.compilation_cache')
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
      compilation_cache.reset_cache()
    finally:
      logger.setLevel(level)
  if xla:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', _MIN_COMPILE_SECONDS)


def directory() -> str | None:
  """The cache directory of this process: the configured one, else `default_dir()`."""
  return _configured['dir'] if 'dir' in _configured else default_dir()


def ensure() -> None:
  """Turns on the default compilation cache unless this process has chosen one.

  A compilation cache set through jax.config directly is left as it is.
  """
  import jax  # pylint: disable=import-outside-toplevel
  if 'dir' not in _configured and jax.config.jax_compilation_cache_dir is None:
    configure(default_dir())


def data_dir() -> str | None:
  """Where decoded datasets are kept, or None when caching is off."""
  root = directory()
  return os.path.join(root, 'data') if root else None
