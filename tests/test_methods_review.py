"""Review KD (kdjax.methods.review): the loss and the resize against independent NumPy, the
fusion module by hand, its parameter count, its warm-up inside the compiled step; the
pre-activation taps of WRNs and MobileNetV2 that it and AB read."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax import methods, models
from kdjax.errors import ConfigError
from kdjax.methods import review, trained


def _adaptive_pool_np(x, size):
  """torch's adaptive_avg_pool2d, NHWC, float64: window i is [⌊iH/l⌋, ⌈(i+1)H/l⌉)."""
  h, w = x.shape[1:3]
  out = np.zeros((x.shape[0], size, size, x.shape[3]))
  for i in range(size):
    for j in range(size):
      r0, r1 = (i * h) // size, -((-(i + 1) * h) // size)
      c0, c1 = (j * w) // size, -((-(j + 1) * w) // size)
      out[:, i, j] = x[:, r0:r1, c0:c1].mean(axis=(1, 2))
  return out


def _hcl_np(pairs):
  total = 0.0
  for s, t in pairs:
    terms = [(1.0, np.mean((s - t) ** 2))]
    weight = 1.0
    for size in (4, 2, 1):
      if size < s.shape[1]:
        weight /= 2
        terms.append((weight, np.mean((_adaptive_pool_np(s, size)
                                       - _adaptive_pool_np(t, size)) ** 2)))
    total += sum(w * v for w, v in terms) / sum(w for w, _ in terms)
  return total


def test_hcl_loss_against_numpy_on_every_pyramid():
  rng = np.random.default_rng(0)
  # 8×8: levels 4, 2, 1; 6×6: 4 (uneven windows), 2, 1; 3×3: 2 (uneven), 1; 1×1: none.
  shapes = [(2, 8, 8, 3), (2, 6, 6, 2), (2, 3, 3, 4), (2, 1, 1, 5)]
  pairs = [(rng.normal(size=s), rng.normal(size=s)) for s in shapes]
  got = review.hcl_loss([jnp.float32(s) for s, _ in pairs], [jnp.float32(t) for _, t in pairs])
  np.testing.assert_allclose(float(got), _hcl_np(pairs), rtol=1e-5)
  # One 1×1 pair: plain mean squared error.
  s, t = pairs[3]
  np.testing.assert_allclose(float(review.hcl_loss([jnp.float32(s)], [jnp.float32(t)])),
                             np.mean((s - t) ** 2), rtol=1e-6)
  grads = jax.grad(lambda a: review.hcl_loss([a], [jnp.float32(pairs[0][1])]))(
      jnp.float32(pairs[0][0]))
  assert np.all(np.isfinite(np.asarray(grads)))


def test_nearest_resize_reads_rows_as_torch_does():
  x = jnp.arange(4.0).reshape(1, 4, 1, 1) * jnp.ones((1, 1, 2, 1))
  # torch: output row i reads ⌊i·4/7⌋ (jax.image.resize would read 0,0,1,2,2,3,3).
  rows = review.nearest_resize(x, 7, 2)[0, :, 0, 0]
  np.testing.assert_array_equal(np.asarray(rows), [0, 0, 1, 1, 2, 2, 3])
  up = review.nearest_resize(jnp.arange(4.0).reshape(1, 2, 2, 1), 4, 4)[0, :, :, 0]
  np.testing.assert_array_equal(np.asarray(up), [[0, 0, 1, 1], [0, 0, 1, 1],
                                                 [2, 2, 3, 3], [2, 2, 3, 3]])


def _conv3x3_np(x, kernel):
  """Zero-padded 3×3 convolution, NHWC × HWIO."""
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = x.shape[1:3]
  out = np.zeros((x.shape[0], h, w, kernel.shape[-1]))
  for dy in range(3):
    for dx in range(3):
      out += padded[:, dy:dy + h, dx:dx + w] @ kernel[dy, dx]
  return out


def test_abf_fusion_by_hand():
  """1×1 conv + BN, sigmoid attention over [x, upsampled residual], 3×3 conv + BN."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 4, 4, 3))
  residual = rng.normal(size=(2, 2, 2, 5))  # the level above: mid = 5 channels, 2×2
  module = review.ABF(mid=5, out=2, fuse=True)
  variables = module.init(jax.random.PRNGKey(0), jnp.float32(x), jnp.float32(residual),
                          out_size=(4, 4), train=False)
  # Non-trivial BatchNorm statistics and affine parameters.
  variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.PRNGKey(2), v.shape),
                           variables)
  variables['batch_stats'] = jax.tree.map(jnp.abs, variables['batch_stats'])
  out, fused = module.apply(variables, jnp.float32(x), jnp.float32(residual), out_size=(4, 4),
                            train=False)
  p, stats = jax.tree.map(np.float64, variables['params']), variables['batch_stats']

  def bn(v, name):
    s = jax.tree.map(np.float64, stats[name])
    return ((v - s['mean']) / np.sqrt(s['var'] + 1e-5) * p[name]['scale'] + p[name]['bias'])

  a = bn(x @ p['Conv_0']['kernel'][0, 0], 'BatchNorm_0')
  r = residual.repeat(2, axis=1).repeat(2, axis=2)
  z = 1 / (1 + np.exp(-(np.concatenate([a, r], -1) @ p['Conv_1']['kernel'][0, 0]
                        + p['Conv_1']['bias'])))
  expected_fused = a * z[..., :1] + r * z[..., 1:]
  expected = bn(_conv3x3_np(expected_fused, p['Conv_2']['kernel']), 'BatchNorm_1')
  np.testing.assert_allclose(np.asarray(fused), expected_fused, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-4, atol=1e-4)


def _outputs(name, shape=(32, 32, 3), **options):
  model = models.create(name, num_classes=100, **options)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape)),
                                                train=False))
  return jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *shape)), train=False,
                                              return_features=True)[1], variables)


def _options(**changes):
  config = config_lib.override(config_lib.default(), changes)
  return methods.registry.options(config)


@pytest.mark.parametrize('teacher, student, expected', [
    # mid = 64; per level 1×1 conv (C_s·64) + BN (128) + 3×3 conv (9·64·C_t) + BN (2·C_t),
    # and the attention conv (128·2 + 2) on every level but the deepest:
    # 41,216 + 41,474 + 20,930 + 10,658.
    ('resnet56', 'resnet20', 114_278),
    # mid = 256, channels 64/128/256/256: 656,384 + 657,410 + 329,474 + 165,506.
    ('resnet32x4', 'resnet8x4', 1_808_774),
])
def test_fusion_parameter_count_by_hand(teacher, student, expected):
  context = trained.Context(options=_options())
  params, state = jax.eval_shape(
      lambda: review.METHOD.init(jax.random.PRNGKey(0), _zeros(_outputs(student)),
                                 _zeros(_outputs(teacher)), context))
  assert models.count_params(params) == expected
  assert len(params) == 4 and len(state) == 4  # one ABF per stage and the pooled vector


def _zeros(tree):
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), tree)


def _run_loss(student, teacher, epoch, options):
  context = trained.Context(options=options)
  params, state = review.METHOD.init(jax.random.PRNGKey(0), student, teacher, context)
  run = trained.Run(params=params, state=state, example_index=None, rng=jax.random.PRNGKey(1),
                    in_init=False, epoch=epoch)
  return review.METHOD.loss(student, teacher, None, run, context)[0]


def test_warm_up_ramps_the_term_in_linearly():
  rng = np.random.default_rng(3)
  student = jax.tree.map(lambda s: jnp.float32(rng.normal(size=s.shape)), _outputs('resnet8'))
  teacher = jax.tree.map(lambda s: jnp.float32(rng.normal(size=s.shape)), _outputs('resnet14'))
  options = _options()
  full = float(_run_loss(student, teacher, 20.0, options))
  assert full > 0
  assert float(_run_loss(student, teacher, 0.0, options)) == 0.0
  np.testing.assert_allclose(float(_run_loss(student, teacher, 5.0, options)), full / 4, rtol=1e-6)
  np.testing.assert_allclose(float(_run_loss(student, teacher, 40.0, options)), full, rtol=1e-6)
  no_ramp = _options(**{'method.reviewkd_warmup_epochs': 0.0})
  np.testing.assert_allclose(float(_run_loss(student, teacher, 0.0, no_ramp)), full, rtol=1e-6)


@pytest.mark.slow  # seconds of compiling: in `make test-all`
def test_every_pair_of_the_standard_table_pairs_up():
  """AB and Review KD read pre-activations: WRN teachers and MobileNetV2 students have them."""
  from experiments import method_zoo
  outputs = {}
  for teacher, student in method_zoo.HOMOGENEOUS + method_zoo.HETEROGENEOUS:
    for name in (teacher, student):
      if name not in outputs:
        outputs[name] = {'features': _outputs(name), 'logits': None}
    labels = jnp.zeros((2,), jnp.int32)
    for method in ('reviewkd', 'ab'):
      jax.eval_shape(lambda s, t, m=method: methods.get(m).between(
          s, t, labels, _options(), 0.0), outputs[student], outputs[teacher])


def test_wrn_and_mobilenet_pre_activations():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))  # small: compiles faster

  def features_of(name):
    """One compiled program: init, then the features (op by op, init alone took a minute)."""
    model = models.create(name, num_classes=10)

    def init_and_apply(images):
      variables = model.init(jax.random.PRNGKey(1), images, train=False)
      return model.apply(variables, images, train=False, return_features=True)[1]
    return init_and_apply

  features = jax.jit(features_of('wrn_16_2'))(x)
  # The last group's pre-activation is the final BatchNorm's output: its ReLU is 'final'.
  np.testing.assert_allclose(np.asarray(jax.nn.relu(features['stage3_preact'])),
                             np.asarray(features['final']), rtol=1e-6)
  for k in (1, 2, 3):
    assert features[f'stage{k}_preact'].shape == features[f'stage{k}'].shape
    assert float(jnp.min(features[f'stage{k}_preact'])) < 0  # before a ReLU
  # MobileNetV2's linear bottlenecks: each pre-activation is the stage's map itself (the
  # same traced value).
  same = []

  def same_maps(images):
    traced = features_of('mobilenetv2')(images)
    same.extend(traced[f'stage{k}_preact'] is traced[f'stage{k}'] for k in (1, 2, 3, 4))
    return traced
  jax.eval_shape(same_maps, x)
  assert same == [True] * 4


def test_unequal_stage_counts_are_refused_in_one_line():
  labels = jnp.zeros((2,), jnp.int32)
  student = {'features': _outputs('vgg8'), 'logits': None}  # 4 stages after the first
  teacher = {'features': _outputs('resnet20'), 'logits': None}  # 3 stages
  with pytest.raises(ConfigError, match='student has 4 stages, the teacher 3'):
    jax.eval_shape(lambda s, t: methods.get('reviewkd').between(s, t, labels, _options(), 0.0),
                   student, teacher)
