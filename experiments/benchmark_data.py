"""Section (j) of experiments/benchmark.py: a folder dataset of one's own, cold and warm.

10,000 drawn-shape PNGs of 32×32 (`python -m kdjax.data.shapes`, 2,500 per
class; 400 with --quick) trained on by `python -m kdjax.main
--config.dataset=folder:DIR` twice, each a fresh process: with an empty cache
directory (cold: every image decoded and resized, mean/std computed, programs
compiled) and again with the cache the cold run left (warm: the arrays are
mapped, the programs read back). The target: the warm run's first training
step ≤ 3 s after launch.
"""

import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

from kdjax.data import shapes

PER_CLASS, QUICK_PER_CLASS = 2500, 100
# The MNIST student's recipe with a small MLP, one epoch: what is timed is the start.
_ARGS = ('--config=configs/mnist_student.py', '--config.model.hidden=(256,)',
         '--config.num_epochs=1', '--config.data.image_size=32')


def measure_folder(quick: bool, timed_command: Callable[[list, str, str], dict]
                   ) -> tuple[list[dict], list[tuple]]:
  """(whole-command rows, ratios) of section (j); `timed_command(args, workdir, cache)` runs
  `python -m kdjax.main` and returns its timings (experiments/benchmark.py's)."""
  rows = []
  with tempfile.TemporaryDirectory(prefix='kdjax-bench-folder-') as root:
    folder = os.path.join(root, 'shapes')
    count = shapes.write(folder, per_class=QUICK_PER_CLASS if quick else PER_CLASS, size=32)
    name = f'folder of {count:,} 32x32 PNGs, MLP 256, 1 epoch'
    args = [*_ARGS, f'--config.dataset=folder:{folder}']
    cache = os.path.join(root, 'cache')
    for state in ('cold', 'warm'):
      timing = timed_command(args, os.path.join(root, f'run-{state}'), cache)
      rows.append(dict(timing, command=name, cache=state, section='j'))
      print(f'  measured (j) {name}, {state} cache: {timing["process_seconds"]:.2f}s',
            file=sys.stderr)
  warm = rows[-1]
  return rows, [('j', 'folder dataset, warm: seconds from launch to the first step',
                 warm['to_first_step_seconds'], '<= 3'),
                ('j', 'of which: a process that only imports kdjax.main and the training loop',
                 _import_seconds(), '(none)')]


def _import_seconds() -> float:
  """Wall seconds of `python -c 'import kdjax.main, kdjax.train.loop'`: the floor of any start
  on this machine at its present load."""
  start = time.time()
  subprocess.run([sys.executable, '-c', 'import kdjax.main, kdjax.train.loop'], check=True)
  return time.time() - start
