"""What a train step minimises, as a value the step receives.

An `Objective` is a pure function of the student's outputs, the teacher's
outputs (None for a run without a teacher), the labels and the run's
hyper-parameters, returning the batch's scalar loss and a dict of scalar
metrics. It may own trainable parameters (a regressor, an embedding head):
`init` creates them and the step trains them with the student's optimizer,
in the student's checkpoint, never in the teacher.

Outputs are dicts: `{'logits': [B, K]}`, and `'features'` (the models'
feature dicts) when the objective taps them.

An objective may also own non-gradient state (a method's memory banks, the
BatchNorm statistics of its connectors): `init_with(rng, student, teacher)`
returns `(params, state)` from the networks' output shapes (trees of
`jax.ShapeDtypeStruct`, from `jax.eval_shape`). The step hands the loss the
state as `hparams['objective_state']`, the batch's example indices as
`hparams['example_index']` (None where the feed has none) and a key as
`hparams['objective_rng']`; a loss that changes the state returns the new
value in its metrics under `STATE` (the step takes it out). The state lives
in `TrainState.objective_state`: in the student's checkpoint, outside the
optimizer (no weight decay on a memory bank), outside `jax.grad`.

Adding a distillation method means writing one function and registering it:

    @objectives.register('my_method')
    def my_method(config, *, swept_kind=False) -> objectives.Objective:
      def loss(student, teacher, labels, hparams, own_params):
        ...
        return loss, {'my_term': term}
      return objectives.Objective(name='my_method', loss=loss)

and setting `config.distill.objective = 'my_method'`. The loop never changes.

A new part of a loss is better written as a term (`kdjax.terms`): one pure
function registered by name, which any run combines with others by weight
(`config.distill.terms`). The objectives here are the shorthands' (`logit_kd`,
`defensive`, plus `method.name`); each reports the unweighted value of every term it
stands for under `terms.PREFIX + name`, as `kdjax.terms.describe` names them.
"""

import jax
import jax.numpy as jnp

from kdjax import byot  # noqa: F401  (registers 'byot')
from kdjax import config as config_lib
from kdjax import losses
from kdjax import methods
from kdjax import objective_registry
from kdjax import terms
from kdjax.objective_registry import LossFn  # noqa: F401
from kdjax.objective_registry import Objective
from kdjax.objective_registry import STATE
from kdjax.objective_registry import TASK  # noqa: F401
from kdjax.objective_registry import names  # noqa: F401
from kdjax.objective_registry import register


def check_config(config) -> None:
  """Raises ConfigError (one line, naming the field) for `config.distill` and the
  objective's own fields: a known objective, the temperatures, the soft loss
  kinds, the soft-term weight; then the objective's validator (`register`)."""
  c, fail = config, config_lib.fail
  objective_registry.get(c.distill.objective)
  config_lib.check_positive(c, 'train_temperature')
  tempered = any(spec.endswith('tempered_ce') for spec in c.distill.terms)
  if c.train_temperature != 1.0 and c.distill.objective != 'defensive' and not tempered:
    fail('train_temperature', c.train_temperature,
         "trains the softmax at a temperature only with distill.objective='defensive' "
         "(or the term 'tempered_ce')")
  if c.teacher.workdir:
    config_lib.check_positive(c, 'distill.temperature')
    if c.distill.kind not in losses.SOFT_LOSS_KINDS:
      fail('distill.kind', c.distill.kind,
           f'unknown; known: {", ".join(losses.SOFT_LOSS_KINDS)}')
    weight = config_lib.alpha(c)
    if not 0.0 <= weight <= 1.0:
      fail('distill.alpha', weight, 'must be in [0, 1]')
  for value in c.sweep.kind:
    if value not in losses.SOFT_LOSS_KINDS:
      fail('sweep.kind', tuple(c.sweep.kind),
           f'unknown kind {value!r}; known: {", ".join(losses.SOFT_LOSS_KINDS)}')
  objective_registry.check_config(c)
  terms.check_config(c)


def from_config(config, *, swept_kind: bool = False, steps_per_epoch: int = 1,
                train_labels=None) -> Objective:
  """The objective `config.distill.objective` names, built for this run.

  With `config.method.name`, the method's loss (kdjax.methods), weighted by
  `config.method.weight`, is added to it. `train_labels` (the label of every
  training example, by example index) is what a method with per-example
  state (CRD) samples its negatives from.

  With `config.distill.terms`, the objective is those terms' weighted sum
  (`kdjax.terms.compose`); `distill.objective` and `method.name` are then unset.
  """
  if len(config.distill.terms):
    return terms.compose(terms.from_config(config), steps_per_epoch=steps_per_epoch)
  objective = objective_registry.get(config.distill.objective)(config, swept_kind=swept_kind)
  if config.method.name:
    objective = with_method(objective, config, steps_per_epoch, train_labels=train_labels)
  return objective


def with_method(base: Objective, config, steps_per_epoch: int, *,
                train_labels=None) -> Objective:
  """`base` plus `method.weight` × the method's loss; metrics gain `method` (unweighted).

  The weight is `hparams['method_weight']` where the hparams carry one (a
  vectorised sweep over it), else `config.method.weight`. A method with its
  own parts (kdjax.methods.trained) owns `{'base', 'method'}` parameters and
  its state; during its init stage (the first `method.init_epochs` epochs)
  the loss is the method's init loss alone, as RepDistiller's pre-training.
  """
  method = methods.get(config.method.name)
  options = methods.registry.options(config)
  weight = methods.registry.weight(config)
  name = f'{base.name}+{method.name}'
  taps = method.taps_features or base.taps_features
  if getattr(method, 'sets_temperature', False):
    return with_learned_temperature(base, method, options, steps_per_epoch, name=name)
  if getattr(method, 'strong_view', False):
    return with_strong_view(base, method, options, weight, steps_per_epoch, name=name,
                            shift=methods.mlkd.strong_shift(config))
  if not isinstance(method, methods.TrainedMethod):
    def loss(student, teacher, labels, hparams, own_params):
      value, metrics = base.loss(student, teacher, labels, hparams, own_params)
      if teacher is None:  # evaluation-style calls without a teacher
        return value, metrics
      epoch = hparams.get('step', 0) / steps_per_epoch
      term = method.between(student, teacher, labels, options, epoch)
      return value + hparams.get('method_weight', weight) * term, dict(
          metrics, method=term, **{terms.PREFIX + method.name: term})

    return Objective(name=name, loss=loss, init=base.init, taps_features=taps)

  context = methods.trained.Context(train_labels=train_labels, options=options)
  init_steps = methods.registry.init_epochs(config) * steps_per_epoch

  def init_with(rng, student, teacher):
    base_rng, method_rng = jax.random.split(rng)
    # Zeros of the features' shapes: modules initialise on arrays (inside the init program).
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)  # noqa: E731
    params, state = method.init(method_rng, zeros(student['features']),
                                zeros(teacher['features']), context)
    return {'base': base.init_params(base_rng), 'method': params}, state

  def trained_loss(student, teacher, labels, hparams, own_params):
    value, metrics = base.loss(student, teacher, labels, hparams, own_params['base'])
    if teacher is None:
      return value, metrics
    metrics = dict(metrics)
    run = methods.trained.Run(
        params=own_params['method'], state=hparams['objective_state'],
        example_index=hparams.get('example_index'), rng=hparams['objective_rng'],
        in_init=(hparams.get('step', 0) < init_steps) if init_steps else False,
        epoch=hparams.get('step', 0) / steps_per_epoch)
    term, init_term, state = method.loss(student['features'], teacher['features'], labels,
                                         run, context)
    total = value + hparams.get('method_weight', weight) * term
    metrics = dict(metrics, method=term, **{STATE: state, terms.PREFIX + method.name: term})
    if init_steps:
      total = jnp.where(run.in_init, init_term, total)
      metrics['method_init'] = init_term
      if TASK in metrics:  # the init stage's loss is the method's alone
        metrics[TASK] = jnp.where(run.in_init, 0.0, metrics[TASK])
    return total, metrics

  return Objective(name=name, loss=trained_loss, init_with=init_with, taps_features=True,
                   per_example=method.per_example)


def with_learned_temperature(base: Objective, method, options: dict, steps_per_epoch: int, *,
                             name: str) -> Objective:
  """`base` with `hparams['temperature']` replaced by the method's learned one (CTKD).

  Owns `{'base', 'method'}` parameters; the method's are shaped after the student's
  logits. Metrics gain `temperature` (the batch's mean) and `ctkd_strength` (λ).
  """

  def init_with(rng, student, teacher):
    del teacher  # logits of the student's width; a cached teacher has no shapes to give
    base_rng, method_rng = jax.random.split(rng)
    return {'base': base.init_params(base_rng),
            'method': method.init(method_rng, student['logits'].shape[-1], options)}, {}

  def loss(student, teacher, labels, hparams, own_params):
    if teacher is None:
      return base.loss(student, teacher, labels, hparams, own_params['base'])
    strength = method.strength(hparams.get('step', 0) / steps_per_epoch, options)
    temperature = method.temperature(own_params['method'], student['logits'],
                                     teacher['logits'], strength, options)
    value, metrics = base.loss(student, teacher, labels, dict(hparams, temperature=temperature),
                               own_params['base'])
    return value, dict(metrics, temperature=jnp.mean(temperature), ctkd_strength=strength)

  return Objective(name=name, loss=loss, init_with=init_with, taps_features=base.taps_features)


def with_strong_view(base: Objective, method, options: dict, weight: float,
                     steps_per_epoch: int, *, name: str, shift: int) -> Objective:
  """A two-view method's objective (MLKD), on the weak ('logits') and strong
  ('strong_logits') views of the batch:

    loss = mlkd_ce_weight · (CE(weak) + CE(strong)) + method.weight · method

  (the authors' 0.1 and 0.9). `base` (cross-entropy: `distill.alpha` is 0 for these
  methods) serves the calls without a teacher or a second view. The task term (DOT's)
  is the weighted cross-entropy.
  """
  ce_weight = float(options['mlkd_ce_weight'])

  def loss(student, teacher, labels, hparams, own_params):
    if teacher is None or 'strong_logits' not in student:
      return base.loss(student, teacher, labels, hparams, own_params)
    ce = (jnp.mean(losses.cross_entropy(student['logits'], labels))
          + jnp.mean(losses.cross_entropy(student['strong_logits'], labels)))
    task = ce_weight * ce
    term = method.between(student, teacher, labels, options,
                          hparams.get('step', 0) / steps_per_epoch)
    return (task + hparams.get('method_weight', weight) * term,
            {TASK: task, 'method': term, terms.PREFIX + 'ce': ce,
             terms.PREFIX + method.name: term})

  return Objective(name=name, loss=loss, init=base.init, taps_features=base.taps_features,
                   strong_shift=int(shift))


def logit_kd(kind: str | None = 'kl', *, standardize: bool = False) -> Objective:
  """Hinton et al.'s loss: (1 − α)·CE(labels) + α·soft-target loss at temperature T.

  Without a teacher it is cross-entropy on the labels alone. `hparams` holds
  `temperature` and `alpha`, and `kind` (an index into
  `losses.SOFT_LOSS_KINDS`) when `kind` is None, so a vectorised sweep can
  vary the soft loss per member. `standardize`: the soft term compares
  `losses.standardize`d logits (Sun et al.'s logit standardisation).
  """

  def loss(student, teacher, labels, hparams, own_params):
    del own_params
    hard_per_example = losses.cross_entropy(student['logits'], labels)
    hard = jnp.mean(hard_per_example)
    if teacher is None:
      return hard, {TASK: hard, terms.PREFIX + 'ce': hard}
    # losses.distillation_loss, its two terms kept apart for the metrics.
    soft = losses.soft_target_loss(
        student['logits'], teacher['logits'], temperature=hparams['temperature'],
        kind=hparams['kind'] if kind is None else kind, standardize_logits=standardize)
    alpha = hparams['alpha']
    value = jnp.mean(alpha * soft + (1.0 - alpha) * hard_per_example)
    return value, {TASK: (1.0 - alpha) * hard, terms.PREFIX + 'ce': hard,
                   terms.PREFIX + 'kd': jnp.mean(soft)}

  return Objective(name='logit_kd', loss=loss)


@register('logit_kd')
def _logit_kd_from_config(config, *, swept_kind: bool = False) -> Objective:
  return logit_kd(None if swept_kind else config.distill.kind,
                  standardize=bool(config.distill.get('standardize', False)))


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
      return jnp.mean(hard), {TASK: jnp.mean(hard), terms.PREFIX + 'ce': jnp.mean(hard)}
    temperature = hparams['temperature']
    soft = losses.soft_target_loss(logits, teacher['logits'], temperature=temperature,
                                   kind='soft_ce') / temperature**2
    alpha = hparams['alpha']
    return jnp.mean(alpha * soft + (1.0 - alpha) * hard), {
        TASK: (1.0 - alpha) * jnp.mean(hard), terms.PREFIX + 'ce': jnp.mean(hard),
        terms.PREFIX + 'kd': jnp.mean(soft)}

  return Objective(name='defensive', loss=loss)


@register('defensive')
def _defensive_from_config(config, *, swept_kind: bool = False) -> Objective:
  del swept_kind
  return defensive(float(config.train_temperature))
