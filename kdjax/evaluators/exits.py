"""A multi-exit network's exits: each one's cost and accuracy, the ensemble, anytime inference."""

import jax.numpy as jnp
import numpy as np

from kdjax import byot
from kdjax import config as config_lib
from kdjax.evaluators import registry
from kdjax.models import multi_exit


def _has_exits(context: registry.Context) -> bool:
  return multi_exit.is_multi_exit(context.model)


def check_config(config) -> None:
  if config.model.name != 'multi_exit':
    config_lib.fail('evaluators', tuple(config.evaluators),
                    "'exits' needs a multi-exit model (config.model.name='multi_exit')")


class _AllExits:
  """A multi-exit model with every exit's logits, [B, E, K], as its output."""

  def __init__(self, model):
    self.model = model

  def apply(self, variables, images, train):
    _, features = self.model.apply(variables, images, train=train, return_features=True)
    return jnp.stack(multi_exit.exit_outputs(features, self.model.exits)[0], axis=1)


@registry.register('exits', applies=_has_exits, validate=check_config, shared=('exits',))
def evaluate(context: registry.Context) -> registry.Sections:
  """The exits' cost, shared, and per member each exit's accuracy.

  Sections: `exits` (per exit: name, parameters and forward FLOPs per example
  up to it) and each member's `exit_evaluation` (`kdjax.byot.evaluate_exits`
  of the validation and test splits).
  """
  model = context.model
  one = context.members.take(context.state, 0)
  names = list(model.exit_names)
  params = multi_exit.exit_params(model, one.params)
  flops = multi_exit.exit_flops(model, {'params': one.params, **one.model_state},
                                context.image_shape)
  exits = [{'name': n, 'params': p, 'flops': f} for n, p, f in zip(names, params, flops)]
  logits = context.predict(_AllExits(model), context.variables,
                           context.members.axis_size)  # split -> [M, N, E, K]
  members = []
  for m in range(context.members.count):
    per_split = {split: np.moveaxis(np.asarray(v[m]), 1, 0) for split, v in logits.items()}
    members.append({'exit_evaluation': byot.evaluate_exits(per_split, context.labels, flops,
                                                           names)})
  return registry.Sections(shared={'exits': exits}, members=tuple(members))
