"""What a method reads of a network's feature dict: its stages, in order, and its embedding.

Shared by the parameter-free methods (`kdjax.methods.registry`) and those with
parts of their own (`kdjax.methods.trained`, `kdjax.methods.review`).
"""

import re


def stage_keys(features: dict) -> list[str]:
  """The keys of the intermediate maps a method pairs, in order (the references'
  feat[1:-1]).

  Networks with a stem ('stem': ResNets, WRNs, MobileNetV2, ShuffleNets) give
  every stage; networks without one (VGGs, the small CNNs) every stage after
  the first, which plays the stem's part; MLPs their hidden layers.
  """
  def numbered(prefix):
    keys = [k for k in features if re.fullmatch(rf'{prefix}\d+', k)]
    return sorted(keys, key=lambda k: int(k[len(prefix):]))
  stages = numbered('stage')
  if not stages:
    return numbered('hidden_')
  return stages if 'stem' in features else stages[1:]


def stage_features(features: dict) -> list:
  """The maps of `stage_keys`, in order."""
  return [features[k] for k in stage_keys(features)]


def embedding(features: dict):
  """The penultimate vector: 'pooled', else the last hidden layer, else the last stage flattened."""
  if 'pooled' in features:
    return features['pooled']
  hidden = sorted((k for k in features if re.fullmatch(r'hidden_\d+', k)),
                  key=lambda k: int(k.split('_')[1]))
  if hidden:
    return features[hidden[-1]]
  last = stage_features(features)[-1]
  return last.reshape(last.shape[0], -1)
