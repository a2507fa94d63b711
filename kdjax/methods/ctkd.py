"""Curriculum temperature (CTKD): the soft term's temperature, learned adversarially.

Li, Li, Yang, Zhao, Song, Luo, Li & Yang, "Curriculum Temperature for Knowledge
Distillation", AAAI 2023. The temperature is a trainable part of the objective
(in the student's checkpoint, trained by the student's optimizer) that the
logit KD term uses; its gradient passes a gradient reversal layer, so it moves
to increase the distillation loss while the student decreases it, with a
strength λ that rises from 0 to 1 over the first epochs (the curriculum). The
authors' code (zhengli97/CTKD): `Global_T` and `GradientReversal` in
models/temp_global.py, `CosineDecay` and the temperature t_start + t_end ·
sigmoid(θ) in train_student.py and helper/loops.py; their CIFAR script trains
with `--cosine_decay 1 --decay_max 0 --decay_min -1 --decay_loops 10`, t_start 1,
t_end 20, beside 0.1 · CE + 0.9 · KD.

`config.method.name = 'ctkd'` replaces `distill.temperature` in the logit KD
term (`distill.alpha` > 0) by the learned one; `method.ctkd_instance` learns
one temperature per example from the two networks' logits instead.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import losses


@jax.custom_vjp
def gradient_reversal(x, strength):
  """The identity forward; backward the incoming gradient times −`strength`.

    y = x,   ∂L/∂x ← −strength · ∂L/∂y

  Ganin & Lempitsky's gradient reversal layer (2015). CTKD's authors
  (`GradientReversalFunction`) multiply by their curriculum value, which runs
  from 0 to −1; here `strength` is that value's negative, λ ≥ 0. `strength`
  gets no gradient.
  """
  del strength
  return x


def _reversal_forward(x, strength):
  return x, strength


def _reversal_backward(strength, g):
  return (-strength * g).astype(g.dtype), jnp.zeros_like(strength)


gradient_reversal.defvjp(_reversal_forward, _reversal_backward)


def curriculum_weight(epoch, *, epochs: float, max_weight: float = 1.0):
  """The reversal strength λ of `epoch` (1 in the first epoch, as the authors count):

    λ = max_weight · (1 − cos(π · min(epoch, L) / L)) / 2,   L = `epochs`

  rising from 0 to `max_weight` over L epochs and constant after. The authors'
  `CosineDecay(max_value=0, min_value=-1, num_loops=L).get_value(epoch)` is −λ
  with `max_weight` 1 (their `decay_min` is −`max_weight`). L = 0: `max_weight`
  from the start.
  """
  if epochs <= 0:
    return jnp.full(jnp.shape(epoch), max_weight, jnp.float32)
  progress = jnp.clip(jnp.asarray(epoch, jnp.float32), 0.0, epochs) / epochs
  return max_weight * (1.0 - jnp.cos(jnp.pi * progress)) / 2.0


def temperature_of(raw, *, t_start: float = 1.0, t_end: float = 20.0):
  """T = t_start + t_end · sigmoid(raw): in (t_start, t_start + t_end) (the authors')."""
  return t_start + t_end * jax.nn.sigmoid(raw)


class InstanceTemperature(nn.Module):
  """One raw temperature per example from the two networks' logits: a two-layer MLP on
  [teacher logits, student logits] ([B, 2K] → `hidden` → ReLU → 1).

  The authors' instance-wise module is not in their repository (only a link to
  files elsewhere), so this is kdjax's own: the student's logits enter without
  a gradient (only the temperature's parameters learn through this path), and
  the last layer starts at weights 0 and bias 1, so every example starts at
  the global temperature's initial value (θ = 1).
  """
  hidden: int = 128

  @nn.compact
  def __call__(self, student_logits, teacher_logits):
    x = jnp.concatenate([teacher_logits, jax.lax.stop_gradient(student_logits)], axis=-1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    x = nn.Dense(1, kernel_init=nn.initializers.zeros,
                 bias_init=nn.initializers.constant(1.0))(x)
    return x[..., 0]


@dataclasses.dataclass(frozen=True)
class CurriculumTemperature:
  """CTKD as a method: it owns the temperature of the objective's soft term.

  `init(rng, num_classes, options)` gives the parameters; `temperature(params,
  student_logits, teacher_logits, strength, options)` the temperature (a scalar, or
  [B] with `ctkd_instance`) whose gradient to the parameters is reversed and
  scaled by `strength`.
  """
  name: str = 'ctkd'
  taps: str = 'logits'
  published_weight: float = 1.0  # no term of its own: the objective's KD term is CTKD's
  init_stage = False
  per_example = False
  taps_features = False
  sets_temperature = True

  def init(self, rng, num_classes: int, options: dict):
    if not options['ctkd_instance']:
      return {'global_t': jnp.ones((), jnp.float32)}  # the authors' torch.ones(1)
    zeros = jnp.zeros((1, num_classes), jnp.float32)
    module = InstanceTemperature(int(options['ctkd_instance_hidden']))
    return module.init(rng, zeros, zeros)['params']

  def temperature(self, params, student_logits, teacher_logits, strength, options: dict):
    if options['ctkd_instance']:
      raw = InstanceTemperature(int(options['ctkd_instance_hidden'])).apply(
          {'params': params}, student_logits, teacher_logits)
    else:
      raw = params['global_t']
    return temperature_of(gradient_reversal(raw, strength), t_start=options['ctkd_t_start'],
                          t_end=options['ctkd_t_end'])

  def strength(self, epoch, options: dict):
    """λ at `epoch` (epochs done, fractional): the authors' 1-based count of the epoch."""
    return curriculum_weight(jnp.floor(epoch) + 1.0, epochs=float(options['ctkd_epochs']),
                             max_weight=float(options['ctkd_max_strength']))

  def between(self, student: dict, teacher: dict, labels, options: dict, epoch):
    """The KL soft term at the fresh temperature (for abstract shape checks of a pair)."""
    del labels
    params = self.init(jax.random.PRNGKey(0), student['logits'].shape[-1], options)
    temperature = self.temperature(params, student['logits'], teacher['logits'],
                                   self.strength(epoch, options), options)
    return jnp.mean(losses.soft_target_loss(student['logits'], teacher['logits'],
                                            temperature=temperature))


METHOD = CurriculumTemperature()
