"""How well the students' confidence matches their accuracy: ECE and NLL (opt in by name)."""

import numpy as np
from scipy import special

from kdjax.evaluators import registry

NUM_BINS = 15


def expected_calibration_error(logits, labels, *, num_bins: int = NUM_BINS) -> float:
  """Expected calibration error over equal-width confidence bins (Guo et al., 2017).

      ECE = Σ_b (|B_b| / N) · |accuracy(B_b) − confidence(B_b)|

  An example's confidence is its largest softmax probability; bin b holds the
  examples with confidence in (b / num_bins, (b + 1) / num_bins].

  Args:
    logits: [N, K].
    labels: [N] integer classes.
    num_bins: how many bins split [0, 1].
  """
  probs = special.softmax(np.asarray(logits, np.float64), axis=-1)
  confidence = probs.max(-1)
  correct = probs.argmax(-1) == np.asarray(labels)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.digitize(confidence, edges[1:-1], right=True)
  error = 0.0
  for b in range(num_bins):
    members = bins == b
    if members.any():
      error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
  return float(error)


def mean_nll(logits, labels) -> float:
  """The mean negative log-likelihood of the labels, −mean_n log softmax(z_n)[y_n]."""
  log_probs = special.log_softmax(np.asarray(logits, np.float64), axis=-1)
  return float(-np.mean(np.take_along_axis(log_probs, np.asarray(labels)[:, None], -1)))


@registry.register('calibration')
def evaluate(context: registry.Context) -> registry.Sections:
  """Section `calibration`: per split, each student's `ece` (15 bins) and `nll`."""
  return registry.Sections(members=tuple(
      {'calibration': {split: {'ece': expected_calibration_error(logits[m], context.labels[split]),
                               'nll': mean_nll(logits[m], context.labels[split])}
                       for split, logits in context.logits.items()}}
      for m in range(context.members.count)))
