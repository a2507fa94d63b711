"""The loss algebra: a train step minimises a weighted sum of named terms.

    loss = w_1 · term_1 + w_2 · term_2 + …      e.g.  loss = 0.1·ce + 0.9·kd@T4

A term is a pure function of the step's outputs, registered once by name
with what it reads (`logits`, `features`, `teacher`, `example_index`, …):

    @terms.register('my_term', reads=('logits', 'teacher'))
    def my_term(config) -> terms.Term:
      def loss(student, teacher, labels, hparams, own_params):
        return value, {}          # the unweighted scalar, extra metrics
      return terms.Term(label='my_term', loss=loss)

and picked, with its weight, by `config.distill.terms` (`('0.1*ce', '0.9*kd')`).
A term may own trainable parameters and non-gradient state (`Term.init_with`,
shaped after the networks' outputs, as `Objective.init_with`): each term's
parts live under its registered name in the objective's, and its state comes
back in its metrics under `objective_registry.STATE`. `warmup_epochs` ramps its
weight in linearly from 0. A term's label ('kd@T4') is what results print; its
name ('kd') keys its value, the same for every member of a sweep.

`compose(terms)` makes the `Objective` the step receives. Every step's metrics
carry each term's unweighted value under `term/<name>`, so each epoch's history
holds `train_term/<name>`.

Today's flags are shorthands for lists of terms: `distill.objective` (`logit_kd`,
`defensive`, `byot`) plus `method.name` name the terms that `describe(config)`
lists with their weights, as results.json and the progress line print them;
their objectives (kdjax.objectives, kdjax.byot) compute those terms and report
each one's value under `term/<name>` as composed terms do.
"""

import dataclasses
import re
from typing import Callable

import jax
import jax.numpy as jnp

from kdjax import config as config_lib
from kdjax import losses
from kdjax import objective_registry
from kdjax.errors import ConfigError
from kdjax.methods import registry as methods_registry

# The metrics prefix of a term's unweighted value (history: `train_term/<name>`).
PREFIX = 'term/'
# What a term may read: the student's logits and features, a second view's logits, the
# teacher's outputs, the batch's example indices.
READS = ('logits', 'features', 'strong_logits', 'teacher', 'example_index')


@dataclasses.dataclass(frozen=True)
class Term:
  """One named term of a loss.

  Attributes:
    label: how results.json and the progress line name it ('kd@T4').
    loss: `loss(student, teacher, labels, hparams, own_params) -> (value, metrics)`, the
      term's unweighted scalar (`objective_registry.LossFn`).
    weight: its weight in the sum (set by `compose` from the config's spec).
    reads: what it reads (see `READS`); set by `register`.
    warmup_epochs: the weight grows linearly from 0 to `weight` over these epochs.
    init_with: `init_with(rng, student, teacher) -> (params, state)` for parts of its own.
    name: its registered name (set by `from_config`): the key of its value in the metrics
      (`term/<name>`) and of its parts, the same for every member of a sweep.
    task: a label (task) term: the weighted sum of these is the objective's task term
      (`objective_registry.TASK`), whose gradient DOT keeps apart from the rest.
  """
  label: str
  loss: objective_registry.LossFn
  weight: float = 1.0
  reads: tuple[str, ...] = ('logits',)
  warmup_epochs: float = 0.0
  init_with: Callable | None = None
  name: str = ''
  task: bool = False

  @property
  def needs_teacher(self) -> bool:
    return 'teacher' in self.reads


_REGISTRY: dict[str, tuple[Callable[..., Term], tuple[str, ...]]] = {}
_VALIDATORS: dict[str, Callable] = {}


def register(name: str, *, reads: tuple[str, ...], validate: Callable | None = None):
  """Decorator: makes `factory(config) -> Term` available as `name` in `config.distill.terms`.

  Args:
    name: the term's name in a spec ('kd' in '0.9*kd').
    reads: what the term reads (a subset of `READS`): the step asks the networks for
      their features when one term reads them; a term that reads the teacher needs one.
    validate: `validate(config)`, raising ConfigError naming the field, for the config
      fields the term reads.
  """
  unknown = sorted(set(reads) - set(READS))
  if unknown:
    raise ValueError(f'term {name!r} reads {unknown}; known: {", ".join(READS)}')

  def add(factory):
    _REGISTRY[name] = (factory, tuple(reads))
    if validate is not None:
      _VALIDATORS[name] = validate
    return factory

  return add


def names() -> tuple[str, ...]:
  return tuple(sorted(_REGISTRY))


_SPEC = re.compile(r'^\s*(?:([0-9.eE+-]+)\s*\*\s*)?([A-Za-z_][\w]*)\s*$')


def parse(spec: str) -> tuple[float, str]:
  """'0.9*kd' -> (0.9, 'kd'); 'ce' -> (1.0, 'ce'). ConfigError naming the field if neither."""
  match = _SPEC.match(str(spec))
  try:
    weight = float(match.group(1)) if match and match.group(1) else 1.0
  except ValueError:
    match = None
  if not match:
    raise ConfigError(f'config.distill.terms: {spec!r} is not WEIGHT*NAME or NAME '
                      "(e.g. '0.9*kd')")
  if match.group(2) not in _REGISTRY:
    raise ConfigError(f'config.distill.terms: unknown term {match.group(2)!r}; known: '
                      f'{", ".join(names())}')
  return weight, match.group(2)


def from_config(config) -> tuple[Term, ...]:
  """The terms `config.distill.terms` names, built for this run, each with its weight."""
  out = []
  for spec in config.distill.terms:
    weight, name = parse(spec)
    factory, reads = _REGISTRY[name]
    out.append(dataclasses.replace(factory(config), weight=weight, reads=reads, name=name))
  return tuple(out)


def check_config(config) -> None:
  """Raises ConfigError (one line) for `config.distill.terms` and its terms' own fields."""
  specs = tuple(config.distill.terms)
  if not specs:
    return
  if config.distill.objective != 'logit_kd' or config.method.name:
    raise ConfigError(f'config.distill.terms={specs}: the terms replace distill.objective '
                      f'and method.name (leave them at \'logit_kd\' and \'\')')
  for axis in ('alpha', 'kind', 'method_weight'):
    if len(config.sweep[axis]):
      raise ConfigError(f'config.sweep.{axis}: a run with distill.terms gives its weights '
                        'in the terms; sweep temperature, seed or learning rate')
  parsed = [parse(spec) for spec in specs]
  for weight, name in parsed:
    if not weight >= 0:
      raise ConfigError(f'config.distill.terms: weight {weight} of {name!r} must be >= 0')
    if 'teacher' in _REGISTRY[name][1] and not config.teacher.workdir:
      raise ConfigError(f'config.distill.terms: term {name!r} reads the teacher; set '
                        'config.teacher.workdir')
    if name in _VALIDATORS:
      _VALIDATORS[name](config)
  features = [n for _, n in parsed if {'features', 'teacher'} <= set(_REGISTRY[n][1])]
  if features and config.teacher.cache is not False:
    raise ConfigError(f'config.teacher.cache={config.teacher.cache!r}: term {features[0]!r} '
                      "reads the teacher's features, which are not cached; set "
                      'teacher.cache=False')
  if len({name for _, name in parsed}) != len(parsed):
    raise ConfigError(f'config.distill.terms={specs}: a term is named twice')


def _warmup(term: Term, epoch):
  if term.warmup_epochs <= 0:
    return 1.0
  return jnp.minimum(epoch / term.warmup_epochs, 1.0)


def compose(terms: tuple[Term, ...], *, steps_per_epoch: int = 1,
            name: str = 'terms') -> objective_registry.Objective:
  """The `Objective` minimising Σ weight · term (each weight ramped over its warm-up).

  Each term's parameters and state live under its name; a call without a teacher
  (a teacher-free evaluation) leaves out the terms that read one.
  """
  taps = any('features' in t.reads for t in terms)
  per_example = any('example_index' in t.reads for t in terms)

  def init_with(rng, student, teacher):
    params, state = {}, {}
    for i, term in enumerate(terms):
      if term.init_with is not None:
        params[term.name], state[term.name] = term.init_with(
            jax.random.fold_in(rng, i), student, teacher)
    return params, state

  def loss(student, teacher, labels, hparams, own_params):
    epoch = hparams.get('step', 0) / steps_per_epoch
    states = hparams.get('objective_state') or {}
    total, task, metrics, new_states = 0.0, 0.0, {}, {}
    for i, term in enumerate(terms):
      if term.needs_teacher and teacher is None:
        continue
      term_hparams = dict(hparams, epoch=epoch, objective_state=states.get(term.name, {}),
                          objective_rng=jax.random.fold_in(hparams['objective_rng'], i)
                          if 'objective_rng' in hparams else None)
      value, extra = term.loss(student, teacher, labels, term_hparams,
                               (own_params or {}).get(term.name, {}))
      extra = dict(extra)
      if objective_registry.STATE in extra:
        new_states[term.name] = extra.pop(objective_registry.STATE)
      weighted = term.weight * _warmup(term, epoch) * value
      total = total + weighted
      task = task + weighted if term.task else task
      metrics.update(extra)
      metrics[PREFIX + term.name] = value
    if new_states:
      metrics[objective_registry.STATE] = dict(states, **new_states)
    if any(t.task for t in terms):
      metrics[objective_registry.TASK] = task
    return total, metrics

  return objective_registry.Objective(name=name, loss=loss, init_with=init_with,
                                      taps_features=taps, per_example=per_example)


def text(weighted) -> str:
  """'loss = 0.1·ce + 0.9·kd@T4' from `describe`'s entries."""
  return 'loss = ' + ' + '.join(f'{t["weight"]:.4g}·{t["label"]}' for t in weighted)


def _entry(name: str, label: str, weight: float) -> dict:
  return {'name': name, 'label': label, 'weight': float(weight)}


def kd_label(kind: str, temperature: float, standardize: bool = False) -> str:
  """The soft-target term's label: 'kd@T4' (KL), 'soft_ce@T4', 'mse_logits' (no T)."""
  name = 'kd' if kind == 'kl' else kind
  label = name if kind == 'mse_logits' else f'{name}@T{temperature:g}'
  return label + ('/std' if standardize else '')


def describe(config) -> tuple[dict, ...]:
  """`{'name', 'label', 'weight'}` of every term the run's config names, in the order they
  are summed: `config.distill.terms`, or the terms `distill.objective` + `method.name`
  stand for. `name` keys the term's value in the metrics (`term/<name>`)."""
  if len(config.distill.terms):
    return tuple(_entry(t.name, t.label, t.weight) for t in from_config(config))
  objective = config.distill.objective
  teacher = bool(config.teacher.workdir)
  online = config.get('online')
  if online is not None and online.kind:  # kdjax.online: the cohort's mean at T
    return (_entry('ce', 'ce', 1.0),
            _entry('online', f'{online.kind}@T{float(online.temperature):g}', online.weight))
  if objective == 'byot':
    return _byot_terms(config)
  if objective == 'defensive':
    hard = _entry('ce', f'ce@T{float(config.train_temperature):g}', 1.0)
    if not teacher:
      return (hard,)
    alpha = config_lib.alpha(config)
    return (dict(hard, weight=1.0 - alpha),
            _entry('kd', f'soft_ce@T{float(config.distill.temperature):g}', alpha))
  if objective != 'logit_kd':  # a registered objective of its own: one term
    return (_entry(objective, objective, 1.0),)
  return _logit_kd_terms(config, teacher)


def _logit_kd_terms(config, teacher: bool) -> tuple[dict, ...]:
  method = config.method.name
  if not teacher:
    return (_entry('ce', 'ce', 1.0),)
  if method == 'mlkd':
    options = methods_registry.options(config)
    return (_entry('ce', 'ce(weak+strong)', float(options['mlkd_ce_weight'])),
            _entry('mlkd', 'mlkd', methods_registry.weight(config)))
  alpha = config_lib.alpha(config)
  if method == 'ctkd':
    kd = 'kd@T(learned)'
  else:
    kd = kd_label(config.distill.kind, float(config.distill.temperature),
                  bool(config.distill.get('standardize', False)))
  out = [_entry('ce', 'ce', 1.0 - alpha)]
  if alpha > 0:
    out.append(_entry('kd', kd, alpha))
  if method and method != 'ctkd':
    out.append(_entry(method, method, methods_registry.weight(config)))
  return tuple(out)


def _byot_terms(config) -> tuple[dict, ...]:
  b = config.byot
  scale = float(b.temperature)**2 if b.t_squared else 1.0
  return (_entry('ce/deepest', 'ce/deepest', b.deepest_weight),
          _entry('ce/shallow', 'ce/shallow', 1.0 - float(b.alpha)),
          _entry('kd/shallow', f'kd@T{float(b.temperature):g}/shallow', float(b.alpha) * scale),
          _entry('feature/shallow', 'feature/shallow', b.feature_weight))


def results_fields(config) -> dict:
  """results.json's naming of the loss: `loss` (the sum in words) and `loss_terms`."""
  weighted = describe(config)
  return {'loss': text(weighted), 'loss_terms': list(weighted)}


# The terms kdjax registers. A term's `hparams` hold the run's (`temperature`, traced per
# member of a temperature sweep), the step, `epoch` and its own state and key.


@register('ce', reads=('logits',))
def _ce(config) -> Term:
  """Cross-entropy on the labels (batch mean)."""
  del config

  def loss(student, teacher, labels, hparams, own_params):
    del teacher, hparams, own_params
    return jnp.mean(losses.cross_entropy(student['logits'], labels)), {}

  return Term(label='ce', loss=loss, task=True)


@register('tempered_ce', reads=('logits',))
def _tempered_ce(config) -> Term:
  """Defensive distillation's label term: cross-entropy of softmax(z / train_temperature)."""
  temperature = float(config.train_temperature)

  def loss(student, teacher, labels, hparams, own_params):
    del teacher, hparams, own_params
    return jnp.mean(losses.cross_entropy(student['logits'] / temperature, labels)), {}

  return Term(label=f'ce@T{temperature:g}', loss=loss, task=True)


@register('kd', reads=('logits', 'teacher'))
def _kd(config) -> Term:
  """Soft targets of `distill.kind` at T (`losses.soft_target_loss`, T² included), with
  `distill.standardize`; T is `hparams['temperature']` (a temperature sweep's member's)."""
  kind = config.distill.kind
  standardize = bool(config.distill.get('standardize', False))

  def loss(student, teacher, labels, hparams, own_params):
    del labels, own_params
    return jnp.mean(losses.soft_target_loss(
        student['logits'], teacher['logits'], temperature=hparams['temperature'], kind=kind,
        standardize_logits=standardize)), {}

  return Term(label=kd_label(kind, float(config.distill.temperature), standardize), loss=loss)


def _method_term(name: str) -> Callable[..., Term]:
  """The zoo's parameter-free method `name` (kdjax.methods.registry.METHODS) as a term;
  its options are `config.method`'s fields (DKD's warm-up among them)."""

  def factory(config) -> Term:
    method = methods_registry.METHODS[name]
    options = methods_registry.options(config)

    def loss(student, teacher, labels, hparams, own_params):
      del own_params
      return method.between(student, teacher, labels, options, hparams['epoch']), {}

    return Term(label=name, loss=loss)

  return factory


for _name, _method in methods_registry.METHODS.items():
  register(_name, reads=('features' if _method.taps_features else 'logits', 'teacher'))(
      _method_term(_name))


def _trained_term(name: str) -> Callable[..., Term]:
  """The zoo's method `name` with parts of its own (kdjax.methods.trained.TRAINED) as a
  term: its parameters and state, shaped after both networks' features, live under the
  term's name. Without RepDistiller's init stage (that stage belongs to `method.name`)."""

  def factory(config) -> Term:
    method = methods_registry.trained.TRAINED[name]
    context = methods_registry.trained.Context(options=methods_registry.options(config))

    def init_with(rng, student, teacher):
      # Zeros of the features' shapes: modules initialise on arrays.
      zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)  # noqa: E731
      return method.init(rng, zeros(student['features']), zeros(teacher['features']), context)

    def loss(student, teacher, labels, hparams, own_params):
      run = methods_registry.trained.Run(
          params=own_params, state=hparams['objective_state'],
          example_index=hparams.get('example_index'), rng=hparams['objective_rng'],
          in_init=False, epoch=hparams['epoch'])
      term, _, state = method.loss(student['features'], teacher['features'], labels, run,
                                   context)
      return term, {objective_registry.STATE: state}

    return Term(label=name, loss=loss, init_with=init_with)

  return factory


for _name, _method in methods_registry.trained.TRAINED.items():
  if not _method.per_example and not _method.init_stage:
    register(_name, reads=('features', 'teacher'))(_trained_term(_name))
