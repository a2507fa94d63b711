"""Be Your Own Teacher (Zhang et al., ICCV 2019): the loss, the objective, anytime inference.

A multi-exit network (kdjax.models.multi_exit) is trained in one pass; its
deepest exit teaches every shallow one through soft targets and feature
hints. The teacher terms see the deepest exit under `stop_gradient`, so the
deepest classifier learns from the labels alone.

Defaults follow a public PyTorch implementation of BYOT
(luanyunteng/pytorch-be-your-own-teacher, train.py): T = 3,
alpha = 0.1 (`--alpha`, "weight of kd loss"), the soft term multiplied by
T² (that code's soft term is the cross-entropy −Σ q_C^T log q_i^T, which
differs from the KL by the teacher's entropy, a constant for the
gradient), and beta = 1e-6 on a feature loss *summed* over a batch of 128 and
every element (its mask, "either map > 0", changes nothing on ReLU
outputs); kdjax averages the per-example squared L2 norm over the batch,
so the same weight is 1e-6 · 128 = 1.28e-4 (`feature_weight`). That
code also weights the deepest exit's cross-entropy by 1 − alpha, where the
paper's equation and kdjax's default give it weight 1 (`deepest_weight`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import config as config_lib
from kdjax import losses
from kdjax import objective_registry
from kdjax import terms as terms_lib
from kdjax.errors import ConfigError
from kdjax.models import multi_exit

ALPHA = 0.1
TEMPERATURE = 3.0
FEATURE_WEIGHT = 1e-6 * 128


def byot_loss(exit_logits, shallow_hints, deepest_hint, labels, *, alpha=ALPHA,
              temperature=TEMPERATURE, feature_weight=FEATURE_WEIGHT, t_squared: bool = True,
              deepest_weight=1.0):
  """The BYOT loss of one batch, per example.

      loss = w_C · CE(q_C, y)
             + Σ_{i < C} [ (1 − α) · CE(q_i, y)
                           + α · s · KL(q_C^T ‖ q_i^T)
                           + λ · ‖F_i − F_C‖² ]

  q_i = softmax(z_i), q_i^T = softmax(z_i / T), F_i the i-th exit's hint
  (its bottleneck's output), C the deepest exit, s = T² when `t_squared`
  (the PyTorch code multiplies its soft loss by T²) else 1, w_C =
  `deepest_weight`. q_C^T and F_C enter under `stop_gradient`: the deepest
  exit is taught by the labels only.

  Args:
    exit_logits: [E, B, K] logits of every exit, shallowest first, deepest last.
    shallow_hints: [E − 1, B, ...] feature maps of the shallow exits.
    deepest_hint: [B, ...] the deepest stage's feature map (same shape as a hint).
    labels: [B] integer classes.
    alpha: weight of the soft term (1 − alpha on a shallow exit's label term).
    temperature: softmax temperature of the soft term.
    feature_weight: λ, the weight of each squared L2 feature distance.
    t_squared: multiply the soft term by T² (Hinton's gradient scaling).
    deepest_weight: weight of the deepest exit's cross-entropy.

  Returns:
    (per-example loss [B], dict of per-example terms: 'ce' [E, B], 'kl'
    [E − 1, B], 'feature' [E − 1, B]).
  """
  exit_logits = jnp.asarray(exit_logits)
  ce = losses.cross_entropy(exit_logits, labels[None])
  teacher_logits = jax.lax.stop_gradient(exit_logits[-1])
  teacher_log_probs = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
  student_log_probs = jax.nn.log_softmax(exit_logits[:-1] / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
  scale = temperature**2 if t_squared else 1.0
  difference = shallow_hints - jax.lax.stop_gradient(deepest_hint)[None]
  feature = jnp.sum(jnp.square(difference).reshape(*difference.shape[:2], -1), axis=-1)
  shallow = (1.0 - alpha) * ce[:-1] + alpha * scale * kl + feature_weight * feature
  total = deepest_weight * ce[-1] + jnp.sum(shallow, axis=0)
  return total, {'ce': ce, 'kl': kl, 'feature': feature}


def objective(*, alpha=ALPHA, temperature=TEMPERATURE, feature_weight=FEATURE_WEIGHT,
              t_squared: bool = True, deepest_weight=1.0) -> objective_registry.Objective:
  """The train-step objective of a multi-exit model: `byot_loss` on its features.

  Metrics: the mean KL and feature terms and each exit's training accuracy.
  """

  def loss(student, teacher, labels, hparams, own_params):
    del teacher, hparams, own_params  # the network is its own teacher
    exits, (logits, hints, deepest) = _exits(student['features'])
    per_example, terms = byot_loss(
        jnp.stack(logits), jnp.stack(hints), deepest, labels, alpha=alpha,
        temperature=temperature, feature_weight=feature_weight, t_squared=t_squared,
        deepest_weight=deepest_weight)
    metrics = {'byot_kl': jnp.mean(terms['kl']), 'byot_feature': jnp.mean(terms['feature']),
               # The four named terms of the loss (kdjax.terms.describe), unweighted.
               'term/ce/deepest': jnp.mean(terms['ce'][-1]),
               'term/ce/shallow': jnp.mean(jnp.sum(terms['ce'][:-1], 0)),
               'term/kd/shallow': jnp.mean(jnp.sum(terms['kl'], 0)),
               'term/feature/shallow': jnp.mean(jnp.sum(terms['feature'], 0))}
    for stage, exit_logits in zip(exits, logits):
      metrics[f'exit{stage}_accuracy'] = jnp.mean(jnp.argmax(exit_logits, -1) == labels)
    return jnp.mean(per_example), metrics

  return objective_registry.Objective(name='byot', loss=loss, taps_features=True)


def _exits(features) -> tuple[list[int], tuple]:
  """The exits' stages and (logits, shallow hints, deepest hint) of a multi-exit model."""
  exits = sorted(int(k[len('exit'):-len('_logits')]) for k in features
                 if k.startswith('exit') and k.endswith('_logits'))
  if not exits:
    raise ConfigError("BYOT's loss needs a multi-exit model (config.model.name='multi_exit')")
  return exits, multi_exit.exit_outputs(features, exits)


def _exit_term(part: str, label: str):
  """BYOT's per-exit term `part` of `byot_loss` as a term of the loss algebra: the batch
  mean of the deepest exit's cross-entropy ('ce_deepest'), or of the sum over the
  shallow exits of their cross-entropy ('ce_shallow'), their KL from the deepest at
  `byot.temperature` ('kd', without the T² that its weight carries) or their hint
  distance ('feature')."""

  def factory(config) -> terms_lib.Term:
    temperature = float(config.byot.temperature)

    def loss(student, teacher, labels, hparams, own_params):
      del teacher, hparams, own_params
      _, (logits, hints, deepest) = _exits(student['features'])
      _, parts = byot_loss(jnp.stack(logits), jnp.stack(hints), deepest, labels,
                           temperature=temperature)
      if part == 'ce_deepest':
        return jnp.mean(parts['ce'][-1]), {}
      if part == 'ce_shallow':
        return jnp.mean(jnp.sum(parts['ce'][:-1], 0)), {}
      return jnp.mean(jnp.sum(parts['kl' if part == 'kd' else 'feature'], 0)), {}

    return terms_lib.Term(label=label.format(T=temperature), loss=loss,
                          task=part.startswith('ce_'))

  return factory


def _check_exit_terms(c) -> None:
  if c.model.name != 'multi_exit':
    config_lib.fail('model.name', c.model.name, "must be 'multi_exit' for BYOT's exit terms")
  config_lib.check_positive(c, 'byot.temperature')


for _part, _label in (('ce_deepest', 'ce/deepest'), ('ce_shallow', 'ce/shallow'),
                      ('kd', 'kd@T{T:g}/shallow'), ('feature', 'feature/shallow')):
  terms_lib.register(f'exit_{_part}', reads=('features',), validate=_check_exit_terms)(
      _exit_term(_part, _label))


def check_config(c) -> None:
  """Raises ConfigError for a BYOT run's fields: a multi-exit model, no teacher, `config.byot`."""
  fail = config_lib.fail
  if c.model.name != 'multi_exit':
    fail('model.name', c.model.name, "must be 'multi_exit' with distill.objective='byot'")
  if c.teacher.workdir:
    fail('teacher.workdir', c.teacher.workdir,
         "must be '' with distill.objective='byot' (the network is its own teacher)")
  if not 0.0 <= c.byot.alpha <= 1.0:
    fail('byot.alpha', c.byot.alpha, 'must be in [0, 1]')
  config_lib.check_positive(c, 'byot.temperature')
  for field in ('feature_weight', 'deepest_weight'):
    if not c.byot[field] >= 0:
      fail(f'byot.{field}', c.byot[field], 'must be >= 0')
  if not isinstance(c.byot.t_squared, bool):
    fail('byot.t_squared', c.byot.t_squared, 'must be True or False')


@objective_registry.register('byot', validate=check_config)
def _from_config(config, *, swept_kind: bool = False) -> objective_registry.Objective:
  del swept_kind
  b = config.byot
  return objective(alpha=float(b.alpha), temperature=float(b.temperature),
                   feature_weight=float(b.feature_weight), t_squared=bool(b.t_squared),
                   deepest_weight=float(b.deepest_weight))


def softmax(logits: np.ndarray) -> np.ndarray:
  logits = np.asarray(logits, np.float64)
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)


def ensemble_probs(exit_logits: np.ndarray) -> np.ndarray:
  """The ensemble of the exits: the mean of their softmax outputs ([E, N, K] -> [N, K])."""
  return softmax(exit_logits).mean(0)


def anytime(exit_logits: np.ndarray, threshold: float) -> np.ndarray:
  """Which exit answers each example: the first whose max softmax probability exceeds
  `threshold`, the deepest when none does.

  Threshold 0 (below any probability) stops every example at the first exit;
  a threshold above 1 lets none stop before the deepest.

  Args:
    exit_logits: [E, N, K] logits of every exit, shallowest first.
    threshold: the confidence an exit needs to answer.

  Returns:
    [N] index (0-based) of the answering exit.
  """
  confident = softmax(exit_logits).max(-1) > threshold  # [E, N]
  confident[-1] = True
  return np.argmax(confident, axis=0)


def anytime_curve(exit_logits: np.ndarray, labels: np.ndarray, exit_flops: list[float],
                  thresholds) -> list[dict]:
  """Accuracy and mean FLOPs per example of anytime inference at each threshold.

  `exit_flops[i]` is the cost of a cascade that stops at exit i
  (kdjax.models.multi_exit.exit_flops).
  """
  predictions = np.argmax(exit_logits, -1)  # [E, N]
  out = []
  for threshold in thresholds:
    chosen = anytime(exit_logits, threshold)
    answer = np.take_along_axis(predictions, chosen[None], axis=0)[0]
    out.append({'threshold': float(threshold),
                'accuracy': float(np.mean(answer == labels)),
                'flops': float(np.mean(np.asarray(exit_flops)[chosen])),
                'exit_fractions': [float(np.mean(chosen == i))
                                   for i in range(exit_logits.shape[0])]})
  return out


THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.995, 0.999, 1.01)


def evaluate_exits(exit_logits: dict, labels: dict, exit_flops: list[float],
                   names: list[str], thresholds=THRESHOLDS) -> dict:
  """Per split: each exit's accuracy, the ensemble's, and the anytime curve.

  Args:
    exit_logits: split -> [E, N, K].
    labels: split -> [N].
    exit_flops: cost of stopping at each exit.
    names: the exits' names, shallowest first.
    thresholds: the anytime sweep.
  """
  out = {}
  for split, logits in exit_logits.items():
    y = labels[split]
    out[split] = {
        'exit_accuracy': {name: float(np.mean(np.argmax(l, -1) == y))
                          for name, l in zip(names, logits)},
        'ensemble_accuracy': float(np.mean(np.argmax(ensemble_probs(logits), -1) == y)),
        'anytime': anytime_curve(logits, y, exit_flops, thresholds),
    }
  return out
