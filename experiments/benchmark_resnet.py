"""Section (h) of `python -m experiments.benchmark`: ImageNet ResNets' train steps.

ResNet-18 and ResNet-50 with the ImageNet stem (torchvision's layouts, 1000
classes) train on synthetic uint8 images inside an on-device epoch (SGD with
momentum, random flips), in float32 and in bfloat16 compute (`model.dtype`;
parameters stay float32). The distillation row runs the ResNet-50 teacher in
eval mode inside each ResNet-18 student step, as `configs/imagenet_resnet.py`
with a `teacher.workdir` does. Beside them, a square matrix product in each
dtype: the device's practical peak, which each step's achieved FLOP/s (XLA's
own count of the step) is divided by.

On an accelerator the images are 224 × 224 at batch 256; on the CPU (and with
`--quick`) they shrink to 64 × 64 at batch 8 so the section stays a smoke test;
`--quick` also leaves ResNet-50 out (the distillation row's teacher is then a
ResNet-18).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax import models
from kdjax.train import step as step_lib

MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _shapes(bench) -> tuple[int, int, int]:
  """(image size, batch, steps) for this backend."""
  if bench.quick or jax.default_backend() == 'cpu':
    return 64, 8, 2
  return 224, 256, 10


def _matmul_tflops(bench, dtype) -> float:
  """A square matrix product's TFLOP/s in `dtype`: the practical peak."""
  n = 1024 if jax.default_backend() == 'cpu' else 8192
  a = jax.device_put(bench.rng.standard_normal((n, n), dtype=np.float32)).astype(dtype)
  b = jax.device_put(bench.rng.standard_normal((n, n), dtype=np.float32)).astype(dtype)
  dot = jax.jit(jnp.dot).lower(a, b).compile()
  jax.block_until_ready(dot(a, b))
  reps = 10
  seconds = bench.median_seconds(
      lambda: jax.block_until_ready([dot(a, b) for _ in range(reps)])) / reps
  tflops = 2 * n**3 / seconds / 1e12
  bench.add('h', f'jnp.dot {n}x{n} {jnp.dtype(dtype).name}', seconds, n,
            gflops_per_second=tflops * 1e3)
  return tflops


def _resnet(name: str, dtype: str):
  return models.create(name, num_classes=1000, stem='imagenet', dtype=dtype)


def _step_row(bench, data, *, name, student, teacher=None, teacher_variables=None,
              peak_tflops, size, batch, steps) -> float:
  """Times one epoch program of `student` (distilled from `teacher` when given); its
  images per second."""
  tx = optax.sgd(0.1, momentum=0.9)
  train_step = step_lib.make_train_step(model=student, tx=tx, mean=MEAN, std=STD, flip=True,
                                        teacher_model=teacher)
  hparams = bench.distill if teacher is not None else bench.plain
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), (size, size, 3))
  shapes = {k: jax.ShapeDtypeStruct((batch, *v.shape[1:]), v.dtype) for k, v in data.items()}
  flops = step_lib.train_step_flops(train_step, state, shapes, teacher_variables, hparams)
  run, compile_seconds = bench.epoch_program(train_step, state, data, teacher_variables,
                                             hparams, num_steps=steps, batch_size=batch)
  seconds = bench.median_seconds(run)
  achieved = flops * steps / seconds / 1e12 if flops else None
  extra = {'flops_per_step': flops}
  if achieved is not None:
    extra.update(gflops_per_second=achieved * 1e3, of_peak=achieved / peak_tflops)
  bench.add('h', name, seconds / steps, batch, compile_seconds, **extra)
  return {'images_per_second': batch * steps / seconds, 'of_peak': extra.get('of_peak')}


def measure_resnets(bench) -> dict:
  """(h): ResNet-18 and -50 train steps in float32 and bfloat16, and ResNet-50 → ResNet-18
  distillation with the teacher in the step; {'images_per_second', 'of_peak'} by (student, dtype,
  distilled)."""
  size, batch, steps = _shapes(bench)
  images = bench.rng.integers(0, 256, (batch * steps, size, size, 3), dtype=np.uint8)
  labels = bench.rng.integers(0, 1000, batch * steps).astype(np.int32)
  data = jax.device_put({'images': images, 'labels': labels})
  peak = {'float32': _matmul_tflops(bench, jnp.float32),
          'bfloat16': _matmul_tflops(bench, jnp.bfloat16)}
  throughput = {}
  common = dict(size=size, batch=batch, steps=steps)
  depths = (18,) if bench.quick else (18, 50)  # --quick: one network, three programs
  for dtype in ('float32', 'bfloat16'):
    for depth in depths:
      throughput[(f'ResNet-{depth}', dtype, False)] = _step_row(
          bench, data, name=f'ResNet-{depth} {size}px batch {batch} train step, {dtype}',
          student=_resnet(f'resnet{depth}', dtype), peak_tflops=peak[dtype], **common)
  teacher = _resnet(f'resnet{depths[-1]}', 'bfloat16')
  teacher_variables = jax.jit(
      lambda rng: teacher.init(rng, jnp.zeros((1, size, size, 3)), train=False))(
          jax.random.PRNGKey(1))
  throughput[('ResNet-18', 'bfloat16', True)] = _step_row(
      bench, data,
      name=f'ResNet-{depths[-1]} -> ResNet-18 {size}px batch {batch} distillation step, bfloat16',
      student=_resnet('resnet18', 'bfloat16'), teacher=teacher,
      teacher_variables=dict(teacher_variables), peak_tflops=peak['bfloat16'], **common)
  return throughput


def ratios(throughput: dict) -> list[tuple]:
  """(section, ratio, measured, target) rows of section (h), from `measure_resnets`."""
  speed = {k: v['images_per_second'] for k, v in throughput.items()}
  rows = [('h', f'{model} images/s, bfloat16 / float32',
           speed[(model, 'bfloat16', False)] / speed[(model, 'float32', False)], '(none)')
          for model in ('ResNet-18', 'ResNet-50') if (model, 'float32', False) in speed]
  rows.append(('h', 'ResNet-18 step, distilled / alone (bfloat16)',
               speed[('ResNet-18', 'bfloat16', False)] / speed[('ResNet-18', 'bfloat16', True)],
               '(none)'))
  for (model, dtype, distilled), row in throughput.items():
    if row['of_peak'] is not None:
      what = f'{model} step{" distilled" if distilled else ""}, {dtype}'
      rows.append(('h', f'{what}: achieved FLOP/s / {dtype} jnp.dot FLOP/s', row['of_peak'],
                   '(none)'))
  return rows
