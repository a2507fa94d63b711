"""XLA's CPU compile and run times of three train steps under sets of XLA flags: a table.

Each set of flags runs in a process of its own (XLA reads its flags once), with
the persistent compilation cache off, compiling a knowledge-distillation train
step (cross-entropy + T²·KL at T=4, SGD with momentum) of ResNet-8, ResNet-20 and
VGG-8 on CIFAR-shaped batches of 8, then timing 20 steps of ResNet-8 at batch 128.

    .venv/bin/python scripts/compile_times.py                  # the suite's flags vs XLA's defaults
    .venv/bin/python scripts/compile_times.py --flags='--xla_cpu_use_thunk_runtime=false'

The tests compile with `tests.XLA_FLAGS` (see tests/__init__.py): this script is
how those flags were chosen, and how a change to them is measured.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ('resnet8', 'resnet20', 'vgg8')


def _measure() -> dict:
  """In this process: lower and compile seconds per model, and ResNet-8's step seconds."""
  import jax
  import jax.numpy as jnp
  import optax
  jax.config.update('jax_enable_compilation_cache', False)
  from kdjax import models

  def program(name, batch):
    model = models.create(name, num_classes=10)
    images, labels = jnp.zeros((batch, 32, 32, 3)), jnp.zeros((batch,), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), images[:1], train=False)
    params = variables['params']
    stats = {k: v for k, v in variables.items() if k != 'params'}
    tx = optax.sgd(0.1, momentum=0.9)

    def loss(p, stats, x, y, teacher):
      logits, new = model.apply({'params': p, **stats}, x, train=True, mutable=['batch_stats'])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      t = 4.0
      kl = jnp.sum(jax.nn.softmax(teacher / t) * (jax.nn.log_softmax(teacher / t)
                                                   - jax.nn.log_softmax(logits / t)), -1)
      return ce + t * t * kl.mean(), new

    @jax.jit
    def step(p, stats, opt, x, y, teacher):
      (value, new), grads = jax.value_and_grad(loss, has_aux=True)(p, stats, x, y, teacher)
      updates, opt = tx.update(grads, opt, p)
      return optax.apply_updates(p, updates), new, opt, value

    args = (params, stats, tx.init(params), images, labels, jnp.zeros((batch, 10)))
    return step, args

  out = {}
  for name in MODELS:
    step, args = program(name, 8)
    start = time.perf_counter()
    lowered = step.lower(*args)
    middle = time.perf_counter()
    lowered.compile()
    out[name] = (middle - start, time.perf_counter() - middle)
  step, args = program('resnet8', 128)
  params, stats, opt, *batch = args
  params, stats, opt, value = step(params, stats, opt, *batch)  # compiles
  value.block_until_ready()
  start = time.perf_counter()
  for _ in range(20):
    params, stats, opt, value = step(params, stats, opt, *batch)
  value.block_until_ready()
  out['run'] = (time.perf_counter() - start) / 20
  return out


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--flags', action='append', default=[],
                      help='a set of XLA flags to time (repeatable); default: none and the '
                           "suite's")
  args = parser.parse_args(argv)
  if os.environ.get('_KDJAX_COMPILE_TIMES_CHILD'):
    print(json.dumps(_measure()))
    return
  sys.path.insert(0, ROOT)
  import tests  # pylint: disable=import-outside-toplevel
  sets = args.flags or ['', tests.XLA_FLAGS]
  env = dict(os.environ, _KDJAX_COMPILE_TIMES_CHILD='1',
             **{tests.CPU_CONV_ENV: os.environ.get(tests.CPU_CONV_ENV, tests.CPU_CONV)})
  header = ' | '.join(f'{m} lower / compile s' for m in MODELS)
  print(f'| XLA_FLAGS | {header} | ResNet-8 step, batch 128, s |')
  print('|---' * (len(MODELS) + 2) + '|')
  for flags in sets:
    done = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=ROOT, check=True,
                          capture_output=True, text=True, env=dict(env, XLA_FLAGS=flags))
    times = json.loads(done.stdout.strip().splitlines()[-1])
    cells = ' | '.join(f'{times[m][0]:.2f} / {times[m][1]:.2f}' for m in MODELS)
    print(f'| `{flags or "(none)"}` | {cells} | {times["run"]:.4f} |')


if __name__ == '__main__':
  main()
