import numpy as np

from kdjax import analysis


def test_adjust_bias_changes_only_the_chosen_logit():
  logits = np.arange(20, dtype=np.float32).reshape(2, 10)
  adjusted = analysis.adjust_bias(logits, 3, 3.5)
  expected = logits.copy()
  expected[:, 3] += 3.5
  np.testing.assert_array_equal(adjusted, expected)
  np.testing.assert_array_equal(logits, np.arange(20).reshape(2, 10))  # input untouched


def test_choose_bias_recovers_a_lowered_class():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 500)
  logits = rng.normal(size=(500, 10))
  logits[np.arange(500), labels] += 4.0
  logits[:, 3] -= 6.0  # class 3 badly under-predicted
  assert analysis.errors(logits, labels, class_index=3) == int((labels == 3).sum())
  shift = analysis.choose_bias(logits, labels, 3)
  assert 4.0 <= shift <= 9.0
  assert analysis.errors(analysis.adjust_bias(logits, 3, shift), labels) < 25


def test_mean_std():
  assert analysis.mean_std([1.0, 3.0]) == (2.0, np.sqrt(2.0))
  assert analysis.mean_std([5.0]) == (5.0, 0.0)
