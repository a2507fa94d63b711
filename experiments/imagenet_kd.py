r"""ImageNet distillation from a pretrained torchvision teacher, top-1 and top-5.

  python -m kdjax.weights convert --state_dict=resnet50-0676ba61.pth --out=r50.npz  # once, with torch
  python -m experiments.imagenet_kd --workdir=runs/imagenet_kd --teacher_state_dict=r50.npz
  python -m experiments.imagenet_kd --preset=r34_r18 --workdir=runs/imagenet_r34_r18 \
      --teacher_state_dict=resnet34-b627a593.pth
  python -m experiments.imagenet_kd --quick --workdir=/tmp/ikq --teacher_state_dict=random

Stages: `teacher` (the torchvision weights imported as a kdjax run, then
evaluated on ImageNet's validation split, which kdjax reports as test),
`student_alone` (the student on the labels), `student_kd` (the student
distilled from the teacher at every T of the preset, one run per T in turn,
the teacher running inside each train step on the student's augmented
crops). T is chosen on a validation split held out of the training images
(its last 10,000 in stored order); the test split gives the numbers reported.
Writes report.md, report.json and curves.png.

Presets (bf16 compute on accelerators, streamed input; --coordinator joins a
multi-process job as in kdjax.main, process 0 importing the teacher and
writing the reports):
  standard  ResNet-50 → ResNet-18, the torchvision recipe: SGD 0.1 × B/256
            (momentum 0.9, weight decay 1e-4, no label smoothing), batch 256,
            100 epochs with the rate /10 at 30, 60, 90 (mdistiller's ImageNet
            schedule), alpha 0.5, T ∈ {0.5, 1, 4, 10}.
  r34_r18   ResNet-34 → ResNet-18 with the same recipe: the pair of the
            distillation benchmarks (mdistiller: KD 70.66 %, DKD 71.70 % top-1;
            in the READMEs' tables KD 71.03 %, KD+DOT 71.72 %, KD+LS 71.42 %).
  seed001   ResNet-50 → ResNet-18 with seed 001's recipe: Adam 0.01, batch
            32, no weight decay, T ∈ {0.5, 10}.

--teacher_state_dict: a torchvision state_dict (.pth, needs torch; or .npz,
see `python -m kdjax.weights`), or `random` for freshly initialised weights
in torchvision's layout (a smoke test of the import path; the report says
so). --teacher_workdir: a teacher run imported earlier, used as it is.
--quick: every stage at smoke-test size (32 × 32 crops, 48 images, the
networks as named), the same code path.
"""

import os

import numpy as np
from absl import flags

from experiments import common
from kdjax import config as config_lib
from kdjax import evaluate, weights
from kdjax.errors import ConfigError

TEACHER_STATE_DICT = flags.DEFINE_string(
    'teacher_state_dict', '', "The teacher's torchvision weights (.pth or .npz), or 'random'.")
TEACHER_WORKDIR = flags.DEFINE_string(
    'teacher_workdir', '', 'A teacher already imported with python -m kdjax.weights.')

# The held-out validation split: the last 10,000 of ImageNet's 1,281,167
# training images (a quick run on mock data holds out a quarter).
IMAGENET_TRAIN = 1_281_167
VALIDATION_IMAGES = 10_000
QUICK_IMAGE_SIZE = 32

_STANDARD = dict(dataset='imagenet2012', recipe='sgd', epochs=100, batch_size=256,
                 learning_rate=0.1, boundaries=(30, 60, 90), weight_decay=1e-4,
                 alpha=0.5, temperatures=(0.5, 1.0, 4.0, 10.0), student='resnet18')
PRESETS = {
    'standard': dict(_STANDARD, teacher='resnet50',
                     reference={'resnet50': '76.13 / 92.86 (torchvision)',
                                'resnet18': '69.76 / 89.08 (torchvision)'}),
    'r34_r18': dict(_STANDARD, teacher='resnet34',
                    reference={'resnet34': '73.31 / 91.42 (torchvision)',
                               'resnet18': '69.76 / 89.08 (torchvision)',
                               'kd': '70.66 / 89.88 (mdistiller KD, T=1)',
                               # The later methods' papers compare with KD at 71.03 top-1
                               # (mdistiller's README table, which DOT and LS repeat).
                               'kd_table': '71.03 (mdistiller README, KD)',
                               'dkd': '71.70 / 90.41 (mdistiller DKD)',
                               'kd+dot': '71.72 (mdistiller README, KD+DOT)',
                               'kd+ls': '71.42 (Sun et al. 2024, KD with logit '
                                        'standardisation)'}),
    'seed001': dict(_STANDARD, recipe='adam', batch_size=32, learning_rate=0.01,
                    weight_decay=0.0, boundaries=(), temperatures=(0.5, 10.0),
                    teacher='resnet50',
                    reference={'resnet50': '76.13 / 92.86 (torchvision)',
                               'kd': 'seed 001: T=10 above T=0.5 above ResNet-18 alone '
                                     '(curves only, no table)'}),
}


def student_config(preset: dict, setup: common.Setup, *, teacher: str = '',
                   temperature: float = 1.0):
  """configs/imagenet_resnet.py with the preset's recipe for `preset['student']`."""
  from configs import imagenet_resnet
  c = imagenet_resnet.get_config()
  c.dataset = setup.dataset
  c.data_dir = setup.data_dir
  c.model = setup.model_config(preset['student'], c.model)
  c.batch_size = setup.batch_size
  c.eval_batch_size = min(c.eval_batch_size, 4 * setup.batch_size)
  c.num_epochs = setup.epochs
  c.optimizer.name = 'sgd' if preset['recipe'] == 'sgd' else 'adam'
  c.optimizer.learning_rate = preset['learning_rate'] * (
      setup.batch_size / 256 if preset['recipe'] == 'sgd' else 1.0)
  c.optimizer.weight_decay = preset['weight_decay']
  c.schedule.name = 'step' if preset['boundaries'] else 'constant'
  c.schedule.boundaries = tuple(preset['boundaries'])
  c.schedule.step_factor = 0.1
  c.schedule.warmup_epochs = 0
  c.eval_every = max(1, c.num_epochs // 10)
  c.checkpoint_every = 1  # an ImageNet epoch is long: lose at most one
  c.validation_fraction = setup.validation_fraction
  c.validation_seed = common.VALIDATION_SEED
  c.sweep.mode = 'loop'  # one ResNet at a time: the accelerator's memory is for the batch
  if teacher:
    c.teacher.workdir = teacher
    c.distill.temperature = float(temperature)
    c.distill.alpha = float(preset['alpha'])
  if setup.quick:
    c = common.shrunk(c)
    c.train_examples = 0  # streamed input reads whole splits; the mock split is small
    c.input.image_size = QUICK_IMAGE_SIZE
  return c


def import_teacher(stages: common.Stages, preset: dict) -> str:
  """The teacher's run directory: imported now (or before) from the flags' weights."""
  if TEACHER_WORKDIR.value:
    return os.path.abspath(TEACHER_WORKDIR.value)
  source = TEACHER_STATE_DICT.value
  if not source:
    raise ConfigError('imagenet_kd needs the teacher: --teacher_state_dict=FILE (.pth or .npz '
                      "of torchvision's weights, or 'random') or --teacher_workdir=DIR")
  path = stages.path('teacher')
  if os.path.exists(os.path.join(path, 'results.json')):
    return path  # imported by an earlier invocation
  if common.writes_files():  # one process imports; the others wait and read it
    if source == 'random':
      source = os.path.join(stages.workdir, f'{preset["teacher"]}_random.npz')
      os.makedirs(stages.workdir, exist_ok=True)
      _write_random_weights(preset['teacher'], source)
    image_size = QUICK_IMAGE_SIZE if stages.setup.quick else 224
    weights.import_torchvision(arch=preset['teacher'], state_dict=source, workdir=path,
                               dataset=stages.setup.dataset, image_size=image_size)
  common.sync('imagenet_kd: teacher imported')
  return path


def _write_random_weights(arch: str, path: str) -> None:
  """He-initialised convolutions, a small linear head, BatchNorm at identity, in
  torchvision's names and layouts (drawn in numpy: no network is run)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  model = weights.build_model(arch, 1000)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                             train=False))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel' and len(leaf.shape) == 4:  # HWIO, He over fan-out
      fan_out = leaf.shape[0] * leaf.shape[1] * leaf.shape[3]
      return rng.normal(0, np.sqrt(2 / fan_out), leaf.shape).astype(np.float32)
    if name == 'kernel':
      return rng.normal(0, 0.01, leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name in ('scale', 'var') else 0.0, np.float32)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  np.savez(path, **weights.variables_to_torchvision(variables))


def teacher_results(stages: common.Stages, path: str) -> dict:
  """The teacher evaluated on the test split (once; an import starts unevaluated)."""
  from kdjax import report
  results = report.read_json(os.path.join(path, 'results.json'))
  if results.get('test_accuracy') is None:
    print('== stage teacher: evaluating the imported weights ==', flush=True)
    evaluate.evaluate_run(path, data_dir=stages.setup.data_dir or None,
                          batch_size=_eval_batch(stages.setup))
    common.sync('imagenet_kd: teacher evaluated')  # process 0 has written its accuracy
    results = report.read_json(os.path.join(path, 'results.json'))
  return dict(results, workdir=path)


def _eval_batch(setup: common.Setup) -> int:
  return common.QUICK_BATCH if setup.quick else 250


def _top(rows: list[dict], field: str) -> str:
  if any(r.get(field) is None for r in rows):
    return ''
  return common.accuracy_text(rows, field)


def body(stages: common.Stages, preset: dict) -> str:
  setup = stages.setup
  if preset['teacher'] in setup.swaps:
    raise ConfigError(f"--swap_model: the teacher {preset['teacher']} is torchvision's "
                      'pretrained network, imported; only the student can be swapped')
  setup.batch_size = common.QUICK_BATCH if setup.quick else preset['batch_size']
  setup.validation_fraction = 0.25 if setup.quick else VALIDATION_IMAGES / IMAGENET_TRAIN
  teacher_path = import_teacher(stages, preset)
  teacher = teacher_results(stages, teacher_path)
  alone = common.members(stages.run('student_alone', student_config(preset, setup)))
  base = student_config(preset, setup, teacher=teacher_path,
                        temperature=preset['temperatures'][0])
  base.sweep.temperature = tuple(float(t) for t in preset['temperatures'])
  kd = common.members(stages.run('student_kd', base))
  stages.results['teacher'] = teacher
  by_t = common.group(kd, ('temperature',))
  chosen, selection, oracle = common.select(
      f'{preset["student"]}: T of the distilled row', by_t, ('temperature',))
  ref = preset['reference']
  random_teacher = 'random' in str(teacher.get('imported', {}).get('source', ''))
  teacher_label = f'teacher {preset["teacher"]}' + (
      ' (random weights: a smoke test)' if random_teacher else ' (torchvision weights)')
  table = [[teacher_label, _top([teacher], 'test_accuracy'), _top([teacher], 'test_top5_accuracy'),
            '', ref.get(preset['teacher'], '')],
           [f'student {preset["student"]} alone', _top(alone, 'test_accuracy'),
            _top(alone, 'test_top5_accuracy'), _top(alone, 'validation_accuracy'),
            ref.get(preset['student'], '')]]
  for (t,), rows in sorted(by_t.items()):
    mark = ' (chosen on validation)' if (t,) == chosen else ''
    table.append([f'student {preset["student"]} taught by {preset["teacher"]}, T={t:g}, '
                  f'alpha={preset["alpha"]:g}{mark}', _top(rows, 'test_accuracy'),
                  _top(rows, 'test_top5_accuracy'), _top(rows, 'validation_accuracy'),
                  ref.get('kd', '') if mark else ''])
  report_rows = [
      common.row(f'teacher {preset["teacher"]}', [teacher], stage='teacher'),
      common.row(f'student {preset["student"]} alone', alone, stage='student_alone'),
      *[common.row(f'student {preset["student"]} taught by {preset["teacher"]}, T={t:g}, '
                   f'alpha={preset["alpha"]:g}', rows, stage='student_kd')
        for (t,), rows in sorted(by_t.items())]]
  common.plot_curves(f'{stages.workdir}/curves.png',
                     {'student alone': alone, **{f'distilled T={t:g}': rows
                                                 for (t,), rows in sorted(by_t.items())}},
                     f'{preset["teacher"]} → {preset["student"]} on {setup.dataset}')
  notes = (common.oracle_text(by_t, oracle, f'T={oracle[0]:g}') + '\n'
           + ('Reference numbers beside ours are top-1 / top-5 on ImageNet validation as '
              'published.\n'))
  later = [f'{name.upper()} {ref[key]}' for key, name in (
      ('kd_table', 'kd'), ('dkd', 'dkd'), ('kd+dot', 'kd+dot'), ('kd+ls', 'kd+ls'))
      if key in ref]
  if later:
    notes += f'Published on this pair (top-1, or top-1 / top-5): {"; ".join(later)}.\n'
  return common.write_report(
      stages, title=f'ImageNet distillation, preset {preset["name"]}',
      command=common.command_line(),
      sections=[('Teacher, student alone, distilled',
                 ['model', 'top-1 (test)', 'top-5 (test)', 'top-1 (validation)', 'published'],
                 table)],
      data={'teacher': {k: teacher.get(k) for k in ('test_accuracy', 'test_top5_accuracy',
                                                      'imported')},
            'alone': [{k: r.get(k) for k in ('test_accuracy', 'test_top5_accuracy')}
                      for r in alone],
            'distilled': {f'{t:g}': [{k: r.get(k) for k in ('test_accuracy',
                                                            'test_top5_accuracy',
                                                            'validation_accuracy')}
                                     for r in rows] for (t,), rows in by_t.items()},
            'alpha': preset['alpha'], 'recipe': config_lib.to_json_dict(base)['optimizer']},
      rows=report_rows, selections=[selection], notes=notes)


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='standard')
