"""Student checkpoints through orbax's CheckpointManager.

A checkpoint holds the whole `TrainState` (params, model state, optimizer
state, step, RNG) and a JSON `meta` item with the epoch, the metric history
and the best-so-far values, which is all a run needs to continue exactly
where it stopped. Writes are atomic (orbax finalises a step directory only
once it is complete), and at most `keep` are kept.
"""

import contextlib
import io
import os
import re
import time

import jax
import orbax.checkpoint as ocp
from absl import logging

from kdjax.errors import WorkdirError


class Checkpoints:
  """The checkpoints of one run, in `<workdir>/checkpoints`, indexed by epoch."""

  def __init__(self, workdir: str, *, keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=('state', 'meta'))
    self._closed = False

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state, meta: dict) -> None:
    """Saves and waits until the checkpoint is on disk.

    Raises:
      WorkdirError: the write failed (disk full, quota, I/O error). The
        unfinished checkpoint is never finalised, so the previous one stays
        the latest and a rerun resumes from it.
    """
    try:
      # A failed write is reported below in one line; orbax's own error logs
      # (with its writer threads' tracebacks) would only repeat it.
      with _absl_verbosity(logging.FATAL), contextlib.redirect_stderr(io.StringIO()):
        self._manager.save(epoch, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
        self._manager.wait_until_finished()
    except Exception as e:  # orbax wraps OSErrors from its writer threads
      previous = [s for s in self._manager.all_steps() if s != epoch]
      # Writes still in flight fail after orbax stops waiting and print
      # tracebacks from their threads; let them land in the discarded buffer.
      with _absl_verbosity(logging.FATAL), contextlib.redirect_stderr(io.StringIO()):
        try:
          self._manager.close()
        except Exception:  # pylint: disable=broad-except
          pass
        time.sleep(1.0)
      self._closed = True
      kept = (f'the checkpoint of epoch {max(previous)} is intact' if previous
              else 'no earlier checkpoint exists')
      raise WorkdirError(
          f'could not write the checkpoint of epoch {epoch} in {self.directory} '
          f'({_reason(e)}); {kept}; free some space and rerun the same command to resume'
      ) from None

  def restore(self, epoch: int, abstract_state):
    """Returns `(state, meta)` saved at `epoch`, laid out like `abstract_state`."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def close(self):
    if not self._closed:
      self._manager.close()
      self._closed = True


@contextlib.contextmanager
def _absl_verbosity(level):
  previous = logging.get_verbosity()
  logging.set_verbosity(level)
  try:
    yield
  finally:
    logging.set_verbosity(previous)


def _reason(error: BaseException) -> str:
  """The OS-level cause of `error` in a few words, e.g. 'No space left on device'."""
  seen = error
  while seen is not None:
    if isinstance(seen, OSError) and seen.strerror:
      return seen.strerror
    # tensorstore reports OS errors inside its message: '...: File too large [os_error_code=27]'
    found = re.search(r':\s*([^:\[]+?)\s*\[os_error_code', str(seen))
    if found:
      return found.group(1)
    seen = seen.__cause__ or seen.__context__
  text = str(error).splitlines()[0] if str(error) else ''
  return f'{type(error).__name__}: {text[:200]}'.rstrip(': ')


def restore_variables(workdir: str, epoch: int):
  """Reads params and model state of another run (a teacher) without changing it.

  Restored as saved, without a target: the teacher's optimizer state and
  bookkeeping fields are not needed, so a teacher saved by an earlier
  version of the train state still loads.
  """
  with _absl_verbosity(logging.ERROR):  # orbax warns that read-only is read-only
    manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), 'checkpoints'),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False),
        item_names=('state', 'meta'))
  try:
    with _absl_verbosity(logging.ERROR):
      state = manager.restore(epoch, args=ocp.args.Composite(
          state=ocp.args.StandardRestore()))['state']
    variables = {'params': state['params'], **(state.get('model_state') or {})}
  except Exception as e:  # orbax raises many types for unreadable data
    raise WorkdirError(f'teacher checkpoint {manager.directory}/{epoch} cannot be read '
                       f'({type(e).__name__}); retrain the teacher') from None
  finally:
    manager.close()
  return variables
