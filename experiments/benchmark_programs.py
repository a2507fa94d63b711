"""The programs `python -m experiments.benchmark` times, sections (a)-(e) and (g).

Imported when the benchmark starts (it imports jax, whose absl flags
`python -m experiments.benchmark --help` does not list).

Each `measure_*` compiles its programs, times them (the median of `Bench.repeats`
calls after a warm-up) on synthetic MNIST-shaped data, adds its rows to the
`Bench` table and returns the seconds the ratios are computed from.
"""

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax import models
from kdjax.models import layers
from kdjax.train import feed as feed_lib
from kdjax.train import step as step_lib

BATCH = 128
MEAN, STD = (0.1307,), (0.3081,)


def median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


class Bench:
  """What every measured section shares: the synthetic data, the mesh, and the table."""
  def __init__(self, quick: bool, repeats: int):
    self.quick, self.repeats = quick, repeats
    self.batch_size = BATCH
    self.num_examples = 2048 if quick else 60000
    self.steps = self.num_examples // BATCH
    self.rng = np.random.default_rng(0)
    images = self.rng.integers(0, 256, (self.num_examples, 28, 28, 1), dtype=np.uint8)
    labels = self.rng.integers(0, 10, self.num_examples).astype(np.int32)
    self.mesh = step_lib.data_mesh()
    self.data = jax.device_put({'images': images, 'labels': labels})
    self.rows = []
    self.plain = {'temperature': jnp.float32(1.0), 'alpha': jnp.float32(0.0)}
    self.distill = {'temperature': jnp.float32(20.0), 'alpha': jnp.float32(1.0)}

  def median_seconds(self, fn) -> float:
    return median_seconds(fn, self.repeats)

  def epoch_program(self, train_step, state, batch_data, teacher_variables, hparams,
                    num_members=0, num_steps=None, batch_size=BATCH):
    """Compiles an on-device epoch; returns (run(hparams=...) -> None, compile seconds)."""
    epoch = step_lib.make_epoch(train_step, mesh=self.mesh, batch_size=batch_size,
                                steps_per_epoch=num_steps or self.steps,
                                num_members=num_members)
    start = time.perf_counter()
    compiled = epoch.lower(state, batch_data, teacher_variables, hparams,
                           jax.random.PRNGKey(0)).compile()
    compile_seconds = time.perf_counter() - start
    initial = _host_copy(state)  # the epoch donates its state

    def run(hp=hparams):
      out = compiled(jax.device_put(initial), batch_data, teacher_variables, hp,
                     jax.random.PRNGKey(1))
      block(out)

    run()  # warm-up
    return run, compile_seconds

  def add(self, section, name, seconds, examples, compile_seconds=None, **extra):
    self.rows.append({'section': section, 'name': name, 'seconds': seconds,
                      'examples_per_second': examples / seconds,
                      'compile_seconds': compile_seconds, **extra})
    print(f'  measured ({section}) {name}: {seconds:.3f}s', file=sys.stderr)


def block(tree):
  jax.block_until_ready(tree)
  return tree


def _mlp(hidden, **kw):
  return models.create('mlp', num_classes=10, hidden=hidden, **kw)


def _state_for(model, tx, seed=0):
  return step_lib.init_state(model, tx, jax.random.PRNGKey(seed), (28, 28, 1))


def _host_copy(tree):
  return jax.tree.map(np.asarray, tree)


def measure_dot(bench: Bench) -> float:
  """(a) plain matmul GFLOP/s: the machine's practical peak."""
  n = 1024 if bench.quick else 2048
  a = jax.device_put(bench.rng.standard_normal((n, n), dtype=np.float32))
  b = jax.device_put(bench.rng.standard_normal((n, n), dtype=np.float32))
  dot = jax.jit(jnp.dot).lower(a, b).compile()
  block(dot(a, b))
  dot_reps = 5
  dot_seconds = bench.median_seconds(lambda: block([dot(a, b) for _ in range(dot_reps)])
                                     ) / dot_reps
  dot_gflops = 2 * n**3 / dot_seconds / 1e9
  bench.add('a', f'jnp.dot {n}x{n} float32', dot_seconds, n, gflops_per_second=dot_gflops)
  return dot_gflops


def measure_teacher_step(bench: Bench):
  """(a) the teacher's train step, inside an on-device epoch; returns (teacher, its state,
  its GFLOP/s)."""
  teacher = _mlp((1200, 1200), input_dropout=0.2, hidden_dropout=0.5)
  teacher_tx = optax.adam(1e-3)
  teacher_step = step_lib.make_train_step(model=teacher, tx=teacher_tx, mean=MEAN, std=STD,
                                          max_shift=2, max_norm=4.0)
  teacher_state = _state_for(teacher, teacher_tx)
  batch_shapes = {k: jax.ShapeDtypeStruct((BATCH, *v.shape[1:]), v.dtype)
                  for k, v in bench.data.items()}
  step_flops = step_lib.train_step_flops(teacher_step, teacher_state, batch_shapes, None,
                                         bench.plain)
  a_steps = min(bench.steps, 100)
  run, compile_seconds = bench.epoch_program(teacher_step, teacher_state, bench.data, None,
                                             bench.plain, num_steps=a_steps)
  seconds = bench.median_seconds(run)
  teacher_gflops = step_flops * a_steps / seconds / 1e9 if step_flops else None
  rate = {'gflops_per_second': teacher_gflops} if teacher_gflops else {}
  bench.add('a', '1200-1200 teacher train step', seconds / a_steps, BATCH, compile_seconds,
            flops_per_step=step_flops, **rate)
  return teacher, teacher_state, teacher_gflops


def teacher_logits(bench: Bench, teacher, teacher_state):
  """The teacher's variables (untrained: speed does not depend on the values) and the data
  with its logits cached beside the images."""
  teacher_variables = {'params': teacher_state.params}
  teacher_predict = step_lib.make_predict(teacher, mesh=bench.mesh, mean=MEAN, std=STD,
                                          batch_size=500 if not bench.quick else 256)
  cached_data = dict(bench.data, teacher_logits=block(teacher_predict(
      teacher_variables, bench.data['images'])))
  return teacher_variables, cached_data


def measure_student_epochs(bench: Bench, teacher, teacher_variables, cached_data):
  """(b) 800-800 epoch: alone, teacher in the step, cached teacher logits; returns
  (seconds by variant, the student, its optimizer, its train step alone)."""
  student = _mlp((800, 800))
  student_tx = optax.adam(1e-3)
  variants = {
      'alone': (step_lib.make_train_step(model=student, tx=student_tx, mean=MEAN, std=STD),
                bench.data, None, bench.plain),
      'teacher in the step': (
          step_lib.make_train_step(model=student, tx=student_tx, mean=MEAN, std=STD,
                                   teacher_model=teacher),
          bench.data, teacher_variables, bench.distill),
      'cached teacher logits': (
          step_lib.make_train_step(model=student, tx=student_tx, mean=MEAN, std=STD),
          cached_data, None, bench.distill),
  }
  b_seconds = {}
  for name, (train_step, batch_data, tv, hp) in variants.items():
    run, compile_seconds = bench.epoch_program(train_step, _state_for(student, student_tx),
                                               batch_data, tv, hp)
    b_seconds[name] = bench.median_seconds(run)
    bench.add('b', f'800-800 epoch, {name}', b_seconds[name], bench.steps * BATCH,
              compile_seconds)
  return b_seconds, student, student_tx, variants['alone'][0]


def measure_small_students(bench: Bench, cached_data) -> dict:
  """(c) 30-30 students: one, a vectorised 3x3 grid, nine in a row; (d) the one student's
  epoch fed from a host loop. Returns seconds by 'one', 'grid', 'nine', 'host'."""
  examples = bench.steps * BATCH
  small = _mlp((30, 30))
  small_tx = optax.adam(1e-3)
  small_step = step_lib.make_train_step(model=small, tx=small_tx, mean=MEAN, std=STD)
  run_one, compile_one = bench.epoch_program(small_step, _state_for(small, small_tx),
                                             cached_data, None, bench.distill)
  one_seconds = bench.median_seconds(run_one)
  bench.add('c', '30-30 epoch, one student', one_seconds, examples, compile_one)
  grid = [(t, a_) for t in (1.0, 5.0, 10.0) for a_ in (0.1, 0.5, 0.9)]
  grid_hparams = {'temperature': jnp.array([t for t, _ in grid], jnp.float32),
                  'alpha': jnp.array([a_ for _, a_ in grid], jnp.float32)}
  grid_state = jax.jit(jax.vmap(lambda s: _state_for(small, small_tx, s)))(jnp.arange(9))
  run_grid, compile_grid = bench.epoch_program(small_step, grid_state, cached_data, None,
                                               grid_hparams, num_members=9)
  grid_seconds = bench.median_seconds(run_grid)
  bench.add('c', '30-30 epoch, 3x3 grid vectorised', grid_seconds, 9 * examples, compile_grid)
  # Nine sequential runs reuse one compiled program (the cheapest way to run them apart).
  singles = [{'temperature': jnp.float32(t), 'alpha': jnp.float32(a_)} for t, a_ in grid]
  seq_seconds = bench.median_seconds(lambda: [run_one(hp) for hp in singles])
  bench.add('c', '30-30 epoch, 3x3 grid as nine runs', seq_seconds, 9 * examples)
  host_seconds = _host_loop(bench, small_step, _state_for(small, small_tx), cached_data)
  bench.add('d', '30-30 epoch, on-device', one_seconds, examples, compile_one)
  return {'one': one_seconds, 'grid': grid_seconds, 'nine': seq_seconds, 'host': host_seconds}


def _host_loop(bench: Bench, train_step, state, cached_data) -> float:
  """(d) an epoch fed from a host loop, one jitted step per batch; its seconds."""
  host_step = jax.jit(train_step, donate_argnums=0)
  host_data = {k: np.asarray(v) for k, v in cached_data.items()}
  initial = _host_copy(state)
  order_rng = np.random.default_rng(1)
  steps = bench.steps

  def host_epoch():
    state = jax.device_put(initial)
    order = order_rng.permutation(bench.num_examples)[:steps * BATCH].reshape(steps, BATCH)
    for indices in order:
      batch = {k: v[indices] for k, v in host_data.items()}
      state, _ = host_step(state, batch, None, bench.distill)
    block(state)

  start = time.perf_counter()
  host_epoch()  # compiles the step
  host_compile = time.perf_counter() - start
  host_seconds = bench.median_seconds(host_epoch)
  bench.add('d', '30-30 epoch, host loop', host_seconds, steps * BATCH, host_compile)
  return host_seconds


def measure_stream(bench: Bench, train_step, student, student_tx, alone_seconds: float):
  """(e) the 800-800 epoch streamed from TFDS; its seconds, or None when real MNIST is not
  prepared."""
  if not data_lib.is_prepared('mnist'):
    print('  (e) skipped: MNIST is not prepared (python -m kdjax.data import mnist)',
          file=sys.stderr)
    return None
  config = config_lib.default()
  config.input.pipeline = 'stream'
  config.batch_size = BATCH
  if bench.quick:  # a 16,384-example shuffle buffer would outweigh 16 steps
    config.input.shuffle_buffer = 1024
  info = data_lib.stream.describe('mnist', data_dir=None, image_size=0)
  feed = feed_lib.StreamFeed(config, info, bench.mesh)
  feed.steps_per_epoch = bench.steps  # the same number of steps as (b)
  stream_state = _state_for(student, student_tx)
  stream_compile = feed.compile(train_step, num_members=0, state=stream_state,
                                teacher_variables=None, hparams=bench.plain, data_rng=None)
  stream_initial = _host_copy(stream_state)
  epochs = iter(range(1, 1000))

  def stream_epoch():
    state, metrics, _ = feed.run_epoch(jax.device_put(stream_initial), None, bench.plain, None,
                                       next(epochs), stop_requested=lambda: False)
    block(state)

  stream_epoch()  # warm-up: tf.data's first pass opens files and fills buffers
  stream_seconds = bench.median_seconds(stream_epoch)
  bench.add('e', '800-800 epoch, streamed from TFDS (tf.data)', stream_seconds,
            bench.steps * BATCH, stream_compile)
  bench.add('e', '800-800 epoch, on-device', alone_seconds, bench.steps * BATCH)
  return stream_seconds


def measure_convolutions(bench: Bench) -> dict:
  """(g) on CPU: a conv net's scanned epoch, XLA's convolution against kdjax's; seconds by
  implementation ({} on other backends)."""
  g_seconds = {}
  if jax.default_backend() != 'cpu':
    return g_seconds
  conv_net = models.create('lightnn', num_classes=10)
  conv_tx = optax.sgd(0.01, momentum=0.9)
  conv_step = step_lib.make_train_step(model=conv_net, tx=conv_tx, mean=MEAN, std=STD)
  g_steps = min(bench.steps, 2 if bench.quick else 20)
  previous = os.environ.get(layers.CPU_CONV_ENV)
  for impl, label in (('xla', "XLA's convolution"), ('patches', "kdjax's convolution")):
    os.environ[layers.CPU_CONV_ENV] = impl  # read when the program is traced
    try:
      run, compile_seconds = bench.epoch_program(conv_step, _state_for(conv_net, conv_tx),
                                                 bench.data, None, bench.plain,
                                                 num_steps=g_steps)
    finally:
      if previous is None:
        os.environ.pop(layers.CPU_CONV_ENV, None)
      else:
        os.environ[layers.CPU_CONV_ENV] = previous
    g_seconds[impl] = bench.median_seconds(run)
    bench.add('g', f'LightNN epoch ({g_steps} steps), {label}', g_seconds[impl],
              g_steps * BATCH, compile_seconds)
  return g_seconds
