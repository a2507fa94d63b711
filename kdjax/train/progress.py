"""A run's progress: per-epoch records, the clock, the one line printed per epoch.

`Progress` is what a checkpoint carries besides the state (history and
train seconds), so a resumed run continues its curves and its clock.
"""

import dataclasses
import signal

import jax
import numpy as np


def say(message: str) -> None:
  """Prints on process 0 only (every process of a job runs the same loop)."""
  if jax.process_index() == 0:
    print(message, flush=True)


def format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def due(epoch: int, every: int, last: int) -> bool:
  """The one cadence rule: every `every` epochs, and always at the last one."""
  return epoch % every == 0 or epoch == last


@dataclasses.dataclass
class Progress:
  """Per-member epoch records and the training clock of a run.

  Attributes:
    history: one list of records per member; a record has `epoch`, `step`,
      `train_loss`, `train_accuracy`, `epoch_seconds`, the epoch mean of every
      other metric of the step as `train_<metric>` (each named loss term's unweighted
      value as `train_term/<name>`) and, on evaluated epochs, `<split>_accuracy`
      for every evaluation split.
    train_seconds: seconds spent in epochs, over every process that ran it.
    start_epoch: the epoch this process started after (0, or the resumed one).
    resumed_seconds: `train_seconds` when this process started.
  """
  history: list
  train_seconds: float = 0.0
  start_epoch: int = 0
  resumed_seconds: float = 0.0

  @classmethod
  def start(cls, num_members: int) -> 'Progress':
    return cls(history=[[] for _ in range(num_members)])

  @classmethod
  def resumed(cls, meta: dict, epoch: int) -> 'Progress':
    return cls(history=meta['history'], train_seconds=meta['train_seconds'],
               start_epoch=epoch, resumed_seconds=meta['train_seconds'])

  def meta(self) -> dict:
    """What a checkpoint saves besides the state."""
    return {'history': self.history, 'train_seconds': self.train_seconds}

  def record(self, epoch: int, step: int, metrics: dict, evals: dict, seconds: float) -> list:
    """Adds one record per member; returns them.

    `metrics` holds per-step arrays [steps, members]; `evals` maps a split
    to its correctness [members, examples] (empty on epochs not evaluated).
    """
    self.train_seconds += seconds
    records = []
    for m, member_history in enumerate(self.history):
      record = {'epoch': epoch, 'step': step,
                'train_loss': float(metrics['loss'][:, m].mean()),
                'train_accuracy': float(metrics['accuracy'][:, m].mean()),
                'epoch_seconds': seconds}
      # An objective's own terms (e.g. a method's unweighted loss) as `train_<term>`.
      for term, values in metrics.items():
        if term not in ('loss', 'accuracy'):
          record[f'train_{term}'] = float(values[:, m].mean())
      for name, correct in evals.items():
        record[f'{name}_accuracy'] = float(correct[m].mean())
      member_history.append(record)
      records.append(record)
    return records

  def eta(self, epoch: int, num_epochs: int) -> float:
    """Seconds left, from the epochs this process ran."""
    return ((num_epochs - epoch) * (self.train_seconds - self.resumed_seconds)
            / (epoch - self.start_epoch))

  def line(self, epoch: int, num_epochs: int, examples_per_epoch: int,
           member_note: str = '', terms=()) -> str:
    """The progress line of `epoch` (member 0's numbers for a sweep).

    `terms`: the loss's named terms (`kdjax.terms.describe` of member 0's config); the
    line then spells the loss out, each weight beside its term's epoch mean.
    """
    shown = self.history[0][-1]
    accuracies = ''.join(f'  {name} {100 * shown[f"{name}_accuracy"]:.2f}%'
                         for name in ('train', 'validation', 'test')
                         if f'{name}_accuracy' in shown)
    seconds = shown['epoch_seconds']
    return (f'epoch {epoch}/{num_epochs}  step {shown["step"]}  '
            f'loss {shown["train_loss"]:.4f}{terms_text(shown, terms)}{accuracies}'
            f'{member_note}  '
            f'{examples_per_epoch / seconds:,.0f} ex/s  {seconds:.1f}s/epoch  '
            f'ETA {format_seconds(self.eta(epoch, num_epochs))}')


def terms_text(record: dict, terms) -> str:
  """' = 0.1·ce 0.5213 + 0.9·kd@T4 0.4102' (each weight, label and epoch mean) for the terms
  whose values `record` holds (`train_term/<name>`); '' when it holds none."""
  keys = [('train_term/' + t['name'], t) for t in terms]
  shown = [f'{t["weight"]:.4g}·{t["label"]} {record[key]:.4f}' for key, t in keys
           if key in record]
  return f' = {" + ".join(shown)}' if shown else ''


def selection_fields(records: list[dict]) -> dict:
  """What a member's history says when selection is honest.

  The epoch is chosen on validation accuracy (the earliest of equals) and
  the test accuracy of that epoch is reported beside it; the best test
  accuracy over epochs is kept only under `oracle`, the name of what it is.
  """
  evaluated = [h for h in records if 'test_accuracy' in h]
  best_test = max(evaluated, key=lambda h: h['test_accuracy'])
  out = {'oracle': {'best_test_accuracy': best_test['test_accuracy'],
                    'best_test_epoch': best_test['epoch'],
                    'note': 'chosen on the test set: not a valid selection'}}
  with_validation = [h for h in evaluated if 'validation_accuracy' in h]
  if with_validation:
    best = max(with_validation, key=lambda h: h['validation_accuracy'])
    out.update(best_validation_epoch=best['epoch'],
               best_validation_accuracy=best['validation_accuracy'],
               test_accuracy_at_best_validation=best['test_accuracy'])
  return out


class PreemptionGuard:
  """Notes a SIGTERM instead of dying, so the loop can checkpoint and stop."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self) -> 'PreemptionGuard':
    try:
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    except ValueError:  # signals can only be caught on the main thread
      self._previous = None
    return self

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    return False


def first_nonfinite(losses: np.ndarray) -> tuple[int, int] | None:
  """(step, member) of the first non-finite loss in [steps, members], or None."""
  bad = np.argwhere(~np.isfinite(losses))
  return None if not len(bad) else (int(bad[0][0]), int(bad[0][1]))
