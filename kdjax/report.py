"""Files a run or an experiment leaves behind: JSON, markdown tables, plots."""

import json
import os
import tempfile

# Figures are files, never windows; matplotlib itself is imported only by the
# functions that draw (about half a second a process that draws nothing saves).
os.environ.setdefault('MPLBACKEND', 'Agg')


def write_json(path: str, obj) -> None:
  """Writes JSON atomically: readers see the old file or the whole new one."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.tmp-', suffix='.json')
  with os.fdopen(fd, 'w') as f:
    json.dump(obj, f, indent=2)
    f.write('\n')
  os.replace(tmp, path)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def members(results: dict) -> list[dict]:
  """One row per trained model in a run's results: a sweep's members, or the run itself."""
  if 'members' in results:
    return results['members']
  return [dict(results, workdir=results.get('workdir', ''))]


def group(rows: list[dict], keys=('temperature', 'alpha')) -> dict[tuple, list[dict]]:
  """Rows by the values of `keys` (e.g. the seeds of each grid point together)."""
  out = {}
  for row in rows:
    out.setdefault(tuple(row.get(k) for k in keys), []).append(row)
  return out


def plot_curves(history: list[dict], path: str, title: str = '') -> None:
  """Train loss and accuracies against epochs, side by side.

  Each curve has a point only where it was measured: train metrics every
  epoch, validation and test accuracy on the evaluated epochs.
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  epochs = [h['epoch'] for h in history]
  # A bare Figure (no pyplot, fixed margins): a sweep draws one per member.
  fig = Figure(figsize=(10, 4))
  fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.88 if title else 0.95,
                      wspace=0.22)
  ax_loss, ax_acc = fig.subplots(1, 2)
  ax_loss.plot(epochs, [h['train_loss'] for h in history], marker='o')
  ax_loss.set_xlabel('epoch')
  ax_loss.set_ylabel('train loss')
  if all(h['train_loss'] > 0 for h in history):
    ax_loss.set_yscale('log')
  for key, label in (('train_accuracy', 'train'), ('validation_accuracy', 'validation'),
                     ('test_accuracy', 'test')):
    measured = [h for h in history if key in h]
    if measured:
      ax_acc.plot([h['epoch'] for h in measured], [100 * h[key] for h in measured], marker='o',
                  label=label)
  ax_acc.set_xlabel('epoch')
  ax_acc.set_ylabel('accuracy (%)')
  ax_acc.legend()
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.savefig(path, dpi=100)


def plot_member_curves(histories: dict[str, list[dict]], path: str, title: str = '') -> None:
  """A sweep's members in one figure: train loss, and held-out accuracy where evaluated.

  The accuracy drawn is the validation split's when the runs hold one out,
  else the test split's (the axis says which).
  """
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  key = ('validation_accuracy' if any('validation_accuracy' in h for hist in histories.values()
                                      for h in hist) else 'test_accuracy')
  fig = Figure(figsize=(11, 4.5))
  fig.subplots_adjust(left=0.06, right=0.80, bottom=0.12, top=0.88 if title else 0.95,
                      wspace=0.22)
  ax_loss, ax_acc = fig.subplots(1, 2)
  for label, history in histories.items():
    line, = ax_loss.plot([h['epoch'] for h in history], [h['train_loss'] for h in history],
                         marker='.', label=label)
    measured = [h for h in history if key in h]
    ax_acc.plot([h['epoch'] for h in measured], [100 * h[key] for h in measured], marker='.',
                color=line.get_color())
  if all(h['train_loss'] > 0 for hist in histories.values() for h in hist):
    ax_loss.set_yscale('log')
  ax_loss.set_ylabel('train loss')
  ax_acc.set_ylabel(key.replace('_accuracy', ' accuracy (%)'))
  for ax in (ax_loss, ax_acc):
    ax.set_xlabel('epoch')
    ax.grid(alpha=0.3)
  ax_loss.legend(loc='upper left', bbox_to_anchor=(2.32, 1.0), fontsize='small',
                 title='member')
  if title:
    fig.suptitle(title)
  fig.savefig(path, dpi=100)


def markdown_table(header: list[str], rows: list[list]) -> str:
  """A GitHub-flavoured markdown table."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(str(x) for x in row) + ' |' for row in rows]
  return '\n'.join(lines) + '\n'
