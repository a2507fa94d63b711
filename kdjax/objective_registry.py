"""The `Objective` a train step minimises, and the registry of objectives by name.

`kdjax.objectives` describes the contract and builds a run's objective;
objectives defined in their own modules (`kdjax.byot`) register here, so that
they need not import `kdjax.objectives`, which imports them.
"""

import dataclasses
from typing import Any, Callable

import jax

from kdjax.errors import ConfigError

# The metrics key under which a loss returns its objective's new non-gradient state.
STATE = 'objective_state'
# The metrics key under which a loss returns its task (label) term, weighted as in the
# loss; the rest of the loss is distillation. The step takes it out; an optimizer that
# trains the two with separate momenta (DOT, `kdjax.train.optim.dot`) gets their gradients.
TASK = 'task_loss'
# The name of the member axis of a vectorised sweep (`kdjax.train.step.vectorise`): a loss
# may gather the other members' outputs over it (online distillation, kdjax.online).
MEMBER_AXIS = 'members'

# (student outputs, teacher outputs or None, labels, hparams, own params) -> (loss, metrics)
LossFn = Callable[[dict, dict | None, jax.Array, dict, Any], tuple[jax.Array, dict]]


@dataclasses.dataclass(frozen=True)
class Objective:
  """A train step's loss, with the trainable parts it owns (if any).

  Attributes:
    name: how results and progress lines call it.
    loss: the pure loss function (see `LossFn`).
    init: `init(rng) -> params` for parameters of the objective's own, trained
      beside the student's; None for a parameter-free objective.
  """
  name: str
  loss: LossFn
  init: Callable[[jax.Array], Any] | None = None
  # Whether `loss` reads the networks' intermediate features, under
  # outputs['features'] (the step then asks the models for them).
  taps_features: bool = False
  # `init_with(rng, student_outputs, teacher_outputs) -> (params, state)`, for parts
  # whose shapes follow the networks' (outputs as ShapeDtypeStruct trees); overrides `init`.
  init_with: Callable | None = None
  # Whether the state is indexed by example (CRD's memory banks): the step needs
  # the batch's example indices, and the members of a sweep cannot share batches' state.
  per_example: bool = False
  # None: the loss sees one augmented view of the batch. An int: the step also
  # augments the batch a second time (translation by up to this many pixels, the run's
  # flip, a key of its own), runs the student (train mode) and the teacher on it too, and
  # the loss finds those logits under outputs['strong_logits'] of both (MLKD).
  strong_shift: int | None = None

  def init_params(self, rng: jax.Array):
    return {} if self.init is None else self.init(rng)

  def init_parts(self, rng: jax.Array, student=None, teacher=None) -> tuple[Any, Any]:
    """(trainable params, non-gradient state) of the objective's own."""
    if self.init_with is not None:
      return self.init_with(rng, student, teacher)
    return self.init_params(rng), {}


_REGISTRY: dict[str, Callable[..., Objective]] = {}
# name -> `validate(config)`, raising ConfigError for fields of the config only
# that objective reads (BYOT's `config.byot`).
_VALIDATORS: dict[str, Callable] = {}


def register(name: str, *, validate: Callable | None = None):
  """Decorator: makes `factory(config) -> Objective` available as `config.distill.objective`.

  Args:
    name: the objective's name in `config.distill.objective`.
    validate: `validate(config)`, run by `kdjax.checks.validate` for configs
      that pick this objective; raises ConfigError naming the field.
  """

  def add(factory):
    _REGISTRY[name] = factory
    if validate is not None:
      _VALIDATORS[name] = validate
    return factory

  return add


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Callable[..., Objective]:
  """The factory registered as `name`; ConfigError naming `config.distill.objective` if none."""
  if name not in _REGISTRY:
    raise ConfigError(f'config.distill.objective={name!r}: unknown; known: {", ".join(names())}')
  return _REGISTRY[name]


def check_config(config) -> None:
  """Raises ConfigError for an unknown objective or (its validator) its own fields."""
  get(config.distill.objective)
  if config.distill.objective in _VALIDATORS:
    _VALIDATORS[config.distill.objective](config)
