"""Section (i) of `python -m experiments.benchmark`: an ensemble's teachers as one program.

K = 10 teachers of one architecture, each with its own initialisation and data
order (a seed sweep, `config.sweep.seed`, as `python -m experiments.ensembles`
trains them), timed as one vectorised epoch program over the stacked members
and as ten separate runs of the single network's epoch program one after
another (the cheapest way to run them apart: one compiled program reused, each
run from its own initial state with its own order). Both for Hinton's MNIST
teacher (784-1200-1200-10, dropout, max-norm, ±2 px jitter, Adam) and for the
256-256 network of experiments.ensembles' cpu preset; epochs are cut to
`STEPS` steps so the section takes minutes on a CPU.
"""

import time

import jax
import numpy as np
import optax

from experiments import benchmark_programs as programs
from kdjax import models
from kdjax.train import step as step_lib

MEMBERS = 10
STEPS = 50  # steps per timed epoch (each member)


def _epoch(bench, train_step, state, num_members: int):
  """A compiled epoch of `STEPS` steps: `run(state) -> None` and its compile seconds.
  With `num_members`, the members are stacked and each has its own example order."""
  epoch = step_lib.make_epoch(train_step, mesh=bench.mesh, batch_size=programs.BATCH,
                              steps_per_epoch=min(bench.steps, STEPS),
                              num_members=num_members, member_orders=bool(num_members))
  hparams = bench.plain if not num_members else jax.tree.map(
      lambda v: np.full((num_members,), v), bench.plain)
  keys = lambda seed: (jax.random.split(jax.random.PRNGKey(seed), num_members)  # noqa: E731
                       if num_members else jax.random.PRNGKey(seed))
  start = time.perf_counter()
  compiled = epoch.lower(state, bench.data, None, hparams, keys(0)).compile()
  compile_seconds = time.perf_counter() - start

  def run(initial, seed=1):
    programs.block(compiled(jax.device_put(initial), bench.data, None, hparams, keys(seed)))

  return run, compile_seconds


def _measure_network(bench, name: str, hidden: tuple, **options) -> tuple[float, float]:
  """(i) rows of one architecture; returns (vectorised seconds, ten-runs seconds)."""
  model = models.create('mlp', num_classes=10, hidden=hidden, **options)
  tx = optax.adam(1e-3)
  train_step = step_lib.make_train_step(model=model, tx=tx, mean=programs.MEAN,
                                        std=programs.STD, max_shift=2, max_norm=4.0,
                                        freeze_on_divergence=True)
  singles = [jax.tree.map(np.asarray, step_lib.init_state(
      model, tx, jax.random.PRNGKey(seed), (28, 28, 1))) for seed in range(MEMBERS)]
  stacked = jax.tree.map(lambda *xs: np.stack(xs), *singles)
  examples = min(bench.steps, STEPS) * programs.BATCH
  run_one, compile_one = _epoch(bench, train_step, singles[0], 0)
  run_all, compile_all = _epoch(bench, train_step, stacked, MEMBERS)
  run_one(singles[0])  # warm-up
  run_all(stacked)
  one = bench.median_seconds(lambda: run_one(singles[0]))
  bench.add('i', f'{name} epoch, one network', one, examples, compile_one)
  together = bench.median_seconds(lambda: run_all(stacked))
  bench.add('i', f'{name} epoch, {MEMBERS} seeds as one vectorised program', together,
            MEMBERS * examples, compile_all)
  apart = bench.median_seconds(lambda: [run_one(s, seed=m + 1) for m, s in enumerate(singles)])
  bench.add('i', f'{name} epoch, {MEMBERS} seeds as {MEMBERS} separate runs', apart,
            MEMBERS * examples)
  return together, apart


def measure(bench) -> list[tuple]:
  """Section (i); returns its ratios as (section, ratio, measured, target)."""
  ratios = []
  for name, hidden, options in (
      ('1200-1200 teacher', (1200, 1200), {'input_dropout': 0.2, 'hidden_dropout': 0.3}),
      ('256-256 teacher', (256, 256), {'input_dropout': 0.2, 'hidden_dropout': 0.3})):
    if bench.quick:
      hidden = tuple(h // 8 for h in hidden)
    together, apart = _measure_network(bench, name, hidden, **options)
    ratios.append(('i', f'{name}: {MEMBERS} separate runs / one vectorised program',
                   apart / together, '>= 3'))
  return ratios
