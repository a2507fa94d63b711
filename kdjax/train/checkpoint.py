"""Student checkpoints through orbax's CheckpointManager.

A checkpoint holds the whole `TrainState` (params, model state, optimizer
state, step, RNG) and a JSON `meta` item with the epoch, the metric history
and the best-so-far values, which is all a run needs to continue exactly
where it stopped. Writes are atomic (orbax finalises a step directory only
once it is complete), and at most `keep` are kept.
"""

import os

import jax
import orbax.checkpoint as ocp

from kdjax.errors import WorkdirError


class Checkpoints:
  """The checkpoints of one run, in `<workdir>/checkpoints`, indexed by epoch."""

  def __init__(self, workdir: str, *, keep: int = 2):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=('state', 'meta'))

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def save(self, epoch: int, state, meta: dict) -> None:
    """Saves and waits until the checkpoint is on disk."""
    self._manager.save(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self._manager.wait_until_finished()

  def restore(self, epoch: int, abstract_state):
    """Returns `(state, meta)` saved at `epoch`, laid out like `abstract_state`."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return restored['state'], restored['meta']

  def close(self):
    self._manager.close()


def restore_variables(workdir: str, epoch: int, abstract_state):
  """Reads params and model state of another run (a teacher) without changing it."""
  manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(read_only=True, create=False),
      item_names=('state', 'meta'))
  try:
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = manager.restore(epoch, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
  except Exception as e:  # orbax raises many types for unreadable data
    raise WorkdirError(f'teacher checkpoint {manager.directory}/{epoch} cannot be read '
                       f'({type(e).__name__}); retrain the teacher') from None
  finally:
    manager.close()
  state = restored['state']
  return {'params': state.params, **state.model_state}
