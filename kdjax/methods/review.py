"""Review KD: the student's stages, fused deep-to-shallow, against the teacher's.

Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021;
defaults as mdistiller's `ReviewKD` (megvii-research/mdistiller,
`distillers/ReviewKD.py`, `engine/cfg.py`, `configs/cifar100/reviewkd.yaml`).

The student's maps (its `stage_features`, after their ReLU, then the pooled
vector as a 1×1 map) are read from the deepest up. Each goes through an
attention-based fusion (ABF) module: a 1×1 conv + BatchNorm to a shared middle
width; below the deepest, it is fused with the running result from the level
above (nearest-upsampled to this level's size) by a 1×1 conv + sigmoid giving
two per-position weights; the fused map (resized to the teacher's map if the
sizes differ) goes through a 3×3 conv + BatchNorm to the teacher's channels.
The outputs meet the teacher's maps before their final ReLU (and its pooled
vector) in the hierarchical context loss (`hcl_loss`). The term ramps in
linearly over `method.reviewkd_warmup_epochs` (20) epochs; mdistiller weighs it
1 by default and 5 in its one CIFAR-100 recipe (resnet32x4 → resnet8x4).
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from kdjax.errors import ConfigError
from kdjax.methods import features as features_lib
from kdjax.methods import taps as taps_lib
from kdjax.methods import trained
from kdjax.models import layers

# torch's kaiming_uniform_(a=1), which ReviewKD's two convs of each ABF use: U(±√(3 / fan_in)).
_KAIMING_A1 = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')
# The pyramid of `hcl_loss`: each level's map pooled to l × l where l < its size.
HCL_LEVELS = (4, 2, 1)


def nearest_resize(x, height: int, width: int):
  """torch's `F.interpolate(x, (h, w), mode='nearest')` on NHWC: output row i reads input row
  ⌊i · H / h⌋ (and columns alike); not jax.image.resize's half-pixel rule."""
  if x.shape[1:3] == (height, width):
    return x
  rows = (np.arange(height) * x.shape[1]) // height
  cols = (np.arange(width) * x.shape[2]) // width
  return x[:, rows][:, :, cols]


def hcl_loss(student_maps, teacher_maps, *, levels=HCL_LEVELS):
  """Hierarchical context loss, summed over the pairs of equal-shaped maps:

    l = (mse(s, t) + Σ_j 2^-j · mse(pool_{l_j}(s), pool_{l_j}(t))) / (1 + Σ_j 2^-j)

  over the levels l_j of `levels` smaller than the map's height (j counts them from 1),
  mse the mean squared error over every element and pool torch's adaptive average pool.
  """
  total = 0.0
  for s, t in zip(student_maps, teacher_maps):
    loss, weight, norm = jnp.mean((s - t) ** 2), 1.0, 1.0
    for size in levels:
      if size >= s.shape[1]:
        continue
      weight /= 2.0
      pooled = (features_lib.adaptive_avg_pool(s, size, size)
                - features_lib.adaptive_avg_pool(t, size, size))
      loss = loss + weight * jnp.mean(pooled ** 2)
      norm += weight
    total = total + loss / norm
  return total


class ABF(nn.Module):
  """One attention-based fusion level; returns (output, the fused map for the next level)."""
  mid: int
  out: int
  fuse: bool

  @nn.compact
  def __call__(self, x, residual, *, out_size: tuple, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train,  # noqa: E731
                                **layers.BATCH_NORM)
    x = norm()(layers.Conv(self.mid, (1, 1), use_bias=False, kernel_init=_KAIMING_A1)(x))
    if self.fuse:
      residual = nearest_resize(residual, *x.shape[1:3])
      weights = nn.sigmoid(layers.Conv(2, (1, 1))(jnp.concatenate([x, residual], axis=-1)))
      x = x * weights[..., :1] + residual * weights[..., 1:]
    x = nearest_resize(x, *out_size)
    y = layers.Conv(self.out, (3, 3), padding=[(1, 1), (1, 1)], use_bias=False,
                    kernel_init=_KAIMING_A1)(x)
    return norm()(y), x


class ReviewFusion(nn.Module):
  """The ABF chain from the deepest student map up; outputs shallow-first."""
  mid: int
  out_channels: tuple  # the teacher's, shallow first
  out_sizes: tuple  # the teacher's (H, W), shallow first

  @nn.compact
  def __call__(self, maps, *, train: bool):
    results, residual = [], None
    deepest = len(maps) - 1
    for level in range(deepest, -1, -1):
      out, residual = ABF(self.mid, self.out_channels[level], fuse=level < deepest,
                          name=f'abf{level}')(maps[level], residual,
                                              out_size=self.out_sizes[level], train=train)
      results.insert(0, out)
    return results


def _as_map(vector):
  return vector.reshape(vector.shape[0], 1, 1, -1)


def _review_maps(student: dict, teacher: dict, options: dict):
  """(the student's maps, the teacher's maps), shallow first, pooled vectors last."""
  # pylint: disable=protected-access
  if options['reviewkd_student_preact']:
    s = trained._preacts('reviewkd', student, 'student')
  else:
    s = trained._maps('reviewkd', taps_lib.stage_features(student), 'student')
  t = trained._preacts('reviewkd', teacher, 'teacher')
  if len(s) != len(t):
    raise ConfigError(f"config.method.name='reviewkd' pairs stage by stage: the student has "
                      f'{len(s)} stages, the teacher {len(t)}')
  return (s + [_as_map(taps_lib.embedding(student))],
          t + [_as_map(taps_lib.embedding(teacher))])


def _module(student_maps, teacher_maps, options) -> ReviewFusion:
  mid = min(int(options['reviewkd_max_mid_channels']), student_maps[-1].shape[-1])
  return ReviewFusion(mid=mid, out_channels=tuple(t.shape[-1] for t in teacher_maps),
                      out_sizes=tuple(tuple(t.shape[1:3]) for t in teacher_maps))


def _init(rng, student, teacher, context):
  s, t = _review_maps(student, teacher, context.options)
  variables = _module(s, t, context.options).init(rng, s, train=False)
  return variables['params'], variables['batch_stats']


def _loss(student, teacher, labels, run, context):
  del labels
  options = context.options
  s, t = _review_maps(student, teacher, options)
  results, changed = _module(s, t, options).apply(
      {'params': run.params, 'batch_stats': run.state}, s, train=True, mutable=['batch_stats'])
  warmup = float(options['reviewkd_warmup_epochs'])
  factor = jnp.minimum(run.epoch / warmup, 1.0) if warmup > 0 else 1.0
  return factor * hcl_loss(results, t), None, changed['batch_stats']


METHOD = trained.TrainedMethod('reviewkd', 'stages and embedding', _init, _loss, 1.0)
trained.TRAINED[METHOD.name] = METHOD
