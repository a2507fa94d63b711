"""The compiled train step and epoch: learning, a frozen teacher, sharding, sweeps."""

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tests
from kdjax import models
from kdjax.train import step as step_lib

MEAN, STD = (0.5,), (0.25,)
IMAGE_SHAPE = (8, 8, 1)


def _batch(num=64, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 10, num).astype(np.int32)
  # Class-dependent images, so there is something to learn.
  images = rng.integers(0, 60, (num, *IMAGE_SHAPE))
  images[np.arange(num), labels % 8, labels // 8 * 4] = 255
  return {'images': images.astype(np.uint8), 'labels': labels}


def _student(lr=0.1, hidden=(32,)):
  model = models.create('mlp', num_classes=10, hidden=hidden)
  tx = optax.sgd(lr)
  state = step_lib.init_state(model, tx, jax.random.PRNGKey(0), IMAGE_SHAPE)
  return model, tx, state


def _loss(model, params, batch):
  from kdjax import losses
  from kdjax.data import augment
  logits = model.apply({'params': params}, augment.normalize(batch['images'], MEAN, STD),
                       train=False)
  return float(jnp.mean(losses.cross_entropy(logits, batch['labels'])))


HPARAMS = {'temperature': jnp.float32(4.0), 'alpha': jnp.float32(0.5)}


def test_one_step_lowers_the_loss_on_a_fixed_batch():
  model, tx, state = _student()
  batch = _batch()
  train_step = jax.jit(step_lib.make_train_step(model=model, tx=tx, mean=MEAN, std=STD))
  before = _loss(model, state.params, batch)
  new_state, metrics = train_step(state, batch, None, HPARAMS)
  assert int(new_state.step) == 1
  np.testing.assert_allclose(metrics['loss'], before, rtol=1e-5)
  assert _loss(model, new_state.params, batch) < before - 1e-3


def _teacher():
  teacher = models.create('mlp', num_classes=10, hidden=(48, 48))
  variables = teacher.init(jax.random.PRNGKey(7), jnp.zeros((1, *IMAGE_SHAPE)), train=False)
  return teacher, variables


class _ConvBNDropout(nn.Module):
  """A small conv net with BatchNorm and dropout: both act differently in training."""
  num_classes: int = 10
  width: int = 8
  dropout: float = 0.5

  @nn.compact
  def __call__(self, images, *, train: bool, return_features: bool = False):
    x = nn.Conv(self.width, (3, 3))(images)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x).reshape((images.shape[0], -1))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(self.num_classes)(x)


def _bn_dropout_teacher():
  """The conv teacher, its running statistics moved off their initial values by
  one training-mode pass, so that batch statistics would give other logits."""
  teacher = _ConvBNDropout(width=12)
  variables = teacher.init(jax.random.PRNGKey(7), jnp.zeros((1, *IMAGE_SHAPE)), train=False)
  from kdjax.data import augment
  images = augment.normalize(_batch(64, seed=9)['images'], MEAN, STD)
  _, updated = teacher.apply(variables, images, train=True, mutable=['batch_stats'],
                             rngs={'dropout': jax.random.PRNGKey(0)})
  return teacher, {'params': variables['params'], 'batch_stats': updated['batch_stats']}


class _Recorded:
  """A model called as the step calls its teacher, noting how (at trace time) and
  the images it saw with the logits it gave (from inside the compiled program)."""

  def __init__(self, module):
    self.module, self.calls, self.seen = module, [], []

  def apply(self, variables, images, **kwargs):
    self.calls.append(kwargs)
    logits = self.module.apply(variables, images, **kwargs)
    jax.debug.callback(lambda i, l: self.seen.append((np.array(i), np.array(l))),
                       images, logits)
    return logits


def test_teacher_in_the_step_is_frozen_and_in_eval_mode():
  """A BatchNorm + dropout teacher run inside the step: its params and batch_stats
  are bitwise unchanged after an epoch, and it runs in eval mode (running
  statistics, dropout off) on the student's augmented images."""
  from kdjax.data import augment
  model, tx, state = _student()
  module, teacher_variables = _bn_dropout_teacher()
  teacher = _Recorded(module)
  before = jax.tree.map(np.array, teacher_variables)
  train_step = step_lib.make_train_step(model=model, tx=tx, mean=MEAN, std=STD,
                                        teacher_model=teacher, max_shift=2, flip=True)
  mesh = step_lib.data_mesh(jax.devices()[:1])
  epoch = step_lib.make_epoch(train_step, mesh=mesh, batch_size=16, steps_per_epoch=4)
  data = _batch(64)
  new_state, metrics = epoch(state, data, teacher_variables, HPARAMS, jax.random.PRNGKey(1))
  jax.effects_barrier()
  assert int(new_state.step) == 4 and np.all(np.isfinite(metrics['loss']))
  assert set(teacher_variables) == {'params', 'batch_stats'}
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.array, teacher_variables))
  # Traced once, in eval mode: no dropout key, no mutable batch statistics.
  assert teacher.calls == [{'train': False}]
  assert len(teacher.seen) == 4  # one call per step
  originals = np.asarray(augment.normalize(data['images'], MEAN, STD))
  unchanged = 0
  for images, logits in teacher.seen:
    np.testing.assert_allclose(logits, module.apply(before, images, train=False),
                               rtol=1e-5, atol=1e-5)
    # The check can tell the modes apart: training mode gives other logits.
    train_logits, _ = module.apply(before, images, train=True, mutable=['batch_stats'],
                                   rngs={'dropout': jax.random.PRNGKey(0)})
    assert np.abs(train_logits - logits).max() > 0.1
    unchanged += sum(np.any(np.all(originals == image, axis=(1, 2, 3))) for image in images)
  # The teacher saw augmented images (shift ±2 and flips leave ~2% as they were).
  assert unchanged < 0.25 * 4 * 16, unchanged


def test_cached_and_inline_teacher_give_the_same_loss():
  model, tx, state = _student()
  teacher, teacher_variables = _teacher()
  batch = _batch()
  from kdjax.data import augment
  cached = dict(batch, teacher_logits=teacher.apply(
      teacher_variables, augment.normalize(batch['images'], MEAN, STD), train=False))
  inline_step = jax.jit(step_lib.make_train_step(model=model, tx=tx, mean=MEAN, std=STD,
                                                 teacher_model=teacher))
  cached_step = jax.jit(step_lib.make_train_step(model=model, tx=tx, mean=MEAN, std=STD))
  inline_state, inline_metrics = inline_step(state, batch, teacher_variables, HPARAMS)
  cached_state, cached_metrics = cached_step(state, cached, None, HPARAMS)
  np.testing.assert_allclose(inline_metrics['loss'], cached_metrics['loss'], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               inline_state.params, cached_state.params)


# A vmapped member and its single run are different XLA programs, equal up
# to float reassociation. Measured on this CPU after 8 SGD steps: max
# |Δlogit| 2.1e-6 on logits of magnitude ~2.5; the tolerance is ~10× that.
# A member checked against the single run of another seed differs by > 1.5.
# (With Adam the same 8 steps amplify the reassociation noise to ~0.1, its
# first updates being ±lr whatever the gradient's size, so SGD is used here.)
_SWEEP_LOGIT_TOLERANCE = 2e-5


def test_sweep_member_equals_its_single_run_on_test_logits():
  """A vmapped sweep member follows the run it stands for: a student with
  BatchNorm and dropout, augmented inputs, a BatchNorm + dropout teacher in
  the step, two epochs of four steps, compared on held-out logits."""
  student = _ConvBNDropout(width=6, dropout=0.3)
  tx = optax.sgd(0.1, momentum=0.9)
  teacher, teacher_variables = _bn_dropout_teacher()
  train_step = step_lib.make_train_step(model=student, tx=tx, mean=MEAN, std=STD,
                                        max_shift=2, teacher_model=teacher)
  mesh = step_lib.data_mesh(jax.devices()[:1])
  data, test_images = _batch(64), _batch(96, seed=5)['images']
  seeds = [0, 1, 2]
  hparams = {'temperature': jnp.array([1.0, 4.0, 10.0]), 'alpha': jnp.array([0.1, 0.5, 0.9])}
  init = lambda seed: step_lib.init_state(student, tx, jax.random.PRNGKey(seed), IMAGE_SHAPE)
  order_rng = jax.random.PRNGKey(3)

  def train(epoch_fn, state, member_hparams):
    for epoch in (1, 2):
      state, metrics = epoch_fn(state, data, teacher_variables, member_hparams,
                                jax.random.fold_in(order_rng, epoch))
      assert np.all(np.isfinite(metrics['loss']))
    return state

  sweep = step_lib.make_epoch(train_step, mesh=mesh, batch_size=16, steps_per_epoch=4,
                              num_members=3)
  swept = train(sweep, jax.vmap(init)(jnp.array(seeds)), hparams)
  swept_logits = np.asarray(step_lib.make_predict(
      student, mesh=mesh, mean=MEAN, std=STD, batch_size=32, num_members=3)(
          {'params': swept.params, **swept.model_state}, test_images))
  single = step_lib.make_epoch(train_step, mesh=mesh, batch_size=16, steps_per_epoch=4)
  predict = step_lib.make_predict(student, mesh=mesh, mean=MEAN, std=STD, batch_size=32)
  alone_logits = []
  for m, seed in enumerate(seeds):
    alone = train(single, init(seed), {k: v[m] for k, v in hparams.items()})
    alone_logits.append(np.asarray(predict({'params': alone.params, **alone.model_state},
                                           test_images)))
  for m in range(3):
    for other in range(3):
      delta = np.abs(swept_logits[m] - alone_logits[other]).max()
      if m == other:
        assert delta <= _SWEEP_LOGIT_TOLERANCE, (m, delta)
      else:  # another seed and hparams: the comparison has teeth
        assert delta > 1000 * _SWEEP_LOGIT_TOLERANCE, (m, other, delta)


def test_learning_rate_and_loss_kind_members_equal_separate_runs():
  """Sweeping the learning rate (as an update scale) and the soft-loss kind
  (as a traced branch index) trains each member exactly as its own run."""
  from kdjax import losses
  model = models.create('mlp', num_classes=10, hidden=(32,))
  teacher, teacher_variables = _teacher()
  base_lr = 0.05
  rates = [0.05, 0.2, 0.01]
  kinds = ['kl', 'mse_logits', 'cosine']
  tx = optax.adam(base_lr)
  mesh = step_lib.data_mesh(jax.devices()[:1])
  data = _batch(64)
  init = lambda tx: step_lib.init_state(model, tx, jax.random.PRNGKey(0), IMAGE_SHAPE)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *[init(tx)] * 3)
  swept_step = step_lib.make_train_step(model=model, tx=tx, mean=MEAN, std=STD,
                                        teacher_model=teacher, soft_kind=None)
  sweep = step_lib.make_epoch(swept_step, mesh=mesh, batch_size=16, steps_per_epoch=4,
                              num_members=3)
  hparams = {'temperature': jnp.full(3, 3.0), 'alpha': jnp.full(3, 0.7),
             'lr_scale': jnp.array(rates) / base_lr,
             'kind': jnp.array([losses.SOFT_LOSS_KINDS.index(k) for k in kinds])}
  swept, sweep_metrics = sweep(stacked, data, teacher_variables, hparams,
                               jax.random.PRNGKey(3))
  finals = []
  for m in range(3):
    own_tx = optax.adam(rates[m])
    own_step = step_lib.make_train_step(model=model, tx=own_tx, mean=MEAN, std=STD,
                                        teacher_model=teacher, soft_kind=kinds[m])
    single = step_lib.make_epoch(own_step, mesh=mesh, batch_size=16, steps_per_epoch=4)
    alone, metrics = single(init(own_tx), data, teacher_variables,
                            {'temperature': 3.0, 'alpha': 0.7}, jax.random.PRNGKey(3))
    np.testing.assert_allclose(sweep_metrics['loss'][:, m], metrics['loss'], rtol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[m], b, rtol=1e-4, atol=1e-5),
                 swept.params, alone.params)
    finals.append(float(metrics['loss'][-1]))
  assert len({round(f, 4) for f in finals}) == 3  # the members really differ


_SHARDED_SCRIPT = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, optax, sys
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    sys.path.insert(0, sys.argv[1])
    from tests import test_train_step as t
    from kdjax.train import step as step_lib
    assert jax.device_count() == 4, jax.devices()
    model, tx, state = t._student(hidden=(32, 32))
    teacher, teacher_variables = t._teacher()
    train_step = step_lib.make_train_step(model=model, tx=tx, mean=t.MEAN, std=t.STD,
                                          teacher_model=teacher, max_shift=1)
    data = t._batch(128)
    state = jax.tree.map(np.asarray, state)  # host copy: the epoch donates its input
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = step_lib.data_mesh(devices)
      put = lambda tree: jax.device_put(tree, NamedSharding(mesh, P()))
      epoch = step_lib.make_epoch(train_step, mesh=mesh, batch_size=32, steps_per_epoch=4)
      new_state, metrics = epoch(put(state), put(data), put(teacher_variables),
                                 put(t.HPARAMS), jax.random.PRNGKey(5))
      results.append((jax.tree.map(np.asarray, new_state.params), np.asarray(metrics['loss'])))
    (p1, l1), (p4, l4) = results
    np.testing.assert_allclose(l1, l4, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p1, p4)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(
        jax.tree.leaves(p1), jax.tree.leaves(jax.tree.map(np.asarray, state.params))))
    assert moved > 1e-4, moved
    print('sharded-ok')
''')


def test_four_device_step_equals_single_device_step():
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, XLA_FLAGS=tests.xla_flags('--xla_force_host_platform_device_count=4'),
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', _SHARDED_SCRIPT, root], env=env, cwd=root,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'sharded-ok' in out.stdout


@pytest.mark.parametrize('member_orders', [False, True])
def test_members_with_equal_inputs_share_one_teacher_pass(member_orders):
  """A T x alpha grid over two seeds, jittered inputs, the teacher in the step:
  grouped by inputs, the teacher runs once per seed, and every member's step is
  the one plain vmap gives it."""
  model, tx, _ = _student()
  teacher, teacher_variables = _teacher()
  seeds = np.array([0, 0, 0, 1, 1, 1])
  groups = (0, 0, 0, 3, 3, 3)
  state = jax.vmap(lambda s: step_lib.init_state(model, tx, jax.random.PRNGKey(s), IMAGE_SHAPE))(
      jnp.asarray(seeds))
  hparams = {'temperature': jnp.array([1., 4., 8.] * 2), 'alpha': jnp.array([0.2, 0.5, 0.9] * 2)}
  train_step = step_lib.make_train_step(model=model, tx=tx, mean=MEAN, std=STD, max_shift=2,
                                        teacher_model=teacher)
  if member_orders:  # each seed its own batches, equal within a seed
    batches = [_batch(32, seed=int(s) + 10) for s in seeds]
    batch = jax.tree.map(lambda *x: np.stack(x), *batches)
  else:
    batch = _batch(32)
  grouped = jax.jit(step_lib.vectorise(train_step, member_orders=member_orders,
                                       input_groups=groups))
  plain = jax.jit(jax.vmap(train_step, in_axes=(0, 0 if member_orders else None, None, 0)))
  a = b = state
  for _ in range(3):
    a, metrics_a = grouped(a, batch, teacher_variables, hparams)
    b, metrics_b = plain(b, batch, teacher_variables, hparams)
  for x, y in zip(jax.tree.leaves((a, metrics_a)), jax.tree.leaves((b, metrics_b))):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  kernel = jax.tree.leaves(a.params)[-1]
  assert not np.allclose(kernel[0], kernel[3]) and not np.allclose(kernel[0], kernel[1])

  # Four teacher passes fewer (six members, two groups), counted by XLA.
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  flops = {g: step_lib.train_step_flops(train_step, state, shapes, teacher_variables, hparams,
                                        num_members=6, member_orders=member_orders,
                                        input_groups=g) for g in (groups, None)}
  one_pass = 2 * 32 * (64 * 48 + 48 * 48 + 48 * 10)  # multiply-adds of the teacher's dots
  assert flops[None] - flops[groups] == pytest.approx(4 * one_pass, rel=0.05)
