r"""Speed of kdjax's training programs on this machine, measured in one run.

  python -m experiments.benchmark [--quick] [--json=PATH] [--repeats=3] [--sections=a,b,...]

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
  (h) only when named in --sections: ImageNet ResNet-18 and ResNet-50 train
      steps in float32 and bfloat16, and ResNet-50 → ResNet-18 distillation
      with the teacher in the step, each with its achieved FLOP/s beside a
      matrix product's in the same dtype (experiments/benchmark_resnet.py;
      224 px at batch 256 on an accelerator, a 64 px smoke test on the CPU).
  (i) only when named in --sections: an ensemble's 10 teachers (own seeds and data
      orders) as one vectorised epoch program vs 10 separate runs, for the
      1200-1200 and 256-256 teachers (experiments/benchmark_ensemble.py).
  (j) only when named in --sections: a folder dataset of 10,000 drawn-shape
      PNGs (`config.dataset='folder:DIR'`) trained on by two fresh
      processes, cold and warm cache, as (f) times them
      (experiments/benchmark_data.py).

`--sections` runs a subset (default a-g); (b)-(e) also run (a)'s teacher, and
(c) and (d) are measured together.

The ratios the table ends with are the ones kdjax's speed targets are
stated in: (a) ≥ 0.75 of the dot's GFLOP/s, (b) cached ≤ 1.15 × alone,
(c) grid ≤ 2 × one student and ≥ 4 × faster than nine in a row,
(d) on-device ≥ 1.5 × faster than the host loop, (g) kdjax's convolution
≥ 2 × faster than XLA's on CPU, (i) 10 separate runs ≥ 3 × the vectorised
ensemble, (f) warm: first step
≤ 3 s after launch, whole ≤ 1.3 × training for the distillation and ≤ 2 ×
for the grid.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

flags.DEFINE_bool('quick', False, 'small sizes: seconds, for a smoke test')
flags.DEFINE_integer('repeats', 3, 'timed calls per row (median reported)', lower_bound=1)
flags.DEFINE_string('json', '', 'also write the table to this JSON file')
SECTIONS = 'abcdefghij'
flags.DEFINE_list('sections', list('abcdefg'),
                  'sections to run, among a-j (h, the ImageNet ResNets, i, the ensemble, and '
                  'j, a folder dataset, only when named)')
flags.register_validator('sections', lambda chosen: bool(chosen) and set(chosen) <= set(SECTIONS),
                         message=f'choose among {",".join(SECTIONS)}')
FLAGS = flags.FLAGS


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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


def _command_ratios(commands: list[dict]) -> None:
  """(f) the warm runs' ratios, kept on each warm command's row under 'ratios'."""
  for r in commands:
    if r['cache'] == 'warm':
      what = 'distillation' if 'distillation' in r['command'] else 'grid'
      ratios_f = [('f', f'{what}, warm: seconds from launch to the first step',
                   r['to_first_step_seconds'], '<= 3'),
                  ('f', f'{what}, warm: whole process / training',
                   r['process_seconds'] / r['train_seconds'],
                   '<= 1.3' if what == 'distillation' else '<= 2')]
      r['ratios'] = ratios_f


def _ratios(gflops: dict, b_seconds: dict, small: dict) -> list[tuple]:
  """(section, ratio, measured, target) of sections (a)-(d)'s speed targets, for those
  measured."""
  ratios = []
  if gflops.get('teacher'):
    ratios.append(('a', 'teacher step GFLOP/s / jnp.dot GFLOP/s',
                   gflops['teacher'] / gflops['dot'], '>= 0.75'))
  if b_seconds:
    ratios += [('b', 'cached-teacher epoch / student-alone epoch',
                b_seconds['cached teacher logits'] / b_seconds['alone'], '<= 1.15'),
               ('b', 'teacher-in-step epoch / student-alone epoch',
                b_seconds['teacher in the step'] / b_seconds['alone'], '(none)')]
  if small:
    ratios += [('c', 'vectorised 3x3 grid / one student', small['grid'] / small['one'], '<= 2'),
               ('c', 'nine sequential runs / vectorised grid', small['nine'] / small['grid'],
                '>= 4'),
               ('d', 'host loop / on-device epoch', small['host'] / small['one'], '>= 1.5')]
  return ratios


def _meets(value, target):
  if target.startswith('>='):
    return value >= float(target[2:])
  if target.startswith('<='):
    return value <= float(target[2:])
  return None


def _print_tables(bench, devices: str, commands: list[dict], ratios: list[tuple],
                  peak: float) -> None:
  """The programs' table (`bench`'s rows), the whole commands' table and the ratios'
  table, to stdout."""
  print(f'\nkdjax benchmark: {devices}, batch {bench.batch_size}, {bench.steps} steps per epoch'
        f'{" (quick)" if bench.quick else ""}, median of {bench.repeats}\n')
  print('| | program | seconds | examples/s | GFLOP/s | compile s |')
  print('|---|---|---:|---:|---:|---:|')
  for r in bench.rows:
    gflops = f'{r["gflops_per_second"]:.1f}' if 'gflops_per_second' in r else ''
    comp = f'{r["compile_seconds"]:.2f}' if r['compile_seconds'] is not None else ''
    print(f'| {r["section"]} | {r["name"]} | {r["seconds"]:.4f} | '
          f'{r["examples_per_second"]:,.0f} | {gflops} | {comp} |')
  if commands:
    print('\n| | whole command | cache | process s | to first step s | training s '
          '| whole / training |')
    print('|---|---|---|---:|---:|---:|---:|')
    for r in commands:
      print(f'| {r.get("section", "f")} | {r["command"]} | {r["cache"]} | {r["process_seconds"]:.2f} | '
            f'{r["to_first_step_seconds"]:.2f} | {r["train_seconds"]:.2f} | '
            f'{r["process_seconds"] / r["train_seconds"]:.2f} |')
  print('\n| | ratio | measured | target | met |')
  print('|---|---|---:|---|---|')
  for section, name, value, target in ratios:
    ok = _meets(value, target)
    print(f'| {section} | {name} | {value:.2f} | {target} | '
          f'{"" if ok is None else ("yes" if ok else "NO")} |')
  print(f'\npeak resident memory: {peak:,.0f} MiB')


def _measure(sections: set, bench) -> tuple[list[dict], list[tuple]]:
  """Runs the chosen sections' programs into `bench`; (whole commands' rows, ratios)."""
  from experiments import benchmark_ensemble
  from experiments import benchmark_programs as programs
  from experiments import benchmark_resnet
  from kdjax import data as data_lib

  gflops, b_seconds, small, ratios = {}, {}, {}, []
  if sections & set('abcde'):  # (b)-(e) distil from (a)'s teacher
    gflops['dot'] = programs.measure_dot(bench)
    teacher, teacher_state, gflops['teacher'] = programs.measure_teacher_step(bench)
    teacher_variables, cached_data = programs.teacher_logits(bench, teacher, teacher_state)
  if sections & set('be'):
    b_seconds, student, student_tx, alone_step = programs.measure_student_epochs(
        bench, teacher, teacher_variables, cached_data)
  if sections & set('cd'):
    small = programs.measure_small_students(bench, cached_data)
  ratios += _ratios(gflops, b_seconds, small)
  if 'e' in sections:
    stream_seconds = programs.measure_stream(bench, alone_step, student, student_tx,
                                             b_seconds['alone'])
    if stream_seconds is not None:
      ratios.append(('e', 'streamed epoch / on-device epoch',
                     stream_seconds / b_seconds['alone'], '(none)'))
  if 'g' in sections:
    g_seconds = programs.measure_convolutions(bench)
    if g_seconds:
      ratios.append(('g', "XLA's / kdjax's convolution, LightNN epoch on CPU",
                     g_seconds['xla'] / g_seconds['patches'], '>= 2'))
  if 'h' in sections:
    ratios += benchmark_resnet.ratios(benchmark_resnet.measure_resnets(bench))
  if 'i' in sections:
    ratios += benchmark_ensemble.measure(bench)
  commands = []
  if 'f' in sections and data_lib.is_prepared('mnist'):
    commands = _whole_commands(bench.quick)
    _command_ratios(commands)
    for r in commands:
      ratios.extend(r.pop('ratios', []))
  if 'j' in sections:
    from experiments import benchmark_data
    folder_rows, folder_ratios = benchmark_data.measure_folder(bench.quick, _timed_command)
    commands, ratios = commands + folder_rows, ratios + folder_ratios
  return commands, ratios


def main(argv):
  del argv
  import jax

  from experiments import benchmark_programs as programs

  sections = set(FLAGS.sections)
  bench = programs.Bench(FLAGS.quick, FLAGS.repeats)
  commands, ratios = _measure(sections, bench)
  peak = _peak_rss_mib()
  devices = f'{jax.device_count()} x {jax.devices()[0].device_kind}'
  _print_tables(bench, devices, commands, ratios, peak)
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'devices': devices, 'quick': bench.quick, 'repeats': bench.repeats,
                 'sections': sorted(sections), 'rows': bench.rows, 'whole_commands': commands,
                 'ratios': [{'section': s, 'name': n, 'value': v, 'target': t,
                             'met': _meets(v, t)} for s, n, v, t in ratios],
                 'peak_rss_mib': peak}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
