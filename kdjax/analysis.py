"""Post-hoc analysis of saved logits: bias adjustment, error counts, seed statistics."""

import numpy as np


def adjust_bias(logits: np.ndarray, class_index: int, delta: float) -> np.ndarray:
  """Adds `delta` to the logit of one class (Hinton et al. §3's fix for an
  omitted class); every other logit is returned unchanged."""
  adjusted = np.array(logits, copy=True)
  adjusted[..., class_index] += delta
  return adjusted


def errors(logits: np.ndarray, labels: np.ndarray, class_index: int | None = None) -> int:
  """Misclassified examples, all of them or only those labelled `class_index`."""
  wrong = np.argmax(logits, -1) != labels
  if class_index is not None:
    wrong &= labels == class_index
  return int(wrong.sum())


def choose_bias(logits: np.ndarray, labels: np.ndarray, class_index: int,
                candidates=np.arange(-5.0, 15.01, 0.1)) -> float:
  """The shift of one class's logit that minimises errors on (validation) data.

  Ties go to the smallest shift in magnitude, so the choice is deterministic.
  """
  counts = [(errors(adjust_bias(logits, class_index, d), labels), abs(d), d)
            for d in candidates]
  return float(round(min(counts)[2], 6))


def mean_std(values) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  values = np.asarray(values, float)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0
