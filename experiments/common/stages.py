"""`Stages`: named kdjax runs under one workdir, each resumed or returned when rerun."""

import os
import time
from typing import Sequence

import ml_collections

from experiments.common.setup import Setup
from kdjax import config as config_lib
from kdjax import report


class Stages:
  """Runs named stages under one workdir and keeps their results.

  The wall seconds of each stage are kept in `stage_seconds.json` across
  invocations, so a report's total covers stages that an earlier invocation
  ran. `setup` sizes the runs of `alone` and `distill`; a launcher that
  builds its own configs and calls `run` can leave it out.
  """

  def __init__(self, workdir: str, setup: Setup | None = None):
    self.workdir = workdir
    self.setup = setup
    self.results: dict[str, dict] = {}
    self.start = time.perf_counter()

  def path(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def run(self, name: str, config: ml_collections.ConfigDict) -> dict:
    from kdjax import train
    print(f'== stage {name} ==', flush=True)
    already_done = os.path.exists(os.path.join(self.path(name), 'results.json'))
    start = time.perf_counter()
    result = train.train_and_evaluate(config, self.path(name))
    # Read back each time: the file is the record across invocations, and the
    # first stage's run is what creates the workdir.
    times_path = os.path.join(self.workdir, 'stage_seconds.json')
    seconds = report.read_json(times_path) if os.path.exists(times_path) else {}
    if not already_done:
      seconds[name] = time.perf_counter() - start
    elif name not in seconds:  # finished before wall times were kept
      seconds[name] = result.get('train_seconds', 0) + result.get('compile_seconds', 0)
    report.write_json(times_path, seconds)
    result['workdir'] = self.path(name)
    self.results[name] = result
    return result

  def alone(self, name: str, model: str, *, seeds: int | None = None,
            epochs: int | None = None, seed: int = 0, changes: dict | None = None) -> dict:
    """`model` trained on the labels, once per seed (one vectorised program).

    `changes` (config field -> value) are applied last.
    """
    c = self.setup.config(model, epochs=epochs)
    _set_seed(c, seed)
    c.sweep.seed = _seed_axis(self.setup.seeds if seeds is None else seeds, seed)
    return self.run(name, config_lib.override(c, changes or {}))

  def distill(self, name: str, model: str, teacher: str, *, temperatures: Sequence[float],
              alphas: Sequence[float], kinds: Sequence[str] = ('kl',),
              seeds: int | None = None, epochs: int | None = None, seed: int = 0,
              changes: dict | None = None) -> dict:
    """`model` taught by the run in `teacher` (a path), over T × alpha × kind × seed.

    With one seed, the run uses `seed` (e.g. the chain it belongs to) for its
    initialisation, dropout and augmentation, and as its data seed; a seed
    sweep counts up from `seed`, each member with its own data order.
    """
    c = self.setup.config(model, epochs=epochs)
    _set_seed(c, seed)
    c.teacher.workdir = teacher
    c.distill.temperature, c.distill.alpha, c.distill.kind = (
        float(temperatures[0]), float(alphas[0]), kinds[0])
    c.sweep.temperature = tuple(float(t) for t in temperatures) if len(temperatures) > 1 else ()
    c.sweep.alpha = tuple(float(a) for a in alphas) if len(alphas) > 1 else ()
    c.sweep.kind = tuple(kinds) if len(kinds) > 1 else ()
    c.sweep.seed = _seed_axis(self.setup.seeds if seeds is None else seeds, seed)
    return self.run(name, config_lib.override(c, changes or {}))

  def teacher_of(self, name: str) -> str:
    """A finished stage as a teacher: the run itself, or its first member."""
    result = self.results[name]
    return result['members'][0]['workdir'] if 'members' in result else result['workdir']

  def wall_minutes(self) -> float:
    """Minutes since this invocation started: the stages it ran, not those it skipped."""
    return (time.perf_counter() - self.start) / 60

  def stage_minutes(self) -> float:
    """Minutes of every stage of this invocation, including those run before it."""
    times_path = os.path.join(self.workdir, 'stage_seconds.json')
    seconds = report.read_json(times_path) if os.path.exists(times_path) else {}
    return sum(seconds.get(name, 0) for name in self.results) / 60


def _set_seed(c: ml_collections.ConfigDict, seed: int) -> None:
  # One seed for the model (init, dropout, augmentation) and the data order:
  # runs compared across seeds differ in both, never in one alone.
  c.seed = seed
  c.data_seed = seed


def _seed_axis(seeds: int, first: int = 0) -> tuple:
  return tuple(range(first, first + seeds)) if seeds > 1 else ()
