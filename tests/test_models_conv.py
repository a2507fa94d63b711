"""Convolutional families: exact parameter counts, forward passes, features."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.errors import ConfigError
from kdjax.models import flops
from kdjax.models import resnet

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)


def _shapes(model, image_shape):
  images = jnp.zeros((1, *image_shape))
  return jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.PRNGKey(0), images)


@functools.lru_cache(maxsize=None)
def _default_shapes(name, image_shape):
  return _shapes(models.create(name, num_classes=10), image_shape)


def _num_params(name, image_shape=CIFAR, **options):
  if options:
    model = models.create(name, num_classes=10, **options)
    shapes = _shapes(model, image_shape)
  else:
    shapes = _default_shapes(name, image_shape)
  return models.count_params(shapes['params'])


@functools.lru_cache(maxsize=None)
def _initialized(name):
  """Real `init` on 32x32x3 inputs, shared between tests.

  Random initialisers compile once per parameter shape, which is slow on CPU;
  the RBG generator compiles faster than the default threefry.
  """
  model = models.create(name, num_classes=10)
  init = jax.jit(functools.partial(model.init, train=False))
  return init(jax.random.key(0, impl='unsafe_rbg'), jnp.zeros((1, *CIFAR)))


def _images(batch, image_shape, seed=1):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.standard_normal((batch, *image_shape), np.float32))


# Hand counts, 10 classes, 3-channel 32x32 input; the closed forms are checked
# in test_closed_forms_give_the_listed_counts. BatchNorm has 2 parameters per
# channel (running statistics are not parameters); a 3x3 conv from c to w
# channels has 9cw weights, plus w biases where it has a bias.
#
# He's CIFAR nets, option A, n1, n2, n3 basic blocks at widths 16/32/64. A
# block keeping width w: 2 (9w^2 + 2w) = 18w^2 + 4w, i.e. 4672, 18560, 73984.
# The first block of stages 2 and 3 reads w/2 channels, 4.5w^2 fewer. Stem
# 27*16 + 32, head 64*10 + 10:
#   P = 4672 n1 + 18560 n2 + 73984 n3 - 4.5 (32^2 + 64^2) + 464 + 650
#     = 4672 n1 + 18560 n2 + 73984 n3 - 21926,
# so resnet(6n+2) = 97216 n - 21926. Option B adds the projections
# (16*32 + 64) + (32*64 + 128) = 2752.
#
# RepDistiller's x4 nets, option B, stem 32, widths 64/128/256, n blocks per
# stage: a first block from c to w channels has 9cw + 9w^2 + 4w plus the
# projection cw + 2w: 57728, 230144, 919040; others 18w^2 + 4w: 73984, 295424,
# 1180672. Stem 27*32 + 64 = 928, head 256*10 + 10 = 2570:
#   P = 1210410 + (n - 1) 1550080.
#
# pytorch-cifar ResNets: stem 27*64 + 128 = 1856, head (512 e)*10 + 10.
# Basic blocks: B(w) = 18w^2 + 4w; first block of stages 2-4
# D(w) = 9(w/2)w + 9w^2 + 4w + projection (w/2)w + 2w = 14w^2 + 6w.
#   resnet18 = 1856 + 2B(64) + D(128) + B(128) + D(256) + B(256) + D(512)
#              + B(512) + 5130
# Bottleneck of inner width w, output 4w: a block keeping the shape has
# C(w) = 4w^2 + 9w^2 + 4w^2 + (2 + 2 + 8)w = 17w^2 + 12w; the first block of
# stages 2-4 reads 2w channels and projects 2w -> 4w: F(w) = 23w^2 + 20w; the
# first block of stage 1 (64 -> 256, stride 1) has 75008.
#   resnet50 = 1856 + 75008 + 2C(64) + F(128) + 3C(128) + F(256) + 5C(256)
#              + F(512) + 2C(512) + 20490
#   resnet101 = resnet50 + 17C(256)
#
# VGG: a conv (with bias) and BN from c to w has 9cw + 3w; head 5130.
# Seed 004: padding 1 and two 2x2 pools take 32x32 to 8x8 before the first
# dense layer. Papernot: valid convs take 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4
# (MNIST) and 32 -> 30 -> 28 -> 14 -> 12 -> 10 -> 5 (CIFAR).
PARAM_COUNTS = {
    'resnet8': 75_290,
    'resnet14': 172_506,
    'resnet20': 269_722,
    'resnet32': 464_154,
    'resnet44': 658_586,
    'resnet56': 853_018,
    'resnet110': 1_727_962,
    'resnet8x4': 1_210_410,
    'resnet32x4': 7_410_730,
    'resnet3': 75_290,
    'resnet4': 79_962,
    'resnet5': 98_522,
    'resnet6': 172_506,
    'resnet10': 274_394,
    'resnet11': 292_954,
    'resnet18': 11_173_962,
    'resnet34': 21_282_122,
    'resnet50': 23_520_842,
    'resnet101': 42_512_970,
    'vgg8': 3_918_858,
    'vgg11': 9_231_114,
    'vgg13': 9_416_010,
    'vgg16': 14_728_266,
    'vgg19': 20_040_522,
    'lightnn': 267_738,
    'simplenn': 34_290,
    'papernot_cifar': 1_147_978,
}
CONV_MODELS = sorted(PARAM_COUNTS) + ['papernot_mnist']
REAL_INIT_MODELS = {'resnet8', 'vgg8', 'lightnn', 'papernot_cifar'}


@pytest.mark.parametrize('name, expected', sorted(PARAM_COUNTS.items()))
def test_param_count(name, expected):
  assert _num_params(name) == expected


def test_closed_forms_give_the_listed_counts():
  def he(n1, n2, n3):
    return 4672 * n1 + 18560 * n2 + 73984 * n3 - 21926

  for k, blocks in ((3, (1, 1, 1)), (4, (2, 1, 1)), (5, (2, 2, 1)),
                    (6, (2, 2, 2)), (10, (4, 3, 3)), (11, (4, 4, 3))):
    assert PARAM_COUNTS[f'resnet{k}'] == he(*blocks)
  for depth in (8, 14, 20, 32, 44, 56, 110):
    assert PARAM_COUNTS[f'resnet{depth}'] == 97216 * (depth - 2) // 6 - 21926
  assert PARAM_COUNTS['resnet32x4'] == 1210410 + 4 * 1550080

  def b(w):
    return 18 * w * w + 4 * w

  def d(w):
    return 14 * w * w + 6 * w

  def c(w):
    return 17 * w * w + 12 * w

  def f(w):
    return 23 * w * w + 20 * w

  assert PARAM_COUNTS['resnet18'] == (1856 + 2 * b(64) + d(128) + b(128)
                                      + d(256) + b(256) + d(512) + b(512)
                                      + 5130)
  assert PARAM_COUNTS['resnet34'] == (1856 + 3 * b(64) + d(128) + 3 * b(128)
                                      + d(256) + 5 * b(256) + d(512)
                                      + 2 * b(512) + 5130)
  resnet50 = (1856 + 75008 + 2 * c(64) + f(128) + 3 * c(128) + f(256)
              + 5 * c(256) + f(512) + 2 * c(512) + 20490)
  assert PARAM_COUNTS['resnet50'] == resnet50
  assert PARAM_COUNTS['resnet101'] == resnet50 + 17 * c(256)

  def vgg(convs):
    return sum(9 * cin * cout + 3 * cout for cin, cout in convs) + 5130

  def chain(widths):
    return list(zip((3,) + widths[:-1], widths))

  assert PARAM_COUNTS['vgg8'] == vgg(chain((64, 128, 256, 512, 512)))
  assert PARAM_COUNTS['vgg11'] == vgg(chain(
      (64, 128, 256, 256, 512, 512, 512, 512)))
  assert PARAM_COUNTS['vgg13'] == vgg(chain(
      (64, 64, 128, 128, 256, 256, 512, 512, 512, 512)))
  assert PARAM_COUNTS['vgg16'] == vgg(chain(
      (64, 64, 128, 128) + (256,) * 3 + (512,) * 6))
  assert PARAM_COUNTS['vgg19'] == vgg(chain(
      (64, 64, 128, 128) + (256,) * 4 + (512,) * 8))
  assert PARAM_COUNTS['lightnn'] == ((27 * 16 + 16) + (144 * 16 + 16)
                                     + (1024 * 256 + 256) + (2560 + 10))
  assert PARAM_COUNTS['simplenn'] == ((27 * 8 + 8) + (72 * 8 + 8)
                                      + (512 * 64 + 64) + (640 + 10))
  assert PARAM_COUNTS['papernot_cifar'] == (
      (27 * 64 + 64) + (9 * 64 * 64 + 64) + (9 * 64 * 128 + 128)
      + (9 * 128 * 128 + 128) + (5 * 5 * 128 * 256 + 256)
      + (256 * 256 + 256) + (256 * 10 + 10))


def test_papernot_mnist_param_count():
  # (9*32 + 32) + (9*32*32 + 32) + (9*32*64 + 64) + (9*64*64 + 64)
  # + (4*4*64*200 + 200) + (200*200 + 200) + (200*10 + 10)
  assert _num_params('papernot_mnist', MNIST) == 312_202


def test_he_published_counts():
  # He et al. 2016, Table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
  published = {20: (0.27, 2), 32: (0.46, 2), 44: (0.66, 2), 56: (0.85, 2),
               110: (1.7, 1)}
  for depth, (millions, digits) in published.items():
    assert round(PARAM_COUNTS[f'resnet{depth}'] / 1e6, digits) == millions


@pytest.mark.parametrize('name, shortcut, expected', [
    ('resnet20', 'B', 269_722 + 2752),
    ('resnet8x4', 'A', 1_210_410 - (32 * 64 + 128) - (64 * 128 + 256)
     - (128 * 256 + 512)),
])
def test_shortcut_option_changes_count(name, shortcut, expected):
  assert _num_params(name, shortcut=shortcut) == expected


def test_seed_resnets_grow_with_k():
  counts = [_num_params(f'resnet{k}') for k in (3, 4, 5, 6, 10, 11)]
  assert counts == sorted(counts) and len(set(counts)) == len(counts)
  assert resnet.blocks_for(4) == (2, 1, 1)
  assert resnet.blocks_for(11) == (4, 4, 3)


def test_cifar_resnet_matches_named_layouts():
  assert _num_params('cifar_resnet') == PARAM_COUNTS['resnet20']
  assert _num_params('cifar_resnet', blocks=(2, 2, 2, 2),
                     widths=(64, 64, 128, 256, 512),
                     shortcut='B') == PARAM_COUNTS['resnet18']


def test_resnet_width_multiplier():
  # resnet8 at width 0.5: stem 8, stages 8/16/32, option-A shortcuts, by hand:
  # stem 3·3·3·8 + BN 16 = 232; stage 1: 2 × (3·3·8·8 + 16) = 1,184; stage 2:
  # 3·3·8·16 + 32 + 3·3·16·16 + 32 = 3,520; stage 3: 3·3·16·32 + 64 + 3·3·32·32 + 64 =
  # 13,952; head 32·10 + 10 = 330.
  assert _num_params('resnet8', width=0.5) == 19_218
  assert _num_params('resnet20', width=1.0) == PARAM_COUNTS['resnet20']
  with pytest.raises(ConfigError, match='model.width=0.0 must be a positive multiplier'):
    models.create('resnet8', num_classes=10, width=0.0)


def _fake_variables(shapes, seed=0):
  """He-scaled random weights and neutral BatchNorm, without running `init`.

  Uniform on [-a, a] with a = sqrt(6 / fan_in) has He's variance 2 / fan_in
  and is quicker to draw than normal numbers for the 40M-parameter nets.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      bound = math.sqrt(6.0 / math.prod(leaf.shape[:-1]))
      uniform = rng.random(leaf.shape, np.float32)
      return jnp.asarray(bound * (2.0 * uniform - 1.0))
    if name in ('scale', 'var'):
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _assert_logits(logits, batch):
  assert logits.shape == (batch, 10)
  assert logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


@pytest.mark.parametrize('image_shape', [MNIST, CIFAR], ids=['mnist', 'cifar'])
@pytest.mark.parametrize('name', CONV_MODELS)
def test_forward_gives_finite_logits(name, image_shape):
  model = models.create(name, num_classes=10)
  if image_shape == MNIST and _num_params(name) > 1_000_000:
    # Compiling each layer of the big nets is what makes this file slow, so
    # they compute at 32x32x3 only; at 28x28x1 the shapes and dtypes.
    images = jnp.zeros((2, *image_shape))
    logits, _ = jax.eval_shape(
        functools.partial(model.init_with_output, train=False),
        jax.random.PRNGKey(0), images)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    return
  if name in REAL_INIT_MODELS and image_shape == CIFAR:
    variables = _initialized(name)
  else:
    variables = _fake_variables(_default_shapes(name, image_shape))
  _assert_logits(model.apply(variables, _images(2, image_shape), train=False),
                 batch=2)


@pytest.mark.parametrize('name', ['resnet8', 'vgg8'])
def test_batch_stats_update_in_train_mode_only(name):
  model = models.create(name, num_classes=10)
  variables = _initialized(name)
  images = _images(4, CIFAR) + 1.0

  def max_change(new_stats):
    return max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(new_stats)))

  logits, updates = model.apply(variables, images, train=True,
                                mutable=['batch_stats'])
  _assert_logits(logits, batch=4)
  assert max_change(updates['batch_stats']) > 1e-3
  _, updates = model.apply(variables, images, train=False,
                           mutable=['batch_stats'])
  assert max_change(updates['batch_stats']) == 0.0
  # Eval mode needs no mutable collection at all.
  model.apply(variables, images, train=False)


def test_dropout_only_in_train_mode():
  model = models.create('lightnn', num_classes=10, dropout=0.5)
  variables = _initialized('lightnn')
  images = _images(2, CIFAR)
  train = [model.apply(variables, images, train=True, rngs={
      'dropout': jax.random.key(seed, impl='unsafe_rbg')}) for seed in (0, 1)]
  assert not np.allclose(train[0], train[1])
  np.testing.assert_array_equal(model.apply(variables, images, train=False),
                                model.apply(variables, images, train=False))


@pytest.mark.parametrize('name, image_shape, expected', [
    ('resnet20', CIFAR, {
        'stem': (2, 32, 32, 16), 'stage1': (2, 32, 32, 16),
        'stage2': (2, 16, 16, 32), 'stage3': (2, 8, 8, 64),
        'pooled': (2, 64), 'logits': (2, 10)}),
    ('resnet8x4', MNIST, {
        'stem': (2, 28, 28, 32), 'stage1': (2, 28, 28, 64),
        'stage2': (2, 14, 14, 128), 'stage3': (2, 7, 7, 256),
        'pooled': (2, 256), 'logits': (2, 10)}),
    ('resnet50', CIFAR, {
        'stem': (2, 32, 32, 64), 'stage1': (2, 32, 32, 256),
        'stage2': (2, 16, 16, 512), 'stage3': (2, 8, 8, 1024),
        'stage4': (2, 4, 4, 2048), 'pooled': (2, 2048), 'logits': (2, 10)}),
    ('vgg8', CIFAR, {
        'stage1': (2, 32, 32, 64), 'stage2': (2, 16, 16, 128),
        'stage3': (2, 8, 8, 256), 'stage4': (2, 4, 4, 512),
        'stage5': (2, 4, 4, 512), 'pooled': (2, 512), 'logits': (2, 10)}),
    ('vgg13', MNIST, {
        'stage1': (2, 28, 28, 64), 'stage2': (2, 14, 14, 128),
        'stage3': (2, 7, 7, 256), 'stage4': (2, 4, 4, 512),
        'stage5': (2, 2, 2, 512), 'pooled': (2, 512), 'logits': (2, 10)}),
    ('lightnn', CIFAR, {
        'stage1': (2, 32, 32, 16), 'stage2': (2, 16, 16, 16),
        'hidden_0': (2, 256), 'logits': (2, 10)}),
    ('papernot_mnist', MNIST, {
        'stage1': (2, 24, 24, 32), 'stage2': (2, 8, 8, 64),
        'hidden_0': (2, 200), 'hidden_1': (2, 200), 'logits': (2, 10)}),
])
def test_feature_shapes(name, image_shape, expected):
  model = models.create(name, num_classes=10)
  images = jax.ShapeDtypeStruct((2, *image_shape), jnp.float32)
  apply = functools.partial(model.apply, train=False, return_features=True)
  logits, features = jax.eval_shape(apply, _default_shapes(name, image_shape),
                                    images)
  assert logits.shape == (2, 10)
  # Every stage also before its final ReLU (the pre-activations AB taps).
  expected = dict(expected, **{f'{k}_preact': v for k, v in expected.items()
                               if k.startswith('stage')})
  assert {key: value.shape for key, value in features.items()} == expected


@pytest.mark.parametrize('name', ['resnet8', 'vgg8', 'lightnn'])
def test_stage_outputs_are_the_relu_of_their_pre_activations(name):
  model = models.create(name, num_classes=10)
  images = _images(2, CIFAR)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  _, features = model.apply(variables, images, train=False, return_features=True)
  stages = [k for k in features if k.startswith('stage') and k[5:].isdigit()]
  assert stages
  for key in stages:
    np.testing.assert_array_equal(np.maximum(features[f'{key}_preact'], 0), features[key])
    assert np.any(features[f'{key}_preact'] < 0)


@pytest.mark.parametrize('name', ['resnet8', 'vgg8', 'papernot_cifar'])
def test_features_hold_the_returned_logits(name):
  model = models.create(name, num_classes=10)
  variables = _initialized(name)
  images = _images(2, CIFAR)
  logits, features = model.apply(variables, images, train=False,
                                 return_features=True)
  np.testing.assert_array_equal(logits, features['logits'])
  np.testing.assert_allclose(
      logits, model.apply(variables, images, train=False), rtol=1e-6)


@pytest.mark.parametrize('name', ['resnet8', 'resnet18', 'vgg8', 'lightnn',
                                  'papernot_mnist'])
def test_bfloat16_computes_in_bfloat16_and_returns_float32(name):
  model = models.create(name, num_classes=10, dtype='bfloat16')
  images = jax.ShapeDtypeStruct((2, *CIFAR), jnp.float32)
  shapes = _shapes(model, CIFAR)
  assert {leaf.dtype for leaf in jax.tree.leaves(shapes['params'])} == {
      jnp.dtype('float32')}
  apply = functools.partial(model.apply, train=False, return_features=True)
  logits, features = jax.eval_shape(apply, shapes, images)
  assert logits.dtype == jnp.float32
  assert features['stage1'].dtype == jnp.bfloat16


def test_bfloat16_logits_track_float32():
  variables = _initialized('resnet8')
  images = _images(2, CIFAR)
  logits = {dtype: models.create('resnet8', num_classes=10, dtype=dtype).apply(
      variables, images, train=False) for dtype in ('float32', 'bfloat16')}
  _assert_logits(logits['bfloat16'], batch=2)
  scale = float(jnp.max(jnp.abs(logits['float32'])))
  np.testing.assert_allclose(logits['bfloat16'], logits['float32'],
                             atol=0.1 * scale)


@pytest.mark.parametrize('name, options, message', [
    ('resnet20', {'shortcut': 'C'}, 'model.shortcut'),
    ('cifar_resnet', {'blocks': (3, 0, 3)}, 'model.blocks'),
    ('cifar_resnet', {'widths': (16, 32, 64)}, 'model.widths'),
    ('cifar_resnet', {'widths': (16, 64, 32, 16)}, "model.shortcut='A'"),
    ('cifar_resnet', {'block': 'wide'}, 'model.block'),
    ('resnet18', {'dtype': 'int32'}, 'model.dtype'),
    ('vgg11', {'dtype': 'float42'}, 'model.dtype'),
    ('lightnn', {'dropout': 1.0}, 'model.dropout'),
    ('papernot_cifar', {'dropout': -0.1}, 'model.dropout'),
    ('vgg13', {'width': 2}, 'does not accept'),
])
def test_bad_option_is_a_one_line_config_error(name, options, message):
  with pytest.raises(ConfigError, match=message) as error:
    models.create(name, num_classes=10, **options)
  assert '\n' not in str(error.value)


def test_option_a_shortcut_subsamples_and_zero_pads():
  images = jnp.arange(2 * 4 * 4 * 16, dtype=jnp.float32).reshape(2, 4, 4, 16)
  shortcut = resnet._Shortcut(32, 2, 'A', jnp.float32)
  padded = shortcut.apply({}, images, train=False)
  assert padded.shape == (2, 2, 2, 32)
  np.testing.assert_array_equal(padded[..., 8:24], images[:, ::2, ::2, :])
  assert not np.any(padded[..., :8]) and not np.any(padded[..., 24:])


def test_flops_of_mlp_match_multiply_adds():
  model = models.create('mlp', num_classes=10, hidden=(1200, 1200))
  count = flops.forward_flops_per_example(model, _shapes(model, MNIST), MNIST)
  expected = 2 * (784 * 1200 + 1200 * 1200 + 1200 * 10)
  assert abs(count - expected) / expected < 0.05


def test_flops_of_papernot_mnist_match_multiply_adds():
  # Valid convs, so every tap is a real multiply-add.
  model = models.create('papernot_mnist', num_classes=10)
  macs = (26 * 26 * 32 * 9 + 24 * 24 * 32 * 32 * 9 + 10 * 10 * 64 * 32 * 9
          + 8 * 8 * 64 * 64 * 9 + 1024 * 200 + 200 * 200 + 200 * 10)
  count = flops.forward_flops_per_example(
      model, _default_shapes('papernot_mnist', MNIST), MNIST)
  assert abs(count - 2 * macs) / (2 * macs) < 0.05


def test_model_table_matches_to_the_stated_digits():
  from experiments.model_table import matches
  assert matches(269_722, '0.27M')  # He et al. round,
  assert matches(2_395_210, '2.39M')  # seed 002 cuts off.
  assert not matches(269_722, '0.28M')
  assert matches(34_290, '34,290') and not matches(34_291, '34,290')


# torchvision's ImageNet ResNets (1000 classes): the 7x7 stem and max-pool.
@pytest.mark.parametrize('name, expected', [
    ('resnet18', 11_689_512), ('resnet34', 21_797_672),
    ('resnet50', 25_557_032), ('resnet101', 44_549_160)])
def test_imagenet_stem_gives_torchvision_counts_and_a_7x7_map(name, expected):
  model = models.create(name, num_classes=1000, stem='imagenet')
  variables = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)), train=False))
  assert models.count_params(variables['params']) == expected
  # The CIFAR stem differs only in its first conv: 3x3 instead of 7x7 (3 -> 64).
  cifar_stem = models.create(name, num_classes=1000)
  assert expected - (49 - 9) * 3 * 64 == models.count_params(
      _shapes(cifar_stem, (224, 224, 3))['params'])
  features = jax.eval_shape(lambda v: model.apply(
      v, jnp.zeros((2, 224, 224, 3)), train=False, return_features=True)[1], variables)
  assert features['stem'].shape == (2, 56, 56, 64)
  assert features['stage4'].shape[:3] == (2, 7, 7)


def test_unknown_stem_is_a_config_error():
  with pytest.raises(ConfigError, match="model.stem='vit'"):
    models.create('resnet18', num_classes=10, stem='vit')


# The models of the distillation benchmark table on CIFAR-100, as RepDistiller
# builds them (HobbitLong/RepDistiller, models/, counted with torch 2.14:
# sum(p.numel() for p in model(num_classes=100).parameters())). Its CIFAR
# ResNets project shortcuts with a 1x1 conv + BatchNorm (kdjax's shortcut 'B').
REPDISTILLER_COUNTS = {
    ('resnet8', 'B'): 83_892, ('resnet14', 'B'): 181_108, ('resnet20', 'B'): 278_324,
    ('resnet32', 'B'): 472_756, ('resnet44', 'B'): 667_188, ('resnet56', 'B'): 861_620,
    ('resnet110', 'B'): 1_736_564, ('resnet8x4', None): 1_233_540,
    ('resnet32x4', None): 7_433_860, ('wrn_16_1', None): 180_916, ('wrn_16_2', None): 703_284,
    ('wrn_40_1', None): 569_780, ('wrn_40_2', None): 2_255_156, ('vgg8', None): 3_965_028,
    ('vgg11', None): 9_277_284, ('vgg13', None): 9_462_180, ('vgg16', None): 14_774_436,
    ('vgg19', None): 20_086_692, ('mobilenetv2', None): 812_836,
    ('shufflenetv1', None): 949_258, ('shufflenetv2', None): 1_355_528,
}


@pytest.mark.parametrize('name, shortcut', sorted(REPDISTILLER_COUNTS, key=str))
def test_repdistiller_counts_on_cifar100(name, shortcut):
  options = {} if shortcut is None else {'shortcut': shortcut}
  model = models.create(name, num_classes=100, **options)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((1, 32, 32, 3)), train=False))
  assert models.count_params(variables['params']) == REPDISTILLER_COUNTS[(name, shortcut)]


def test_wrn_by_hand_and_its_features():
  # WRN-16-2, 10 classes: stem 3*9*16; group 1 (16 -> 32, two blocks), 2 (32 -> 64),
  # 3 (64 -> 128): a projecting block has BN(in), conv3x3 in*out, BN(out), conv3x3
  # out*out and a 1x1 in*out; a plain block BN, conv, BN, conv; then BN(128) and the head.
  def group(cin, cout):
    return (2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout + cin * cout
            + 2 * cout + 9 * cout * cout + 2 * cout + 9 * cout * cout)
  expected = 3 * 9 * 16 + group(16, 32) + group(32, 64) + group(64, 128) + 2 * 128 + 128 * 10 + 10
  model = models.create('wrn_16_2', num_classes=10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)), train=False)
  assert models.count_params(variables['params']) == expected
  logits, features = model.apply(variables, jnp.ones((2, 32, 32, 3)), train=False,
                                 return_features=True)
  shapes = {k: v.shape for k, v in features.items()}
  stages = {'stage1': (2, 32, 32, 32), 'stage2': (2, 16, 16, 64), 'stage3': (2, 8, 8, 128)}
  assert shapes == {'stem': (2, 32, 32, 16), **stages,
                    **{f'{k}_preact': v for k, v in stages.items()},
                    'final': (2, 8, 8, 128), 'pooled': (2, 128), 'logits': (2, 10)}
  assert float(features['final'].min()) >= 0 and float(features['stage3'].min()) < 0
  # The last group's pre-activation: the final BatchNorm's output, before its ReLU.
  np.testing.assert_allclose(np.maximum(features['stage3_preact'], 0), features['final'],
                             rtol=1e-6)
  np.testing.assert_array_equal(logits, features['logits'])
  with pytest.raises(ConfigError, match='6n \\+ 4'):
    models.create('wrn', num_classes=10, depth=20)


def test_channel_shuffle_interleaves_the_groups():
  from kdjax.models import shufflenet
  x = jnp.arange(6.0).reshape(1, 1, 1, 6)  # groups of 3: (0 1 2) (3 4 5)
  np.testing.assert_array_equal(shufflenet.channel_shuffle(x, 2).ravel(), [0, 3, 1, 4, 2, 5])


@pytest.mark.parametrize('name, stages', [('mobilenetv2', {'stage1': (16, 16, 12),
                                                           'stage4': (2, 2, 160)}),
                                          ('shufflenetv1', {'stage1': (16, 16, 240),
                                                            'stage3': (4, 4, 960)}),
                                          ('shufflenetv2', {'stage1': (16, 16, 116),
                                                            'stage3': (4, 4, 464)})])
def test_benchmark_nets_give_their_stage_features(name, stages):
  """The stage maps feature methods tap (RepDistiller's f1..f4 / f1..f3, NHWC)."""
  model = models.create(name, num_classes=100)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                jnp.zeros((2, 32, 32, 3)), train=False))
  logits, features = jax.eval_shape(
      lambda v: model.apply(v, jnp.ones((2, 32, 32, 3)), train=False, return_features=True),
      variables)
  for key, shape in stages.items():
    assert features[key].shape == (2, *shape)
  assert logits.shape == (2, 100)
