"""One run or many members: the member axis of a run, in one place.

A plain run is the one-member case. A sweep (`config.sweep`) has one member
per combination of the swept values; its members train either together, as
one vectorised program over a stacked state (`'vmap'`), or one after another,
each as a plain run in its own directory (`'loop'`). `Members` owns what
differs between members: labels, seeds, hyper-parameters, the stacked axis,
per-member configs and directories.
"""

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import config as config_lib
from kdjax import losses
from kdjax.methods import registry as methods_registry
from kdjax.train import step as step_lib


@dataclasses.dataclass(frozen=True)
class Members:
  """The members a run trains.

  Attributes:
    config: the run's config (a sweep's, with its `sweep` block).
    rows: one dict per member (`config_lib.sweep_members`); a plain run has
      one row with `label` None.
    mode: 'single' (a plain run), 'vmap' (one program over a stacked state)
      or 'loop' (members trained in turn).
  """
  config: ml_collections.ConfigDict
  rows: tuple[dict, ...]
  mode: str

  @classmethod
  def of(cls, config: ml_collections.ConfigDict) -> 'Members':
    rows = config_lib.sweep_members(config)
    if not rows:
      return cls(config, (dict(label=None, temperature=float(config.distill.temperature),
                               alpha=config_lib.alpha(config), seed=int(config.seed),
                               data_seed=int(config.data_seed),
                               learning_rate=float(config.optimizer.learning_rate),
                               kind=config.distill.kind),), 'single')
    return cls(config, tuple(rows), config_lib.sweep_mode(config))

  @property
  def count(self) -> int:
    return len(self.rows)

  @property
  def stacked(self) -> bool:
    """Whether the state carries a leading member axis."""
    return self.mode == 'vmap'

  @property
  def axis_size(self) -> int:
    """The member-axis length the compiled programs take (0: no axis)."""
    return self.count if self.stacked else 0

  @property
  def own_data_orders(self) -> bool:
    """Whether stacked members shuffle the examples each with their own seed."""
    return self.stacked and len({row['data_seed'] for row in self.rows}) > 1

  @property
  def input_groups(self) -> tuple[int, ...] | None:
    """For each stacked member, the first member that sees the same inputs.

    A member's augmentation stream follows its seed and its batches its data
    seed; members equal in both see equal inputs (and so equal teacher
    outputs), whatever their temperature, alpha, kind or learning rate.
    """
    if not self.stacked:
      return None
    first = {}
    return tuple(first.setdefault((r['seed'], r['data_seed']), m)
                 for m, r in enumerate(self.rows))

  def label(self, m: int) -> str | None:
    return self.rows[m]['label']

  def config_of(self, m: int) -> ml_collections.ConfigDict:
    """The plain config that trains member `m` alone."""
    return self.config if self.mode == 'single' else config_lib.member_config(
        self.config, self.rows[m])

  def directory(self, workdir: str, m: int) -> str:
    """Where member `m` keeps its own complete run."""
    return workdir if self.mode == 'single' else os.path.join(
        workdir, 'members', self.rows[m]['label'])

  def take(self, tree, m: int):
    """Member `m`'s slice of a (possibly stacked) pytree, on the host when stacked.

    Sliced in numpy: indexing each device array would dispatch (and, per
    shape, compile) one program per leaf and member.
    """
    return jax.tree.map(lambda x: _host(x)[m], tree) if self.stacked else tree

  def on_host(self, tree):
    """A stacked pytree copied to numpy once, for `take` to slice every member from."""
    return jax.tree.map(_host, tree) if self.stacked else tree

  def init_state(self, init):
    """`init(seed) -> TrainState`, stacked over the members' seeds when vmapped."""
    if self.stacked:
      return step_lib.init_fast(jax.vmap(init), jnp.array([r['seed'] for r in self.rows]))
    return step_lib.init_fast(init, jnp.int32(self.config.seed))

  def hparams(self) -> dict:
    """What the objective reads per member: arrays with a member axis when stacked."""
    config, rows = self.config, self.rows
    if not self.stacked:
      return {'temperature': np.float32(config.distill.temperature),
              'alpha': np.float32(config_lib.alpha(config))}
    hparams = {'temperature': np.array([r['temperature'] for r in rows], np.float32),
               'alpha': np.array([r['alpha'] for r in rows], np.float32)}
    if len(config.sweep.learning_rate):
      # The optimizer is built for config.optimizer.learning_rate; each member
      # scales its updates to its own rate (exact: updates are linear in it).
      hparams['lr_scale'] = np.array(
          [r['learning_rate'] / config.optimizer.learning_rate for r in rows], np.float32)
    if len(config.sweep.method_weight):
      hparams['method_weight'] = np.array(
          [methods_registry.weight(config_lib.member_config(config, r))
           for r in rows], np.float32)
    if len(config.sweep.kind):
      hparams['kind'] = np.array([losses.SOFT_LOSS_KINDS.index(r['kind']) for r in rows],
                                 np.int32)
    return hparams

  def data_rng(self) -> jax.Array:
    """The key that orders the examples: one per member when they differ."""
    if self.own_data_orders:
      return jnp.stack([jax.random.PRNGKey(r['data_seed']) for r in self.rows])
    return jax.random.PRNGKey(self.rows[0]['data_seed'])

  def writer_prefix(self, m: int) -> str:
    return '' if self.mode == 'single' else f'{self.rows[m]["label"]}/'


def member_row(results: dict, member: dict, member_dir: str) -> dict:
  """A member's line in its sweep's results.json."""
  row = {k: results.get(k) for k in (
      'temperature', 'alpha', 'seed', 'data_seed', 'learning_rate', 'kind', 'method_weight',
      'test_accuracy',
      'test_errors', 'per_class_errors', 'validation_accuracy', 'best_validation_epoch',
      'best_validation_accuracy', 'test_accuracy_at_best_validation', 'diverged',
      'diverged_at_step')}
  row.update({k: results[k] for k in ('test_top5_accuracy', 'validation_top5_accuracy')
              if k in results})
  row.update(label=member['label'], workdir=member_dir)
  return row


SETTINGS = ('temperature', 'alpha', 'kind', 'learning_rate', 'method_weight')


def summary(rows: list[dict]) -> dict:
  """A sweep's honest summary: mean ± std over seeds, and a member chosen on validation.

  Returns:
    {'groups': one entry per setting (all but the seed) with its seeds and
    the mean ± std of test and validation accuracy over them, diverged
    members left out of the means; 'selection': the member with the highest
    validation accuracy (None without a validation split) with its test
    accuracy; 'diverged': labels of the members that diverged}.
  """
  groups = {}
  for row in rows:
    groups.setdefault(tuple(row.get(k) for k in SETTINGS), []).append(row)
  out = []
  for key, members in groups.items():
    healthy = [r for r in members if not r.get('diverged')]
    entry = {'settings': dict(zip(SETTINGS, key)), 'seeds': [r['seed'] for r in members],
             'members': [r['label'] for r in members], 'diverged': len(members) - len(healthy)}
    top5 = [f for f in ('test_top5_accuracy', 'validation_top5_accuracy')
            if any(f in r for r in members)]
    for field in ('test_accuracy', 'validation_accuracy', 'test_accuracy_at_best_validation',
                  *top5):
      values = [r[field] for r in healthy if r.get(field) is not None]
      entry[f'{field}_mean'] = float(np.mean(values)) if values else None
      entry[f'{field}_std'] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    out.append(entry)
  candidates = [r for r in rows if not r.get('diverged') and r.get('validation_accuracy')
                is not None]
  selection = None
  if candidates:
    chosen = max(candidates, key=lambda r: r['validation_accuracy'])
    selection = {'what': 'sweep member', 'chosen': chosen['label'],
                 'selected_on': 'validation',
                 'validation_accuracy': chosen['validation_accuracy'],
                 'test_accuracy': chosen['test_accuracy']}
  return {'groups': out, 'selection': selection,
          'diverged': [r['label'] for r in rows if r.get('diverged')]}


def _host(x):
  """A (replicated) array's values as numpy, read from this process's own copy."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)
