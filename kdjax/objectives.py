"""What a train step minimises, as a value the step receives.

An `Objective` is a pure function of the student's outputs, the teacher's
outputs (None for a run without a teacher), the labels and the run's
hyper-parameters, returning the batch's scalar loss and a dict of scalar
metrics. It may own trainable parameters (a regressor, an embedding head):
`init` creates them and the step trains them with the student's optimizer,
in the student's checkpoint, never in the teacher.

Outputs are dicts: `{'logits': [B, K]}` today; methods that tap
intermediate features will find them under `'features'`.

Adding a distillation method means writing one function and registering it:

    @objectives.register('my_method')
    def my_method(config, *, swept_kind=False) -> objectives.Objective:
      def loss(student, teacher, labels, hparams, own_params):
        ...
        return loss, {'my_term': term}
      return objectives.Objective(name='my_method', loss=loss)

and setting `config.distill.objective = 'my_method'`. The loop never changes.
"""

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from kdjax import losses
from kdjax.errors import ConfigError

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

  def init_params(self, rng: jax.Array):
    return {} if self.init is None else self.init(rng)


_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register(name: str):
  """Decorator: makes `factory(config) -> Objective` available as `config.distill.objective`."""

  def add(factory):
    _REGISTRY[name] = factory
    return factory

  return add


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


def from_config(config, *, swept_kind: bool = False, steps_per_epoch: int = 1) -> Objective:
  """The objective `config.distill.objective` names, built for this run.

  With `config.method.name`, the method's loss (kdjax.methods), weighted by
  `config.method.weight`, is added to it.
  """
  name = config.distill.objective
  if name not in _REGISTRY:
    raise ConfigError(f'config.distill.objective={name!r}: unknown; known: {", ".join(names())}')
  objective = _REGISTRY[name](config, swept_kind=swept_kind)
  if config.method.name:
    objective = with_method(objective, config, steps_per_epoch)
  return objective


def with_method(base: Objective, config, steps_per_epoch: int) -> Objective:
  """`base` plus `method.weight` × the method's loss; metrics gain `method` (unweighted)."""
  from kdjax import methods  # pylint: disable=import-outside-toplevel
  method = methods.get(config.method.name)
  options = methods.registry.options(config)
  weight = methods.registry.weight(config)

  def loss(student, teacher, labels, hparams, own_params):
    value, metrics = base.loss(student, teacher, labels, hparams, own_params)
    if teacher is None:  # evaluation-style calls without a teacher
      return value, metrics
    epoch = hparams.get('step', 0) / steps_per_epoch
    term = method.between(student, teacher, labels, options, epoch)
    return value + weight * term, dict(metrics, method=term)

  return Objective(name=f'{base.name}+{method.name}', loss=loss, init=base.init,
                   taps_features=method.taps_features or base.taps_features)


def logit_kd(kind: str | None = 'kl') -> Objective:
  """Hinton et al.'s loss: (1 − α)·CE(labels) + α·soft-target loss at temperature T.

  Without a teacher it is cross-entropy on the labels alone. `hparams` holds
  `temperature` and `alpha`, and `kind` (an index into
  `losses.SOFT_LOSS_KINDS`) when `kind` is None, so a vectorised sweep can
  vary the soft loss per member.
  """

  def loss(student, teacher, labels, hparams, own_params):
    del own_params
    if teacher is None:
      return jnp.mean(losses.cross_entropy(student['logits'], labels)), {}
    value = losses.distillation_loss(
        student['logits'], teacher['logits'], labels, temperature=hparams['temperature'],
        alpha=hparams['alpha'], kind=hparams['kind'] if kind is None else kind)
    return value, {}

  return Objective(name='logit_kd', loss=loss)


@register('logit_kd')
def _logit_kd_from_config(config, *, swept_kind: bool = False) -> Objective:
  return logit_kd(None if swept_kind else config.distill.kind)


def defensive(train_temperature: float) -> Objective:
  """Papernot et al.'s defensive distillation (2016): softmax at temperature T in training.

  Without a teacher (the defended net's teacher): cross-entropy of
  softmax(z / T_train) against the labels. With a teacher (the distilled
  net): α · cross-entropy of softmax(z / T) against the teacher's
  softmax(t / T), T = `hparams['temperature']`, plus (1 − α) · the label
  term at T_train; α = 1 and T = T_train is the paper's recipe. As in the
  paper there is no T² factor. Both nets are deployed at T = 1: evaluation
  and attacks see the raw logits, which training at high T has made about T
  times larger.
  """

  def loss(student, teacher, labels, hparams, own_params):
    del own_params
    logits = student['logits']
    hard = losses.cross_entropy(logits / train_temperature, labels)
    if teacher is None:
      return jnp.mean(hard), {}
    temperature = hparams['temperature']
    soft = losses.soft_target_loss(logits, teacher['logits'], temperature=temperature,
                                   kind='soft_ce') / temperature**2
    alpha = hparams['alpha']
    return jnp.mean(alpha * soft + (1.0 - alpha) * hard), {}

  return Objective(name='defensive', loss=loss)


@register('defensive')
def _defensive_from_config(config, *, swept_kind: bool = False) -> Objective:
  del swept_kind
  return defensive(float(config.train_temperature))


# Objectives defined in their own modules register on import.
from kdjax import byot  # noqa: E402,F401
