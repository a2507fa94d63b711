"""How closely a distilled student follows its teacher, on validation and test."""

import numpy as np
from scipy import special

from kdjax import config as config_lib
from kdjax.evaluators import registry


def agreement(teacher_logits, student_logits) -> dict:
  """Top-1 agreement and the mean KL divergence of the student from the teacher at T = 1.

      top1_agreement = mean_n [argmax_k t_nk = argmax_k s_nk]
      kl_teacher_student = mean_n Σ_k p_nk (log p_nk − log q_nk),
      p = softmax(t), q = softmax(s)

  Args:
    teacher_logits: [N, K].
    student_logits: [N, K].

  Returns:
    {'top1_agreement': float, 'kl_teacher_student': float}.
  """
  teacher_logits = np.asarray(teacher_logits, np.float64)
  student_logits = np.asarray(student_logits, np.float64)
  teacher_log_probs = special.log_softmax(teacher_logits, axis=-1)
  student_log_probs = special.log_softmax(student_logits, axis=-1)
  kl = np.sum(np.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
  return {'top1_agreement': float(np.mean(teacher_logits.argmax(-1)
                                          == student_logits.argmax(-1))),
          'kl_teacher_student': float(np.mean(kl))}


def _has_teacher(context: registry.Context) -> bool:
  return context.teacher is not None


def check_config(config) -> None:
  if not config.teacher.workdir:
    config_lib.fail('evaluators', tuple(config.evaluators),
                    "'agreement' needs a teacher (config.teacher.workdir)")


@registry.register('agreement', applies=_has_teacher, validate=check_config)
def evaluate(context: registry.Context) -> registry.Sections:
  """Section `agreement`: per split, `agreement` of the teacher's and each student's logits."""
  teacher_logits = context.teacher_logits
  return registry.Sections(members=tuple(
      {'agreement': {split: agreement(teacher_logits[split], logits[m])
                     for split, logits in context.logits.items()}}
      for m in range(context.members.count)))
