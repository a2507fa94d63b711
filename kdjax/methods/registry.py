"""Methods by name: what each taps from the networks and how its loss is computed.

`config.method.name` picks one; the train step adds `method.weight ×` its loss
to the logit objective (cross-entropy, plus Hinton's KD when `distill.alpha`
> 0), as RepDistiller combines `-r`, `-a` and `-b`. Taps, in the models'
feature dicts (`return_features=True`):

  stages      the intermediate maps (`stage_features`), paired in order up to
              the shorter list; the losses are summed over the pairs
  last_stage  the last stage's output
  embedding   the penultimate vector ('pooled' of ResNets, the last hidden
              layer of MLPs and the small CNNs)
  logits      the logits (and the labels)
"""

import dataclasses
from typing import Callable

import jax.numpy as jnp

from kdjax import config as config_lib
from kdjax.data import catalog
from kdjax.errors import ConfigError
from kdjax.methods import ctkd
from kdjax.methods import features as features_lib
from kdjax.methods import logits as logits_lib
from kdjax.methods import mlkd
from kdjax.methods import relations
from kdjax.methods import review  # noqa: F401  (registers 'reviewkd' in trained.TRAINED)
from kdjax.methods import trained
from kdjax.methods.taps import embedding, stage_features, stage_keys  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Method:
  """A parameter-free method: its taps and `loss(student_taps, teacher_taps, labels, options, epoch)`."""
  name: str
  taps: str
  loss: Callable
  published_weight: float

  @property
  def taps_features(self) -> bool:
    return self.taps != 'logits'

  def between(self, student: dict, teacher: dict, labels, options: dict, epoch):
    """The loss between two networks' outputs ({'logits', 'features'} dicts)."""
    pick = (lambda o: o['features']) if self.taps_features else (lambda o: o)
    return self.loss(pick(student), pick(teacher), labels, options, epoch)


def _pairs(name, student, teacher):
  """Student and teacher maps in order, as many pairs as the shorter list (zip, as the
  references pair them)."""
  s, t = stage_features(student), stage_features(teacher)
  if not s or not t:
    raise ConfigError(f'config.method.name={name!r} pairs the networks\' stage outputs; '
                      f'the student has {len(s)}, the teacher {len(t)}')
  if name in ('at', 'nst') and any(x.ndim != 4 for x in s + t):
    raise ConfigError(f'config.method.name={name!r} needs feature maps (conv nets); '
                      'an MLP has none')
  return zip(s, t)


def _at(student, teacher, labels, options, epoch):
  del labels, epoch
  return sum(features_lib.at_loss(s, t, p=options['at_p'])
             for s, t in _pairs('at', student, teacher))


def _nst(student, teacher, labels, options, epoch):
  del labels, options, epoch
  return sum(features_lib.nst_loss(s, t) for s, t in _pairs('nst', student, teacher))


def _sp(student, teacher, labels, options, epoch):
  del labels, options, epoch
  s, t = stage_features(student), stage_features(teacher)
  if not s or not t:
    raise ConfigError("config.method.name='sp' needs the networks' stage outputs")
  return features_lib.sp_loss(s[-1], t[-1])


def _pkt(student, teacher, labels, options, epoch):
  del labels, epoch
  return relations.pkt_loss(embedding(student), embedding(teacher), eps=options['pkt_eps'])


def _rkd(student, teacher, labels, options, epoch):
  del labels, epoch
  return relations.rkd_loss(embedding(student), embedding(teacher),
                            distance_weight=options['rkd_distance_weight'],
                            angle_weight=options['rkd_angle_weight'])


def _dkd(student, teacher, labels, options, epoch):
  warmup = options['dkd_warmup_epochs']
  factor = jnp.minimum(epoch / warmup, 1.0) if warmup > 0 else 1.0
  return factor * logits_lib.dkd_loss(student['logits'], teacher['logits'], labels,
                                      alpha=options['dkd_alpha'], beta=options['dkd_beta'],
                                      temperature=options['dkd_temperature'],
                                      standardize_logits=options.get('standardize', False))


def _dist(student, teacher, labels, options, epoch):
  del labels, epoch
  return logits_lib.dist_loss(student['logits'], teacher['logits'], beta=options['dist_beta'],
                              gamma=options['dist_gamma'],
                              temperature=options['dist_temperature'])


# Weights: RepDistiller's train_student.py `-b` (DKD: mdistiller, whose loss
# carries its own alpha and beta; DIST: its authors' kd_loss_weight).
METHODS = {m.name: m for m in (
    Method('at', 'stages', _at, 1000.0),
    Method('nst', 'stages', _nst, 50.0),
    Method('sp', 'last_stage', _sp, 3000.0),
    Method('pkt', 'embedding', _pkt, 30000.0),
    Method('rkd', 'embedding', _rkd, 1.0),
    Method('dkd', 'logits', _dkd, 1.0),
    Method('dist', 'logits', _dist, 2.0),
)}


def get(name: str):
  """The method `name`: a `Method`, or a `kdjax.methods.trained.TrainedMethod`."""
  known = {**METHODS, **trained.TRAINED, ctkd.METHOD.name: ctkd.METHOD,
           mlkd.METHOD.name: mlkd.METHOD}
  if name not in known:
    raise ConfigError(f'config.method.name={name!r}: unknown; known: {", ".join(known)} '
                      "(or '' for none)")
  return known[name]


# RepDistiller's `init_epochs` for the methods it pre-trains (AB, FT, FSP).
PUBLISHED_INIT_EPOCHS = 30


def init_epochs(config) -> int:
  """Epochs of the method's init stage: `config.method.init_epochs`, or (< 0) 30 for a
  method RepDistiller pre-trains and 0 for the others."""
  if not config.method.name:
    return 0
  value = int(config.method.init_epochs)
  if value >= 0:
    return value
  return PUBLISHED_INIT_EPOCHS if getattr(get(config.method.name), 'init_stage', False) else 0


def needs_features(config) -> bool:
  """Whether the run's method taps features (so the teacher must run in the step)."""
  return bool(config.method.name) and get(config.method.name).taps_features


def strong_view(config) -> bool:
  """Whether the run's method sees a second, strongly augmented view of each batch (MLKD):
  the teacher then runs in the step on both views."""
  return bool(config.method.name) and getattr(get(config.method.name), 'strong_view', False)


def check_config(config) -> None:
  """Raises ConfigError for a `config.method` that cannot run (called by kdjax.checks.validate)."""
  if not config.method.name:
    return
  get(config.method.name)
  if not config.teacher.workdir:
    raise ConfigError(f'config.method.name={config.method.name!r}: a distillation method '
                      'needs config.teacher.workdir')
  if config.teacher.cache is True and needs_features(config):
    raise ConfigError(f"config.teacher.cache=True: method {config.method.name!r} taps the "
                      "teacher's features, which are not cached; use teacher.cache='auto'")
  method = get(config.method.name)
  for option, least in (('dkd_warmup_epochs', 0), ('reviewkd_warmup_epochs', 0),
                        ('reviewkd_max_mid_channels', 1)):
    if float(config.method[option]) < least:
      raise ConfigError(f'config.method.{option}={config.method[option]} must be >= {least}')
  if config.method.name == 'ctkd':
    _check_ctkd(config)
  if config.method.name == 'mlkd':
    _check_mlkd(config)
  if config.method.name == 'dist' and not float(config.method.dist_temperature) > 0:
    raise ConfigError(f'config.method.dist_temperature={config.method.dist_temperature} '
                      'must be > 0')
  epochs = init_epochs(config)
  if epochs and not getattr(method, 'init_stage', False):
    raise ConfigError(f'config.method.init_epochs={config.method.init_epochs}: method '
                      f'{config.method.name!r} has no init stage (only ab, fsp and ft do)')
  if epochs and epochs >= config.num_epochs:
    raise ConfigError(f'config.method.init_epochs={epochs} leaves no main training in '
                      f'config.num_epochs={config.num_epochs} (the init stage is counted in it)')
  if getattr(method, 'per_example', False):
    if catalog.input_pipeline(config) != 'device':
      raise ConfigError(f"config.method.name={config.method.name!r} keeps a memory bank per "
                        "training example, which streamed input cannot index; use "
                        "input.pipeline='device'")
    if len(config.sweep.method_weight) and config_lib.sweep_mode(config) == 'vmap':
      raise ConfigError(f'config.sweep.method_weight: method {config.method.name!r} keeps '
                        "per-example state; sweep its weight with sweep.mode='loop'")


def _check_ctkd(config) -> None:
  if not config_lib.alpha(config) > 0:
    raise ConfigError("config.method.name='ctkd' learns the temperature of the soft term: "
                      'it needs config.distill.alpha > 0')
  if config.distill.kind == 'mse_logits' or 'mse_logits' in tuple(config.sweep.kind):
    raise ConfigError("config.distill.kind='mse_logits' has no temperature for method 'ctkd' "
                      'to learn')
  if len(config.sweep.temperature):
    raise ConfigError(f'config.sweep.temperature={tuple(config.sweep.temperature)}: method '
                      "'ctkd' learns the temperature")
  if not float(config.method.ctkd_t_start) > 0 or not float(config.method.ctkd_t_end) >= 0:
    raise ConfigError(f'config.method.ctkd_t_start={config.method.ctkd_t_start} must be > 0 '
                      f'and ctkd_t_end={config.method.ctkd_t_end} >= 0')
  if float(config.method.ctkd_epochs) < 0 or int(config.method.ctkd_instance_hidden) < 1:
    raise ConfigError(f'config.method.ctkd_epochs={config.method.ctkd_epochs} must be >= 0 '
                      f'and ctkd_instance_hidden={config.method.ctkd_instance_hidden} >= 1')


def _check_mlkd(config) -> None:
  if config_lib.alpha(config) > 0 or len(config.sweep.alpha):
    raise ConfigError("config.method.name='mlkd' carries its own KD terms (at "
                      'method.mlkd_temperature and mlkd_temperatures); set distill.alpha=0')
  if config.teacher.cache is True:
    raise ConfigError("config.teacher.cache=True: method 'mlkd' runs the teacher on two "
                      "augmented views in the step; use teacher.cache='auto'")
  temperatures = (config.method.mlkd_temperature, *tuple(config.method.mlkd_temperatures))
  if not all(float(t) > 0 for t in temperatures):
    raise ConfigError(f'config.method.mlkd_temperature and mlkd_temperatures={temperatures} '
                      'must be > 0')
  for field in ('mlkd_ce_weight', 'mlkd_class_weight', 'mlkd_batch_weight'):
    if not float(config.method[field]) >= 0:
      raise ConfigError(f'config.method.{field}={config.method[field]} must be >= 0')


def options(config) -> dict:
  """The method's options from `config.method`, as plain Python values, and
  `standardize` (`config.distill.standardize`, which DKD and MLKD read)."""
  return {**{k: v for k, v in config.method.to_dict().items()
             if k not in ('name', 'weight', 'init_epochs')},
          'standardize': bool(config.distill.get('standardize', False))}


def weight(config) -> float:
  w = float(config.method.weight)
  return get(config.method.name).published_weight if w < 0 else w
