r"""Speed of kdjax's training programs on this machine, measured in one run.

  python -m experiments.benchmark [--quick] [--json=PATH] [--repeats=3]

Prints one table. Every row is timed after its program has been compiled
(compile time is its own column), as the median of `--repeats` calls, on
synthetic MNIST-shaped data (60,000 uint8 images of 28×28×1; speed does not
depend on the pixel values). Rows:

  (a) the 784-1200-1200-10 teacher's train step (dropout, max-norm, ±2 px
      jitter, Adam), with its achieved GFLOP/s beside that of a plain
      2048×2048 float32 `jnp.dot` measured in the same run;
  (b) one epoch of the 800-800 student alone, distilled with the teacher run
      inside the step, and distilled from cached teacher logits;
  (c) one epoch of a 30-30 student, of a 3×3 temperature × alpha grid of
      them trained as one vectorised program, and of the same nine trained
      one after another;
  (d) one epoch of the 30-30 student as one on-device program vs a Python
      loop that shuffles on the host and feeds one batch per step;
  (e) when real MNIST is prepared: the 800-800 student's epoch streamed from
      TFDS through tf.data (`config.input.pipeline='stream'`: read, shuffle,
      batch, prefetch to the device, one compiled step per batch), beside
      (b)'s on-device epoch.
  (f) when real MNIST is prepared: whole commands, each a fresh process
      (`python -m kdjax.main`), as a user times them: the README's 3-epoch
      800-800 distillation and the 3-epoch 3×3 grid of 30-30 students, with
      an empty cache directory (cold: MNIST decoded, programs compiled) and
      again with the cache the cold run left (warm). Columns: process wall
      time, time from launch to the first training step, training time
      (the run's own epoch clock, evaluation included) and whole / training.
  (g) on CPU: a scanned epoch of LightNN (seed 004's conv student; SGD with
      momentum) with XLA's convolution ($KDJAX_CPU_CONV=xla) and with
      kdjax's (shifted slices and one matrix product, the CPU default).

The ratios the table ends with are the ones kdjax's speed targets are
stated in: (a) ≥ 0.75 of the dot's GFLOP/s, (b) cached ≤ 1.15 × alone,
(c) grid ≤ 2 × one student and ≥ 4 × faster than nine in a row,
(d) on-device ≥ 1.5 × faster than the host loop, (g) kdjax's convolution
≥ 2 × faster than XLA's on CPU, (f) warm: first step
≤ 3 s after launch, whole ≤ 1.3 × training for the distillation and ≤ 2 ×
for the grid.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_bool('quick', False, 'small sizes: seconds, for a smoke test')
flags.DEFINE_integer('repeats', 3, 'timed calls per row (median reported)', lower_bound=1)
flags.DEFINE_string('json', '', 'also write the table to this JSON file')
FLAGS = flags.FLAGS

BATCH = 128
MEAN, STD = (0.1307,), (0.3081,)


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _median_seconds(fn, repeats: int) -> float:
  """Median wall time of `fn()` (which must block until its work is done)."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _timed_command(args: list[str], workdir: str, cache: str) -> dict:
  """Runs `python -m kdjax.main ARGS --workdir=WORKDIR` with `cache`; its timings."""
  env = dict(os.environ, KDJAX_CACHE_DIR=cache)
  launched = time.time()
  done = subprocess.run([sys.executable, '-m', 'kdjax.main', *args, f'--workdir={workdir}'],
                        env=env, capture_output=True, text=True, check=False)
  wall = time.time() - launched
  if done.returncode:
    raise RuntimeError(f'benchmark command failed: {done.stderr.strip()[-500:]}')
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  if 'members' in results:  # a sweep: its members share the clock
    with open(os.path.join(results['members'][0]['workdir'], 'results.json')) as f:
      first = json.load(f)
    results = dict(results, first_step_unix_time=first['first_step_unix_time'])
  return {'process_seconds': wall,
          'to_first_step_seconds': results['first_step_unix_time'] - launched,
          'train_seconds': results['train_seconds'], 'compile_seconds': results['compile_seconds']}


def _whole_commands(quick: bool) -> list[dict]:
  """(f): the README's distillation and grid commands, cold and warm cache."""
  rows = []
  with tempfile.TemporaryDirectory(prefix='kdjax-bench-') as root:
    teacher = os.path.join(root, 'teacher')
    size = ['--config.train_examples=2048'] if quick else []
    _timed_command(['--config=configs/mnist_teacher.py', '--config.num_epochs=1', *size],
                   teacher, os.path.join(root, 'teacher-cache'))
    distill = ['--config=configs/mnist_distill.py', f'--config.teacher.workdir={teacher}',
               '--config.num_epochs=3', *size]
    grid = [*distill, '--config.model.hidden=(30,30)', '--config.sweep.temperature=(1.,5.,10.)',
            '--config.sweep.alpha=(0.1,0.5,0.9)']
    commands = (('800-800 distillation, 3 epochs', distill),
                ('3x3 grid of 30-30 students, 3 epochs', grid))
    for name, args in commands[:1] if quick else commands:  # --quick: a smoke test
      cache = os.path.join(root, f'cache-{len(rows)}')
      for state in ('cold', 'warm'):
        timing = _timed_command(args, os.path.join(root, f'run-{len(rows)}'), cache)
        rows.append(dict(timing, command=name, cache=state))
        print(f'  measured (f) {name}, {state} cache: {timing["process_seconds"]:.2f}s',
              file=sys.stderr)
  return rows


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from kdjax import models
  from kdjax.train import step as step_lib

  quick, repeats = FLAGS.quick, FLAGS.repeats
  num_examples = 2048 if quick else 60000
  steps = num_examples // BATCH
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (num_examples, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, num_examples).astype(np.int32)
  mesh = step_lib.data_mesh()
  data = jax.device_put({'images': images, 'labels': labels})
  rows = []

  def block(tree):
    jax.block_until_ready(tree)
    return tree

  def mlp(hidden, **kw):
    return models.create('mlp', num_classes=10, hidden=hidden, **kw)

  def state_for(model, tx, seed=0):
    return step_lib.init_state(model, tx, jax.random.PRNGKey(seed), (28, 28, 1))

  def host_copy(tree):
    return jax.tree.map(np.asarray, tree)

  def epoch_program(train_step, state, batch_data, teacher_variables, hparams,
                    num_members=0, num_steps=None):
    """Compiles an on-device epoch; returns (run(hparams=...) -> None, compile seconds)."""
    epoch = step_lib.make_epoch(train_step, mesh=mesh, batch_size=BATCH,
                                steps_per_epoch=num_steps or steps, num_members=num_members)
    start = time.perf_counter()
    compiled = epoch.lower(state, batch_data, teacher_variables, hparams,
                           jax.random.PRNGKey(0)).compile()
    compile_seconds = time.perf_counter() - start
    initial = host_copy(state)  # the epoch donates its state

    def run(hp=hparams):
      out = compiled(jax.device_put(initial), batch_data, teacher_variables, hp,
                     jax.random.PRNGKey(1))
      block(out)

    run()  # warm-up
    return run, compile_seconds

  def add(section, name, seconds, examples, compile_seconds=None, **extra):
    rows.append({'section': section, 'name': name, 'seconds': seconds,
                 'examples_per_second': examples / seconds,
                 'compile_seconds': compile_seconds, **extra})
    print(f'  measured ({section}) {name}: {seconds:.3f}s', file=sys.stderr)

  plain = {'temperature': jnp.float32(1.0), 'alpha': jnp.float32(0.0)}

  # (a) plain matmul GFLOP/s: the machine's practical peak.
  n = 1024 if quick else 2048
  a = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
  b = jax.device_put(rng.standard_normal((n, n), dtype=np.float32))
  dot = jax.jit(jnp.dot).lower(a, b).compile()
  block(dot(a, b))
  dot_reps = 5
  dot_seconds = _median_seconds(
      lambda: block([dot(a, b) for _ in range(dot_reps)]), repeats) / dot_reps
  dot_gflops = 2 * n**3 / dot_seconds / 1e9
  add('a', f'jnp.dot {n}x{n} float32', dot_seconds, n, gflops_per_second=dot_gflops)

  # (a) teacher train step, inside an on-device epoch.
  teacher = mlp((1200, 1200), input_dropout=0.2, hidden_dropout=0.5)
  teacher_tx = optax.adam(1e-3)
  teacher_step = step_lib.make_train_step(model=teacher, tx=teacher_tx, mean=MEAN, std=STD,
                                          max_shift=2, max_norm=4.0)
  teacher_state = state_for(teacher, teacher_tx)
  batch_shapes = {k: jax.ShapeDtypeStruct((BATCH, *v.shape[1:]), v.dtype)
                  for k, v in data.items()}
  step_flops = step_lib.train_step_flops(teacher_step, teacher_state, batch_shapes, None, plain)
  a_steps = min(steps, 100)
  run, compile_seconds = epoch_program(teacher_step, teacher_state, data, None, plain,
                                       num_steps=a_steps)
  seconds = _median_seconds(run, repeats)
  teacher_gflops = step_flops * a_steps / seconds / 1e9
  add('a', '1200-1200 teacher train step', seconds / a_steps, BATCH, compile_seconds,
      gflops_per_second=teacher_gflops, flops_per_step=step_flops)

  # The teacher's variables (untrained: speed does not depend on the values).
  teacher_variables = {'params': teacher_state.params}
  teacher_predict = step_lib.make_predict(teacher, mesh=mesh, mean=MEAN, std=STD,
                                          batch_size=500 if not quick else 256)
  cached_data = dict(data, teacher_logits=block(teacher_predict(teacher_variables,
                                                                data['images'])))
  distill = {'temperature': jnp.float32(20.0), 'alpha': jnp.float32(1.0)}

  # (b) 800-800 epoch: alone, teacher in the step, cached teacher logits.
  student = mlp((800, 800))
  student_tx = optax.adam(1e-3)
  variants = {
      'alone': (step_lib.make_train_step(model=student, tx=student_tx, mean=MEAN, std=STD),
                data, None, plain),
      'teacher in the step': (
          step_lib.make_train_step(model=student, tx=student_tx, mean=MEAN, std=STD,
                                   teacher_model=teacher),
          data, teacher_variables, distill),
      'cached teacher logits': (
          step_lib.make_train_step(model=student, tx=student_tx, mean=MEAN, std=STD),
          cached_data, None, distill),
  }
  b_seconds = {}
  for name, (train_step, batch_data, tv, hp) in variants.items():
    run, compile_seconds = epoch_program(train_step, state_for(student, student_tx),
                                         batch_data, tv, hp)
    b_seconds[name] = _median_seconds(run, repeats)
    add('b', f'800-800 epoch, {name}', b_seconds[name], steps * BATCH, compile_seconds)

  # (c) 30-30 students: one, a vectorised 3x3 grid, nine in a row.
  small = mlp((30, 30))
  small_tx = optax.adam(1e-3)
  small_step = step_lib.make_train_step(model=small, tx=small_tx, mean=MEAN, std=STD)
  run_one, compile_one = epoch_program(small_step, state_for(small, small_tx), cached_data,
                                       None, distill)
  one_seconds = _median_seconds(run_one, repeats)
  add('c', '30-30 epoch, one student', one_seconds, steps * BATCH, compile_one)
  grid = [(t, a_) for t in (1.0, 5.0, 10.0) for a_ in (0.1, 0.5, 0.9)]
  grid_hparams = {'temperature': jnp.array([t for t, _ in grid], jnp.float32),
                  'alpha': jnp.array([a_ for _, a_ in grid], jnp.float32)}
  grid_state = jax.jit(jax.vmap(lambda s: state_for(small, small_tx, s)))(jnp.arange(9))
  run_grid, compile_grid = epoch_program(small_step, grid_state, cached_data, None,
                                         grid_hparams, num_members=9)
  grid_seconds = _median_seconds(run_grid, repeats)
  add('c', '30-30 epoch, 3x3 grid vectorised', grid_seconds, 9 * steps * BATCH, compile_grid)
  # Nine sequential runs reuse one compiled program (the cheapest way to run them apart).
  singles = [{'temperature': jnp.float32(t), 'alpha': jnp.float32(a_)} for t, a_ in grid]
  seq_seconds = _median_seconds(lambda: [run_one(hp) for hp in singles], repeats)
  add('c', '30-30 epoch, 3x3 grid as nine runs', seq_seconds, 9 * steps * BATCH)

  # (d) the same 30-30 epoch fed from a host loop, one jitted step per batch.
  host_step = jax.jit(small_step, donate_argnums=0)
  host_data = {k: np.asarray(v) for k, v in cached_data.items()}
  initial = host_copy(state_for(small, small_tx))
  order_rng = np.random.default_rng(1)

  def host_epoch():
    state = jax.device_put(initial)
    order = order_rng.permutation(num_examples)[:steps * BATCH].reshape(steps, BATCH)
    for indices in order:
      batch = {k: v[indices] for k, v in host_data.items()}
      state, _ = host_step(state, batch, None, distill)
    block(state)

  start = time.perf_counter()
  host_epoch()  # compiles the step
  host_compile = time.perf_counter() - start
  host_seconds = _median_seconds(host_epoch, repeats)
  add('d', '30-30 epoch, host loop', host_seconds, steps * BATCH, host_compile)
  add('d', '30-30 epoch, on-device', one_seconds, steps * BATCH, compile_one)

  # (e) the 800-800 epoch streamed from TFDS (needs real MNIST prepared).
  from kdjax import config as config_lib
  from kdjax import data as data_lib
  from kdjax.train import feed as feed_lib
  stream_seconds = None
  if data_lib.is_prepared('mnist'):
    config = config_lib.default()
    config.input.pipeline = 'stream'
    config.batch_size = BATCH
    if quick:  # a 16,384-example shuffle buffer would outweigh 16 steps
      config.input.shuffle_buffer = 1024
    info = data_lib.stream.describe('mnist', data_dir=None, image_size=0)
    feed = feed_lib.StreamFeed(config, info, mesh)
    feed.steps_per_epoch = steps  # the same number of steps as (b)
    stream_step, _, _, _ = variants['alone']
    stream_state = state_for(student, student_tx)
    stream_compile = feed.compile(stream_step, num_members=0, state=stream_state,
                                  teacher_variables=None, hparams=plain, data_rng=None)
    stream_initial = host_copy(stream_state)
    epochs = iter(range(1, 1000))

    def stream_epoch():
      state, metrics, _ = feed.run_epoch(jax.device_put(stream_initial), None, plain, None,
                                         next(epochs), stop_requested=lambda: False)
      block(state)

    stream_epoch()  # warm-up: tf.data's first pass opens files and fills buffers
    stream_seconds = _median_seconds(stream_epoch, repeats)
    add('e', '800-800 epoch, streamed from TFDS (tf.data)', stream_seconds, steps * BATCH,
        stream_compile)
    add('e', '800-800 epoch, on-device', b_seconds['alone'], steps * BATCH)
  else:
    print('  (e) skipped: MNIST is not prepared (python -m kdjax.data import mnist)',
          file=sys.stderr)

  # (g) on CPU: a conv net's scanned epoch, XLA's convolution against kdjax's.
  g_seconds = {}
  if jax.default_backend() == 'cpu':
    from kdjax.models import layers  # pylint: disable=import-outside-toplevel
    conv_net = models.create('lightnn', num_classes=10)
    conv_tx = optax.sgd(0.01, momentum=0.9)
    conv_step = step_lib.make_train_step(model=conv_net, tx=conv_tx, mean=MEAN, std=STD)
    g_steps = min(steps, 2 if quick else 20)
    previous = os.environ.get(layers.CPU_CONV_ENV)
    for impl, label in (('xla', "XLA's convolution"), ('patches', "kdjax's convolution")):
      os.environ[layers.CPU_CONV_ENV] = impl  # read when the program is traced
      try:
        run, compile_seconds = epoch_program(conv_step, state_for(conv_net, conv_tx), data, None,
                                             plain, num_steps=g_steps)
      finally:
        if previous is None:
          os.environ.pop(layers.CPU_CONV_ENV, None)
        else:
          os.environ[layers.CPU_CONV_ENV] = previous
      g_seconds[impl] = _median_seconds(run, repeats)
      add('g', f'LightNN epoch ({g_steps} steps), {label}', g_seconds[impl], g_steps * BATCH,
          compile_seconds)

  commands = _whole_commands(quick) if data_lib.is_prepared('mnist') else []
  for r in commands:
    if r['cache'] == 'warm':
      what = 'distillation' if 'distillation' in r['command'] else 'grid'
      ratios_f = [('f', f'{what}, warm: seconds from launch to the first step',
                   r['to_first_step_seconds'], '<= 3'),
                  ('f', f'{what}, warm: whole process / training',
                   r['process_seconds'] / r['train_seconds'],
                   '<= 1.3' if what == 'distillation' else '<= 2')]
      r['ratios'] = ratios_f

  ratios = [
      ('a', 'teacher step GFLOP/s / jnp.dot GFLOP/s', teacher_gflops / dot_gflops, '>= 0.75'),
      ('b', 'cached-teacher epoch / student-alone epoch',
       b_seconds['cached teacher logits'] / b_seconds['alone'], '<= 1.15'),
      ('b', 'teacher-in-step epoch / student-alone epoch',
       b_seconds['teacher in the step'] / b_seconds['alone'], '(none)'),
      ('c', 'vectorised 3x3 grid / one student', grid_seconds / one_seconds, '<= 2'),
      ('c', 'nine sequential runs / vectorised grid', seq_seconds / grid_seconds, '>= 4'),
      ('d', 'host loop / on-device epoch', host_seconds / one_seconds, '>= 1.5'),
  ]
  if g_seconds:
    ratios.append(('g', "XLA's / kdjax's convolution, LightNN epoch on CPU",
                   g_seconds['xla'] / g_seconds['patches'], '>= 2'))
  if stream_seconds is not None:
    ratios.append(('e', 'streamed epoch / on-device epoch', stream_seconds / b_seconds['alone'],
                   '(none)'))
  for r in commands:
    ratios.extend(r.pop('ratios', []))

  def meets(value, target):
    if target.startswith('>='):
      return value >= float(target[2:])
    if target.startswith('<='):
      return value <= float(target[2:])
    return None

  peak = _peak_rss_mib()
  devices = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  print(f'\nkdjax benchmark: {devices}, batch {BATCH}, {steps} steps per epoch'
        f'{" (quick)" if quick else ""}, median of {repeats}\n')
  print('| | program | seconds | examples/s | GFLOP/s | compile s |')
  print('|---|---|---:|---:|---:|---:|')
  for r in rows:
    gflops = f'{r["gflops_per_second"]:.1f}' if 'gflops_per_second' in r else ''
    comp = f'{r["compile_seconds"]:.2f}' if r['compile_seconds'] is not None else ''
    print(f'| {r["section"]} | {r["name"]} | {r["seconds"]:.4f} | '
          f'{r["examples_per_second"]:,.0f} | {gflops} | {comp} |')
  if commands:
    print('\n| | whole command | cache | process s | to first step s | training s '
          '| whole / training |')
    print('|---|---|---|---:|---:|---:|---:|')
    for r in commands:
      print(f'| f | {r["command"]} | {r["cache"]} | {r["process_seconds"]:.2f} | '
            f'{r["to_first_step_seconds"]:.2f} | {r["train_seconds"]:.2f} | '
            f'{r["process_seconds"] / r["train_seconds"]:.2f} |')
  print('\n| | ratio | measured | target | met |')
  print('|---|---|---:|---|---|')
  for section, name, value, target in ratios:
    ok = meets(value, target)
    print(f'| {section} | {name} | {value:.2f} | {target} | '
          f'{"" if ok is None else ("yes" if ok else "NO")} |')
  print(f'\npeak resident memory: {peak:,.0f} MiB')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'devices': devices, 'quick': quick, 'repeats': repeats, 'rows': rows,
                 'whole_commands': commands,
                 'ratios': [{'section': s, 'name': n, 'value': v, 'target': t,
                             'met': meets(v, t)} for s, n, v, t in ratios],
                 'peak_rss_mib': peak}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
