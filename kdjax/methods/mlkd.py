"""Multi-level logit distillation (MLKD): instance, batch and class alignment on two views.

Jin, Wang & Lin, "Multi-Level Logit Distillation", CVPR 2023. The authors' code
(Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/distillers/KD_ours.py;
the same `forward_train` as `MLKD` in sunshangquan/logit-standardization-KD,
mdistiller/distillers/MLKD.py, which adds logit standardisation to its KD terms)
runs the student and the teacher on a weakly and a strongly augmented view of
each batch and sums, at several temperatures, KD (instance level), the batch ×
batch similarity of the predictions (`batch_loss`, their `bc_loss`) and the
class × class correlation (`class_loss`, their `cc_loss`), scaled by the
teacher's confidence masks (`confidence_masks`).

`config.method.name = 'mlkd'` trains with
    loss = mlkd_ce_weight · (CE(weak) + CE(strong)) + method.weight · mlkd_loss
(the authors' CIFAR-100 weights 0.1 and 0.9, their mdistiller `KD.LOSS`
defaults, base temperature 4; with logit standardisation, `--logit-stand`:
weight 9, base temperature 2). The train step augments each batch twice
(`kdjax.objectives.Objective.strong_shift`).

Deviation from the authors: their strong view is a RandAugment-style policy
(random photometric and geometric operations with Cutout) from their data
loader; kdjax has no such policy, so the strong view here is kdjax's own
augmentation at a stronger setting: a random translation by up to
`mlkd_strong_shift` pixels (default −1: max(2 · augment.max_shift, 4)) and the
run's flip, with a key of its own.
"""

import dataclasses

import jax
import jax.numpy as jnp

from kdjax import losses

# The authors' extra temperatures, in their order, after the base one.
TEMPERATURES = (3.0, 5.0, 2.0, 6.0)



def _gram(a, b):
  return jnp.matmul(a, b, precision=losses.EXACT)

def _probabilities(logits, temperature):
  return jax.nn.softmax(logits / temperature, axis=-1)


def kd_loss(student_logits, teacher_logits, *, temperature: float):
  """T² · mean_b KL(softmax(t_b / T) ‖ softmax(s_b / T)) (the authors' `kd_loss`)."""
  return jnp.mean(losses.soft_target_loss(student_logits, teacher_logits,
                                          temperature=temperature))


def class_loss(student_logits, teacher_logits, *, temperature: float):
  """Class-level alignment (the authors' `cc_loss`): with P = softmax(z / T) ([B, K]),

    ‖P_tᵀ P_t − P_sᵀ P_s‖²_F / K
  """
  p_s, p_t = _probabilities(student_logits, temperature), _probabilities(teacher_logits,
                                                                           temperature)
  return jnp.sum((_gram(p_t.T, p_t) - _gram(p_s.T, p_s)) ** 2) / student_logits.shape[-1]


def batch_loss(student_logits, teacher_logits, *, temperature: float):
  """Batch-level alignment (the authors' `bc_loss`): with P = softmax(z / T) ([B, K]),

    ‖P_t P_tᵀ − P_s P_sᵀ‖²_F / B
  """
  p_s, p_t = _probabilities(student_logits, temperature), _probabilities(teacher_logits,
                                                                           temperature)
  return jnp.sum((_gram(p_t, p_t.T) - _gram(p_s, p_s.T)) ** 2) / student_logits.shape[0]


def confidence_masks(teacher_weak_logits):
  """The teacher's confidence masks on the weak view, as the authors compute them:

    c_b = max_k softmax(t_b)_k,        mask_b       = c_b ≤ median_b(c)
    C_k = Σ_b softmax(t_b)_k,          class_mask_k = C_k ≤ median_k(C)

  (softmax at temperature 1; the median is NumPy's `percentile(·, 50)`, the mean
  of the two middle values for an even count). Returns the two boolean masks,
  [B] and [K]. Note `≤`: the masks keep the less confident half, as their code
  does (`confidence.le(conf_thresh)`).
  """
  p = jax.nn.softmax(jax.lax.stop_gradient(teacher_weak_logits), axis=-1)
  confidence = jnp.max(p, axis=-1)
  class_confidence = jnp.sum(p, axis=0)
  return (confidence <= jnp.percentile(confidence, 50.0),
          class_confidence <= jnp.percentile(class_confidence, 50.0))


def mlkd_loss(student_weak, teacher_weak, student_strong, teacher_strong, *,
              temperature: float = 4.0, temperatures=TEMPERATURES,
              standardize_logits: bool = False, class_weight: float = 1.0,
              batch_weight: float = 1.0):
  """MLKD's distillation loss, the authors' `forward_train` without its cross-entropy
  and before its `KD_WEIGHT`.

  With 𝒯 = (T, *temperatures) = (4, 3, 5, 2, 6) by default, w/s the weak/strong
  views' logits, m = mean_b mask_b and c = mean_k class_mask_k
  (`confidence_masks` of the teacher's weak logits):

    kd_weak   = m · Σ_{τ∈𝒯} KD_τ(s_w, t_w)
    kd_strong = Σ_{τ∈𝒯[:3]} KD_τ(s_s, t_s) + Σ_{τ∈𝒯[3:]} KD_τ(s_w, t_w)
    cc        = c · Σ_{τ∈𝒯} CC_τ(s_w, t_w)
    bc        = m · Σ_{τ∈𝒯} BC_τ(s_w, t_w)
    loss      = kd_weak + kd_strong + class_weight · cc + batch_weight · bc

  KD = `kd_loss` (T² · KL, the batch's mean), CC = `class_loss`, BC = `batch_loss`.
  This is the authors' code as it runs, which differs from the paper in ways kept
  here: each term is a batch mean multiplied by a mask (`(loss * mask).mean()` of a
  scalar), so a mask scales its terms by the fraction it keeps; the strong view's
  KD terms at the last two temperatures take the weak view's logits; the
  class- and batch-level terms of the strong view are computed there but not in
  the loss, so they are not here. `standardize_logits` z-scores both sides'
  logits inside the KD terms only (logit standardisation's `MLKD`); the masks,
  CC and BC use the raw logits. The teacher's side carries no gradient.

  `class_weight` and `batch_weight` (`method.mlkd_class_weight`, `mlkd_batch_weight`;
  1 in the authors' code) scale CC and BC against the KD terms. They matter because
  CC and BC grow with the batch and shrink with the classes (CC about (B / K)², BC about
  B / K for confident predictions), while the KD terms do not; and logit
  standardisation raises the weight of every term (0.9 → 9) to make up for the smaller
  KL of standardised logits although CC and BC are not standardised. At the authors'
  CIFAR-100 size (B 64, K 100) CC is small beside KD either way; at B 128, K 10 with
  weight 9, CC starts about 15 times KD's value and its gradient three times KD's
  (nearly twenty times by the end of the first epoch), so the student fits the teacher's Gram
  matrices before its labels (`tests/test_mlkd_ls.py`). 0.1 puts CC and BC of MLKD+LS
  back at plain MLKD's weight 0.9.
  """
  teacher_weak = jax.lax.stop_gradient(teacher_weak)
  teacher_strong = jax.lax.stop_gradient(teacher_strong)
  mask, class_mask = confidence_masks(teacher_weak)
  m = jnp.mean(mask.astype(student_weak.dtype))
  c = jnp.mean(class_mask.astype(student_weak.dtype))
  all_temperatures = (float(temperature), *(float(t) for t in temperatures))

  def kd(s, t, tau):
    if standardize_logits:
      s, t = losses.standardize(s), losses.standardize(t)
    return kd_loss(s, t, temperature=tau)

  kd_weak = m * sum(kd(student_weak, teacher_weak, tau) for tau in all_temperatures)
  kd_strong = sum(kd(student_strong, teacher_strong, tau) if i < 3
                  else kd(student_weak, teacher_weak, tau)
                  for i, tau in enumerate(all_temperatures))
  cc = class_weight * c * sum(class_loss(student_weak, teacher_weak, temperature=tau)
               for tau in all_temperatures)
  bc = batch_weight * m * sum(batch_loss(student_weak, teacher_weak, temperature=tau)
               for tau in all_temperatures)
  return kd_weak + kd_strong + cc + bc


@dataclasses.dataclass(frozen=True)
class MultiLevel:
  """MLKD as a method: logits of two views; its objective is its own (see module doc).

  `between(student, teacher, labels, options, epoch)` reads `'logits'` (the weak
  view) and `'strong_logits'` of both networks.
  """
  name: str = 'mlkd'
  taps: str = 'logits'
  published_weight: float = 0.9  # the authors' KD_WEIGHT (mdistiller's default)
  init_stage = False
  per_example = False
  taps_features = False
  strong_view = True

  def between(self, student: dict, teacher: dict, labels, options: dict, epoch):
    del labels, epoch
    return mlkd_loss(student['logits'], teacher['logits'], student['strong_logits'],
                     teacher['strong_logits'], temperature=float(options['mlkd_temperature']),
                     temperatures=tuple(options['mlkd_temperatures']),
                     standardize_logits=bool(options.get('standardize', False)),
                     class_weight=float(options.get('mlkd_class_weight', 1.0)),
                     batch_weight=float(options.get('mlkd_batch_weight', 1.0)))


def strong_shift(config) -> int:
  """The strong view's largest translation: `method.mlkd_strong_shift`, or (< 0)
  max(2 · augment.max_shift, 4)."""
  value = int(config.method.mlkd_strong_shift)
  return value if value >= 0 else max(2 * int(config.augment.max_shift), 4)


METHOD = MultiLevel()
