"""The evaluator registry: what is measured after training, by name.

An evaluator is `evaluate(context) -> Sections`, registered with
`@register(name, applies=..., validate=...)`. `config.evaluators` names the
ones a run calls; `'auto'` stands for every evaluator whose `applies(context)`
holds for the finished run (the multi-exit model's exits, the teacher's
agreement), so that the loop never asks which model or method it trained.
Each evaluator writes its own sections of results.json and validates the
config it reads (`kdjax.checks.validate` calls `check_config`).

This module imports nothing of kdjax.train (which imports it): what a run
built reaches an evaluator through `Context`.
"""

import dataclasses
import functools
from typing import Any, Callable

import numpy as np

from kdjax import config as config_lib

AUTO = 'auto'


@dataclasses.dataclass(frozen=True)
class Sections:
  """What one evaluator adds to results.json.

  Attributes:
    shared: sections of every member's results.json and of a sweep's own
      (what all members share: a model's exit costs).
    members: per member (in the order of `Context.members`), the sections of
      that member's results.json.
  """
  shared: dict = dataclasses.field(default_factory=dict)
  members: tuple[dict, ...] = ()


@dataclasses.dataclass
class Context:
  """What an evaluator may read of a finished run.

  Attributes:
    config: the run's config (a sweep's own; `members.config_of(m)` is member m's).
    members: the run's `kdjax.train.sweep.Members` (`count`, `axis_size`, `take`).
    model: the student network.
    state: the final `TrainState`, stacked over the members of a vectorised sweep.
    image_shape: the input's (H, W, C).
    logits: split -> [M, N, K] the students' final logits on 'test' (and
      'validation' where the run has one); M = 1 for a plain run.
    labels: split -> [N] integer classes.
    teacher: the run's `kdjax.train.teacher.Teacher`, or None.
    predict: `predict(model, variables, num_members) -> split -> [M, N, ...]`,
      any network's outputs on the evaluation splits (M = max(num_members, 1);
      `num_members` > 0 for variables with a leading member axis).
  """
  config: Any
  members: Any
  model: Any
  state: Any
  image_shape: tuple
  logits: dict
  labels: dict
  teacher: Any
  predict: Callable[..., dict]

  @property
  def variables(self) -> dict:
    """The students' variables (stacked like `state`), as the model applies them."""
    return {'params': self.state.params, **self.state.model_state}

  @functools.cached_property
  def teacher_logits(self) -> dict | None:
    """split -> [N, K] the teacher's logits (computed once); None without a teacher."""
    if self.teacher is None:
      return None
    logits = self.predict(self.teacher.model, self.teacher.loaded_variables, 0)
    return {split: np.asarray(v[0]) for split, v in logits.items()}


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A registered evaluator (see `register`)."""
  name: str
  evaluate: Callable[[Context], Sections]
  applies: Callable[[Context], bool] | None = None
  validate: Callable | None = None
  shared: tuple[str, ...] = ()


_REGISTRY: dict[str, Evaluator] = {}


def register(name: str, *, applies: Callable[[Context], bool] | None = None,
             validate: Callable | None = None, shared: tuple[str, ...] = ()):
  """Decorator: makes `evaluate(context) -> Sections` available in `config.evaluators`.

  Args:
    name: the evaluator's name in `config.evaluators`.
    applies: `applies(context) -> bool`: whether `'auto'` includes it for a
      finished run; None: only when named.
    validate: `validate(config)`, run by `kdjax.checks.validate` when the
      config names the evaluator; raises ConfigError naming the field.
    shared: the sections it returns in `Sections.shared` (a sweep trained
      member by member copies them from a member's results.json to its own).
  """
  if name == AUTO:
    raise ValueError(f'{AUTO!r} is not a name an evaluator can have')

  def add(evaluate):
    if name in _REGISTRY:
      raise ValueError(f'evaluator {name!r} is registered twice')
    _REGISTRY[name] = Evaluator(name=name, evaluate=evaluate, applies=applies,
                                validate=validate, shared=tuple(shared))
    return evaluate

  return add


def unregister(name: str) -> None:
  """Removes an evaluator (for tests that register one of their own)."""
  _REGISTRY.pop(name, None)


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def shared_sections() -> tuple[str, ...]:
  """Every section an evaluator shares between the members of a sweep."""
  return tuple(section for e in _REGISTRY.values() for section in e.shared)


def check_config(config) -> None:
  """Raises ConfigError for `config.evaluators` or (their validators) the fields they read."""
  chosen = config.evaluators
  known = ', '.join((AUTO,) + names())
  if isinstance(chosen, str) or not isinstance(chosen, (tuple, list)) or not all(
      isinstance(name, str) for name in chosen):
    config_lib.fail('evaluators', chosen, f'must be a tuple of names; known: {known}')
  for name in chosen:
    if name != AUTO and name not in _REGISTRY:
      config_lib.fail('evaluators', tuple(chosen), f'unknown evaluator {name!r}; known: {known}')
  if len(set(chosen)) != len(chosen):
    config_lib.fail('evaluators', tuple(chosen), 'names must not repeat')
  for name in chosen:
    if name != AUTO and _REGISTRY[name].validate is not None:
      _REGISTRY[name].validate(config)


def resolve(context: Context) -> list[Evaluator]:
  """The evaluators `context.config.evaluators` names, `'auto'` expanded in registration order."""
  out = []
  for name in context.config.evaluators:
    if name == AUTO:
      out.extend(e for e in _REGISTRY.values()
                 if e.applies is not None and e.name not in context.config.evaluators
                 and e.applies(context))
    else:
      out.append(_REGISTRY[name])
  return out


def run(context: Context) -> tuple[dict, list[dict]]:
  """Calls the run's evaluators in turn.

  Returns:
    (sections shared by every member, per member its own sections).

  Raises:
    ValueError: two evaluators wrote the same section, or an evaluator a
      shared section it did not declare.
  """
  shared, per_member, writers = {}, [{} for _ in range(context.members.count)], {}
  for evaluator in resolve(context):
    sections = evaluator.evaluate(context)
    if sections.members and len(sections.members) != context.members.count:
      raise ValueError(f'evaluator {evaluator.name!r} returned {len(sections.members)} members\' '
                       f'sections for {context.members.count} members')
    undeclared = set(sections.shared) - set(evaluator.shared)
    if undeclared:
      raise ValueError(f'evaluator {evaluator.name!r} shares sections it did not declare '
                       f'(register(..., shared=...)): {sorted(undeclared)}')
    written = set(sections.shared).union(*sections.members) if sections.members else set(
        sections.shared)
    for section in written:
      if section in writers:
        raise ValueError(f'evaluators {writers[section]!r} and {evaluator.name!r} both write '
                         f'the section {section!r}')
      writers[section] = evaluator.name
    shared.update(sections.shared)
    for mine, theirs in zip(per_member, sections.members):
      mine.update(theirs)
  return shared, per_member
