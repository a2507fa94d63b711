"""Methods with parts of their own: regressors, embedding heads, memory banks.

Each method's trainable parts are small Flax modules whose shapes follow the
networks' features; they train with the student (its optimizer, its
checkpoint), never with the teacher. Non-gradient state (CRD's memory banks
and normalisation constants, the BatchNorm statistics of a connector) lives
beside them in `TrainState.objective_state` and is updated by the step.
Defaults are RepDistiller's (HobbitLong/RepDistiller, `train_student.py`,
`distiller_zoo/`, `crd/`, `models/util.py`):

  fitnet  hint on one stage through a conv regressor (Romero et al., 2015)
  crd     contrastive representation distillation (Tian et al., 2020)
  vid     variational information distillation (Ahn et al., 2019)
  cc      correlation congruence (Peng et al., 2019)
  fsp     flow of solution procedure (Yim et al., 2017), init stage only
  ab      activation boundaries (Heo et al., 2019) on pre-activations, init stage only
  ft      factor transfer (Kim et al., 2018), paraphraser pre-trained in the init stage

Review KD (Chen et al., 2021) is in `kdjax.methods.review`, registered here too.

A method's `loss` returns `(term, init_term, state)`: the term weighted by
`method.weight` in main training, the loss of its init stage (RepDistiller's
`init_epochs` of method-only training; None for methods without one) and the
new state.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.errors import ConfigError
from kdjax.losses import EXACT
from kdjax.methods import features as features_lib
from kdjax.methods import taps as taps_lib
from kdjax.models import layers

# The larger map average-pooled to the smaller's size, as RepDistiller pairs maps.
_same_spatial_size = features_lib._same_spatial_size  # pylint: disable=protected-access
# torch's BatchNorm2d: momentum 0.1 on the new batch, eps 1e-5.
_BN = dict(momentum=0.9, epsilon=1e-5)


@dataclasses.dataclass(frozen=True)
class Context:
  """What a method knows of the run beyond its inputs."""
  options: dict
  train_labels: Any = None  # np.ndarray [N]: every training example's label, by index


@dataclasses.dataclass(frozen=True)
class Run:
  """One step's view of a method's own parts."""
  params: Any
  state: Any
  example_index: Any  # [B] int32 or None
  rng: jax.Array
  in_init: Any  # bool (traced): inside the init stage
  epoch: Any = 0.0  # epochs done (step / steps per epoch; traced), for warm-up ramps


@dataclasses.dataclass(frozen=True)
class TrainedMethod:
  """A method with parts of its own.

  Attributes:
    init: `(rng, student_features, teacher_features, context) -> (params, state)`, the
      features as ShapeDtypeStructs.
    loss: `(student_features, teacher_features, labels, run, context) -> (term, init_term,
      state)`.
    init_stage: whether RepDistiller pre-trains it (`init_epochs`).
    per_example: whether its state is indexed by example (needs `example_index`).
  """
  name: str
  taps: str
  init: Callable
  loss: Callable
  published_weight: float
  init_stage: bool = False
  per_example: bool = False
  taps_features = True

  def between(self, student: dict, teacher: dict, labels, options: dict, epoch):
    """The main term at fresh parts (for abstract shape checks of a pair)."""
    del epoch
    batch = labels.shape[0]
    context = Context(options=options, train_labels=np.arange(batch, dtype=np.int32) % 2)
    params, state = self.init(jax.random.PRNGKey(0), student['features'], teacher['features'],
                              context)
    run = Run(params=params, state=state, example_index=jnp.arange(batch, dtype=jnp.int32),
              rng=jax.random.PRNGKey(1), in_init=False)
    return self.loss(student['features'], teacher['features'], labels, run, context)[0]


def _zeros(shape_struct):
  return jnp.zeros(shape_struct.shape, jnp.float32)


def _all_stages(features: dict) -> list:
  """The stem (where a network has one) and every stage: RepDistiller's feat[:-1]."""
  stages = [features[k] for k in sorted((k for k in features if k.startswith('stage')
                                         and k[5:].isdigit()), key=lambda k: int(k[5:]))]
  return ([features['stem']] if 'stem' in features else []) + stages


def _maps(name: str, features: list, who: str) -> list:
  if not features or any(len(f.shape) != 4 for f in features):
    raise ConfigError(f'config.method.name={name!r} needs the {who}\'s feature maps '
                      '(conv nets); an MLP has none')
  return features


def _apply(module, variables: dict, *args, **kwargs):
  """`module.apply` returning (output, new batch_stats or {})."""
  if 'batch_stats' in variables:
    out, changed = module.apply(variables, *args, mutable=['batch_stats'], **kwargs)
    return out, changed['batch_stats']
  return module.apply(variables, *args, **kwargs), {}


def _init(module, rng, *args, **kwargs):
  variables = module.init(rng, *args, **kwargs)
  return variables['params'], variables.get('batch_stats', {})


class HintRegressor(nn.Module):
  """FitNets' conv regressor (RepDistiller's ConvReg): student map to the teacher's shape.

  s_H = 2 t_H: 3×3 conv, stride 2; 2 s_H = t_H: 4×4 transposed conv, stride 2;
  s_H ≥ t_H: a (1 + s_H − t_H) × (1 + s_W − t_W) conv; then BatchNorm (and ReLU).
  """
  teacher_shape: tuple  # (H, W, C)
  use_relu: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    (s_h, s_w), (t_h, t_w, t_c) = x.shape[1:3], self.teacher_shape
    if s_h == 2 * t_h:
      x = layers.Conv(t_c, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])(x)
    elif 2 * s_h == t_h:
      x = nn.ConvTranspose(t_c, (4, 4), strides=(2, 2), padding='SAME')(x)
    elif s_h >= t_h:
      x = layers.Conv(t_c, (1 + s_h - t_h, 1 + s_w - t_w), padding='VALID')(x)
    else:
      raise ConfigError(f"config.method.name='fitnet': no regressor from a {s_h}x{s_w} map "
                        f'to a {t_h}x{t_w} one')
    x = nn.BatchNorm(use_running_average=not train, **_BN)(x)
    return nn.relu(x) if self.use_relu else x


def _hint_pair(student, teacher, options):
  """The student's and the teacher's hint maps (RepDistiller's feat[hint_layer]; the last
  map where a network has fewer)."""
  s = _maps('fitnet', _all_stages(student), 'student')
  t = _maps('fitnet', _all_stages(teacher), 'teacher')
  layer = int(options['fitnet_hint_layer'])
  return s[min(layer, len(s) - 1)], t[min(layer, len(t) - 1)]


def _fitnet_init(rng, student, teacher, context):
  s, t = _hint_pair(student, teacher, context.options)
  return _init(HintRegressor(tuple(t.shape[1:])), rng, _zeros(s), train=False)


def _fitnet_loss(student, teacher, labels, run, context):
  """FitNets' hint: mean (r(f_s) − f_t)², r the regressor (RepDistiller's HintLoss)."""
  del labels
  s, t = _hint_pair(student, teacher, context.options)
  regressed, stats = _apply(HintRegressor(tuple(t.shape[1:])),
                            {'params': run.params, 'batch_stats': run.state}, s, train=True)
  return jnp.mean((regressed - t) ** 2), None, stats


class _Embed(nn.Module):
  """A linear map of the flattened input, L2-normalised when `normalize` (RepDistiller's
  Embed; LinearEmbed without it)."""
  dim: int
  normalize: bool = True

  @nn.compact
  def __call__(self, x):
    x = nn.Dense(self.dim)(x.reshape(x.shape[0], -1))
    if self.normalize:  # x / ||x|| (no eps, as RepDistiller's Normalize); 0 where x = 0
      x = features_lib._normalize(x, eps=0.0)  # pylint: disable=protected-access
    return x


def _crd_init(rng, student, teacher, context):
  if context.train_labels is None:
    raise ConfigError("config.method.name='crd' needs every training example's index: use "
                      "input.pipeline='device'")
  options, n = context.options, len(context.train_labels)
  dim = int(options['crd_feat_dim'])
  rngs = jax.random.split(rng, 4)
  embed = _Embed(dim)
  params = {'embed_student': embed.init(rngs[0], _zeros(taps_lib.embedding(student)))['params'],
            'embed_teacher': embed.init(rngs[1], _zeros(taps_lib.embedding(teacher)))['params']}
  bound = 1.0 / np.sqrt(dim / 3.0)
  state = {'memory_student': jax.random.uniform(rngs[2], (n, dim), minval=-bound, maxval=bound),
           'memory_teacher': jax.random.uniform(rngs[3], (n, dim), minval=-bound, maxval=bound),
           # RepDistiller's Z of each side: set from the first batch, then fixed.
           'z_student': -jnp.ones(()), 'z_teacher': -jnp.ones(())}
  return params, state


def crd_negatives(rng, labels, train_labels: np.ndarray, num_negatives: int):
  """[B, K] indices of training examples drawn uniformly, with replacement, from the
  classes other than each example's (RepDistiller's CIFAR100InstanceSample, 'exact').

  Examples are sorted by class; for label y, whose examples occupy positions
  [o_y, o_y + n_y), a uniform u in [0, N − n_y) skips that block.
  """
  train_labels = np.asarray(train_labels)
  order = np.argsort(train_labels, kind='stable').astype(np.int32)
  num_classes = int(train_labels.max()) + 1
  counts = np.bincount(train_labels, minlength=num_classes).astype(np.int32)
  offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
  count, offset = jnp.asarray(counts)[labels][:, None], jnp.asarray(offsets)[labels][:, None]
  u = jax.random.randint(rng, (labels.shape[0], num_negatives), 0, len(train_labels) - count)
  return jnp.asarray(order)[jnp.where(u >= offset, u + count, u)]


def crd_memory_update(memory, index, embedding, *, momentum: float = 0.5):
  """memory[i] ← normalize(momentum · memory[i] + (1 − momentum) · v) for each (i, v)."""
  mixed = memory[index] * momentum + embedding * (1.0 - momentum)
  mixed = features_lib._normalize(mixed, eps=0.0)  # pylint: disable=protected-access
  return memory.at[index].set(mixed)


def crd_scores(memory, embedding, contrast, *, temperature: float, dense: bool | None = None):
  """exp(<memory[contrast[b, k]], embedding[b]> / τ): [B, 1 + K]; no gradient to the bank.

  `dense`: from all N inner products (one matrix product) instead of gathering the
  B·(1 + K) rows; the same values, and on CPU about 20 times faster where N is not much
  larger than K. Default: dense when N ≤ 8 (1 + K).
  """
  memory = jax.lax.stop_gradient(memory)
  if dense is None:
    dense = memory.shape[0] <= 8 * contrast.shape[1]
  if dense:
    products = jnp.take_along_axis(jnp.matmul(embedding, memory.T, precision=EXACT), contrast,
                                   axis=1)
  else:
    products = jnp.einsum('bkd,bd->bk', memory[contrast], embedding, precision=EXACT)
  return jnp.exp(products / temperature)


def crd_nce_loss(scores, *, num_data: int):
  """RepDistiller's ContrastLoss on [B, 1 + K] normalised scores (column 0 the positive).

    loss = −(1/B) Σ_b [log(P_0 / (P_0 + K/N + ε)) + Σ_k log((K/N) / (P_k + K/N + ε))]
  """
  eps = 1e-7
  noise = (scores.shape[1] - 1) / num_data
  positive = jnp.log(scores[:, 0] / (scores[:, 0] + noise + eps))
  negative = jnp.log(noise / (scores[:, 1:] + noise + eps))
  return -(jnp.sum(positive) + jnp.sum(negative)) / scores.shape[0]


def _crd_loss(student, teacher, labels, run, context):
  """CRD: NCE between each side's embedding and the other side's memory bank.

    v = normalize(W f)  (128-d heads on the penultimate vectors)
    P = exp(<m_j, v> / τ) / Z  over the positive (the example's own row j = i)
        and K negatives from other classes, Z = N · mean P at the first step
    loss = NCE(student v, teacher bank) + NCE(teacher v, student bank)
  Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020.
  The banks then move towards the batch's embeddings (`crd_memory_update`).
  """
  options, state, index = context.options, run.state, run.example_index
  if index is None:
    raise ConfigError("config.method.name='crd' needs the batches' example indices "
                      "(input.pipeline='device')")
  embed = _Embed(int(options['crd_feat_dim']))
  v_student = embed.apply({'params': run.params['embed_student']}, taps_lib.embedding(student))
  v_teacher = embed.apply({'params': run.params['embed_teacher']}, taps_lib.embedding(teacher))
  n = state['memory_student'].shape[0]
  contrast = jnp.concatenate(
      [index[:, None], crd_negatives(run.rng, labels, context.train_labels,
                                     int(options['crd_nce_k']))], axis=1)
  temperature = options['crd_nce_t']
  out_student = crd_scores(state['memory_teacher'], v_student, contrast, temperature=temperature)
  out_teacher = crd_scores(state['memory_student'], v_teacher, contrast, temperature=temperature)
  fix = lambda z, out: jnp.where(z < 0, jax.lax.stop_gradient(jnp.mean(out)) * n, z)  # noqa: E731
  z_student, z_teacher = fix(state['z_student'], out_student), fix(state['z_teacher'],
                                                                   out_teacher)
  term = (crd_nce_loss(out_student / z_student, num_data=n)
          + crd_nce_loss(out_teacher / z_teacher, num_data=n))
  momentum = options['crd_momentum']
  new_state = {
      'memory_student': crd_memory_update(state['memory_student'], index,
                                          jax.lax.stop_gradient(v_student), momentum=momentum),
      'memory_teacher': crd_memory_update(state['memory_teacher'], index,
                                          jax.lax.stop_gradient(v_teacher), momentum=momentum),
      'z_student': z_student, 'z_teacher': z_teacher}
  return term, None, new_state


class _VIDRegressor(nn.Module):
  """VID's mean: 1×1 conv, ReLU, 1×1 conv, ReLU, 1×1 conv (bias-free); and its per-channel
  variance softplus(α) + ε, α initialised so the variance starts at 5."""
  mid: int
  out: int
  init_variance: float = 5.0
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    conv = lambda n: layers.Conv(n, (1, 1), use_bias=False)  # noqa: E731
    x = conv(self.out)(nn.relu(conv(self.mid)(nn.relu(conv(self.mid)(x)))))
    start = float(np.log(np.expm1(self.init_variance - self.eps)))
    alpha = self.param('log_scale', lambda _, shape: jnp.full(shape, start), (self.out,))
    return x, jax.nn.softplus(alpha) + self.eps


def _vid_pairs(student, teacher):
  s = _maps('vid', taps_lib.stage_features(student), 'student')
  t = _maps('vid', taps_lib.stage_features(teacher), 'teacher')
  return [_same_spatial_size(a, b) for a, b in zip(s, t)]


def _vid_init(rng, student, teacher, context):
  del context
  params = {}
  for i, (s, t) in enumerate(_vid_pairs(student, teacher)):
    module = _VIDRegressor(mid=t.shape[-1], out=t.shape[-1])
    params[f'pair{i}'] = module.init(jax.random.fold_in(rng, i), _zeros(s))['params']
  return params, {}


def _vid_loss(student, teacher, labels, run, context):
  """VID: Σ_pairs mean ½ ((μ(f_s) − f_t)² / σ² + log σ²), μ a 1×1-conv regressor and σ² a
  learned per-channel variance. Ahn et al., "Variational Information Distillation for
  Knowledge Transfer", CVPR 2019."""
  del labels, context
  total = 0.0
  for i, (s, t) in enumerate(_vid_pairs(student, teacher)):
    mean, variance = _VIDRegressor(mid=t.shape[-1], out=t.shape[-1]).apply(
        {'params': run.params[f'pair{i}']}, s)
    total = total + jnp.mean(0.5 * ((mean - t) ** 2 / variance + jnp.log(variance)))
  return total, None, run.state


def _cc_init(rng, student, teacher, context):
  embed = _Embed(int(context.options['cc_feat_dim']), normalize=False)
  return {'embed_student': embed.init(jax.random.fold_in(rng, 0),
                                      _zeros(taps_lib.embedding(student)))['params'],
          'embed_teacher': embed.init(jax.random.fold_in(rng, 1),
                                      _zeros(taps_lib.embedding(teacher)))['params']}, {}


def cc_loss(student_embedding, teacher_embedding):
  """Correlation congruence as RepDistiller computes it: δ = |e_s − e_t| per example,
    loss = mean_i <δ_i, δ_{i+1}>  (neighbours in the batch).
  Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019."""
  delta = jnp.abs(student_embedding - teacher_embedding)
  return jnp.mean(jnp.sum(delta[:-1] * delta[1:], axis=1))


def _cc_loss(student, teacher, labels, run, context):
  del labels
  embed = _Embed(int(context.options['cc_feat_dim']), normalize=False)
  return cc_loss(embed.apply({'params': run.params['embed_student']}, taps_lib.embedding(student)),
                 embed.apply({'params': run.params['embed_teacher']}, taps_lib.embedding(teacher))
                 ), None, run.state


def fsp_matrices(maps: list) -> list:
  """G_i = mean over positions of f_i ⊗ f_{i+1}, [B, C_{i+1}, C_i], the larger map of each
  pair average-pooled to the smaller's size."""
  out = []
  for bottom, top in zip(maps[:-1], maps[1:]):
    if bottom.shape[1] > top.shape[1]:
      bottom = features_lib.adaptive_avg_pool(bottom, *top.shape[1:3])
    elif bottom.shape[1] < top.shape[1]:
      top = features_lib.adaptive_avg_pool(top, *bottom.shape[1:3])
    out.append(jnp.einsum('bhwi,bhwj->bji', bottom, top, precision=EXACT) / (bottom.shape[1] * bottom.shape[2]))
  return out


def fsp_loss(student_maps: list, teacher_maps: list):
  """FSP: Σ_i mean (G_i^s − G_i^t)². Yim et al., "A Gift from Knowledge Distillation: Fast
  Optimization, Network Minimization and Transfer Learning", CVPR 2017."""
  return sum(jnp.mean((s - t) ** 2)
             for s, t in zip(fsp_matrices(student_maps), fsp_matrices(teacher_maps)))


def _fsp_maps(student, teacher):
  s = _maps('fsp', _all_stages(student), 'student')
  t = _maps('fsp', _all_stages(teacher), 'teacher')
  if len(s) != len(t) or any(a.shape[-1] != b.shape[-1] for a, b in zip(s, t)):
    raise ConfigError("config.method.name='fsp' needs the same number of stages with equal "
                      f'channels: student {[a.shape[-1] for a in s]}, teacher '
                      f'{[b.shape[-1] for b in t]}')
  return s, t


def _fsp_init(rng, student, teacher, context):
  del rng, context
  _fsp_maps(student, teacher)
  return {}, {}


def _fsp_loss(student, teacher, labels, run, context):
  """FSP trains only in the init stage; RepDistiller's main training has no FSP term."""
  del labels, context
  s, t = _fsp_maps(student, teacher)
  return jnp.zeros(()), fsp_loss(s, t), run.state


def _preacts(name: str, features: dict, who: str) -> list:
  """The stages' maps before their final ReLU, in `stage_features`' order."""
  keys = taps_lib.stage_keys(features)
  preacts = [features.get(f'{k}_preact') for k in keys]
  if not keys or any(p is None for p in preacts):
    raise ConfigError(f'config.method.name={name!r} needs the {who}\'s pre-activation '
                      'stage maps (conv nets; an MLP has none)')
  return _maps(name, preacts, who)


def _ab_pairs(student, teacher):
  s, t = _preacts('ab', student, 'student'), _preacts('ab', teacher, 'teacher')
  return list(zip(s, t))


def ab_loss(student_maps: list, teacher_maps: list, *, margin: float = 1.0):
  """Activation boundaries (the alternative L2 of RepDistiller's ABLoss), pairs i = 0..n−1:
    l_i = Σ (s + m)² [s > −m, t ≤ 0] + (s − m)² [s ≤ m, t > 0]
    loss = Σ_i 2^(i − n + 1) · l_i / B / 1000 · 3
  s the connected student pre-activation, t the teacher's. Heo et al., "Knowledge
  Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons", AAAI 2019.
  """
  n, total = len(student_maps), 0.0
  for i, (s, t) in enumerate(zip(student_maps, teacher_maps)):
    l2 = ((s + margin) ** 2 * ((s > -margin) & (t <= 0))
          + (s - margin) ** 2 * ((s <= margin) & (t > 0)))
    total = total + 2.0 ** (i - n + 1) * jnp.sum(l2) / s.shape[0] / 1000 * 3
  return total


def _connector(s, t):
  """RepDistiller's Connector: none for equal shapes, else a ConvReg without its ReLU."""
  same = s.shape[1:] == t.shape[1:]
  return None if same else HintRegressor(tuple(t.shape[1:]), use_relu=False)


def _ab_init(rng, student, teacher, context):
  del context
  params, stats = {}, {}
  for i, (s, t) in enumerate(_ab_pairs(student, teacher)):
    module = _connector(s, t)
    if module is not None:
      params[f'pair{i}'], stats[f'pair{i}'] = _init(module, jax.random.fold_in(rng, i), s,
                                                    train=False)
  return params, stats


def _ab_loss(student, teacher, labels, run, context):
  """AB trains only in its init stage (student and connectors); RepDistiller's main training
  has no AB term."""
  del labels
  connected, teachers, stats = [], [], {}
  for i, (s, t) in enumerate(_ab_pairs(student, teacher)):
    module = _connector(s, t)
    if module is not None:
      s, stats[f'pair{i}'] = _apply(module, {'params': run.params[f'pair{i}'],
                                             'batch_stats': run.state[f'pair{i}']}, s, train=True)
    connected.append(s)
    teachers.append(t)
  return (jnp.zeros(()), ab_loss(connected, teachers, margin=context.options['ab_margin']),
          stats)


def _leaky(x):
  return nn.leaky_relu(x, 0.1)


class _Paraphraser(nn.Module):
  """FT's paraphraser of the teacher's last map: 3×3 conv encoder to k·C channels (the factor),
  transposed-conv decoder back to C; LeakyReLU 0.1, no BatchNorm (RepDistiller's default)."""
  channels: int
  k: float = 0.5

  def setup(self):
    factor = int(self.channels * self.k)
    conv = lambda n: layers.Conv(n, (3, 3), padding=[(1, 1), (1, 1)])  # noqa: E731
    self.encoder = [conv(self.channels), conv(factor), conv(factor)]
    self.decoder = [nn.ConvTranspose(n, (3, 3), padding='SAME')
                    for n in (factor, self.channels, self.channels)]

  def encode(self, x):
    for layer in self.encoder:
      x = _leaky(layer(x))
    return x

  def __call__(self, x):
    factor = self.encode(x)
    rec = factor
    for layer in self.decoder:
      rec = _leaky(layer(rec))
    return factor, rec


class _Translator(nn.Module):
  """FT's translator of the student's last map: three 3×3 convs with BatchNorm and
  LeakyReLU 0.1, to the paraphraser's k·C_teacher channels."""
  channels: int
  factor: int

  @nn.compact
  def __call__(self, x, train: bool):
    for n in (self.channels, self.factor, self.factor):
      x = layers.Conv(n, (3, 3), padding=[(1, 1), (1, 1)])(x)
      x = _leaky(nn.BatchNorm(use_running_average=not train, **_BN)(x))
    return x


def _ft_modules(student, teacher, options):
  s = _maps('ft', taps_lib.stage_features(student), 'student')[-1]
  t = _maps('ft', taps_lib.stage_features(teacher), 'teacher')[-1]
  k = float(options['ft_k'])
  return s, t, _Paraphraser(t.shape[-1], k), _Translator(s.shape[-1], int(t.shape[-1] * k))


def _ft_init(rng, student, teacher, context):
  s, t, paraphraser, translator = _ft_modules(student, teacher, context.options)
  translator_params, stats = _init(translator, jax.random.fold_in(rng, 1), _zeros(s),
                                   train=False)
  return {'paraphraser': paraphraser.init(jax.random.fold_in(rng, 0), _zeros(t))['params'],
          'translator': translator_params}, stats


def ft_factor_loss(student_factor, teacher_factor, *, p: float = 2.0):
  """Factor transfer: mean |F(s) − F(t)|, F(x) = normalize(mean_c x^p) flattened (the
  larger factor map pooled to the smaller)."""
  student_factor, teacher_factor = _same_spatial_size(student_factor, teacher_factor)
  diff = (features_lib.attention_map(student_factor, p=p)
          - features_lib.attention_map(teacher_factor, p=p))
  return jnp.mean(jnp.abs(diff))


def _ft_loss(student, teacher, labels, run, context):
  """FT: the translator's factor of the student against the (frozen) paraphraser's factor of
  the teacher; init stage: the paraphraser learns to reconstruct the teacher's map (L1).
  Kim, Park & Kwak, "Paraphrasing Complex Network: Network Compression via Factor
  Transfer", NeurIPS 2018."""
  del labels
  s, t, paraphraser, translator = _ft_modules(student, teacher, context.options)
  _, reconstruction = paraphraser.apply({'params': run.params['paraphraser']}, t)
  init_term = jnp.mean(jnp.abs(reconstruction - t))
  frozen = jax.lax.stop_gradient(run.params['paraphraser'])
  teacher_factor = paraphraser.apply({'params': frozen}, t, method=_Paraphraser.encode)
  student_factor, stats = _apply(translator, {'params': run.params['translator'],
                                              'batch_stats': run.state}, s, train=True)
  return ft_factor_loss(student_factor, teacher_factor), init_term, stats


TRAINED = {m.name: m for m in (
    TrainedMethod('fitnet', 'hint stage', _fitnet_init, _fitnet_loss, 100.0),
    TrainedMethod('crd', 'embedding', _crd_init, _crd_loss, 0.8, per_example=True),
    TrainedMethod('vid', 'stages', _vid_init, _vid_loss, 1.0),
    TrainedMethod('cc', 'embedding', _cc_init, _cc_loss, 0.02),
    TrainedMethod('fsp', 'stem and stages', _fsp_init, _fsp_loss, 50.0, init_stage=True),
    TrainedMethod('ft', 'last stage', _ft_init, _ft_loss, 200.0, init_stage=True),
    TrainedMethod('ab', 'stage pre-activations', _ab_init, _ab_loss, 1.0, init_stage=True),
)}
