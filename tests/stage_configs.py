"""The resolved config of every stage of every launcher preset, without training.

`capture()` runs each launcher's body (and hinton_mnist's stage plan) with
`Stages.run` replaced by a recorder: the recorder keeps the config the stage
would train with and writes a stand-in results.json (every member's settings
from its config, fixed accuracies) so that later stages, which read earlier
ones, are reached too. A body that needs more of a finished run than the
stand-in gives (weights, logits, exits) stops there; the stages it reached
are kept, and where it stopped is recorded beside them.

`tests/test_stage_configs.py` holds the result against
`tests/reference/stage_configs.json`, written by `python -m tests.stage_configs`
before a change that must leave every stage's config as it was.
"""

import contextlib
import importlib
import json
import os
import sys
import tempfile
import time

from absl import flags

from experiments import common
from experiments import hinton_mnist
from experiments import imagenet_kd
from kdjax import config as config_lib
from kdjax import report
from kdjax.errors import ConfigError
from kdjax.train import sweep as sweep_lib
from kdjax.train import teacher as teacher_lib

LAUNCHERS = ('byot', 'cifar_kd', 'defensive_distillation', 'ensembles', 'heterogeneous_kd',
             'imagenet_kd', 'method_zoo', 'online', 'reversed_kd', 'self_kd', 'soft_loss_study',
             'takd')
REFERENCE = os.path.join(os.path.dirname(__file__), 'reference', 'stage_configs.json')


def _stand_in_member(config, directory: str) -> dict:
  """A finished run's results.json as far as reports read it, from its config alone."""
  distilled = bool(config.teacher.workdir)
  results = {
      'dataset': config.dataset, 'model': config.model.name, 'params': 1000,
      'flops_per_example': 1e6, 'epochs': config.num_epochs, 'train_seconds': 1.0,
      'test_accuracy': 0.5, 'test_errors': 1, 'validation_accuracy': 0.5,
      'test_accuracy_at_best_validation': 0.5, 'best_validation_accuracy': 0.5,
      'best_validation_epoch': 1,
      'per_class_errors': [0] * 10, 'seed': int(config.seed), 'data_seed': int(config.data_seed),
      'temperature': float(config.distill.temperature) if distilled else None,
      'alpha': config_lib.alpha(config) if distilled else None,
      'kind': config.distill.kind if distilled else None,
      'method': {'name': config.method.name} if config.method.name else None,
      'omit_classes': list(config.omit_classes),
      'teacher': ({'model': 'stand-in', 'workdir': config.teacher.workdir,
                   'dataset': config.dataset} if distilled else None),
      'history': [{'epoch': 1, 'test_accuracy': 0.5, 'validation_accuracy': 0.5}],
      'final_checkpoint_epoch': config.num_epochs,
      'config': config_lib.to_json_dict(config), 'workdir': directory,
  }
  os.makedirs(directory, exist_ok=True)
  report.write_json(os.path.join(directory, 'results.json'), results)
  return results


def _recorder(recorded: list):
  """A `Stages.run` that records `(stage, config)` and returns stand-in results."""

  def run(self, name, config):
    recorded.append((name, config_lib.to_json_dict(config)))
    members = sweep_lib.Members.of(config)
    directory = self.path(name)
    rows = []
    for m in range(members.count):
      results = _stand_in_member(members.config_of(m), members.directory(directory, m))
      if members.mode == 'single':
        break
      rows.append(sweep_lib.member_row(results, members.rows[m], members.directory(directory, m)))
    if rows:
      results = {'dataset': config.dataset, 'model': config.model.name, 'params': 1000,
                 'members': rows, 'config': config_lib.to_json_dict(config),
                 'train_seconds': 1.0, 'epochs': config.num_epochs}
    results['workdir'] = directory
    self.results[name] = results
    return results

  return run


def _memoised_check_method(check):
  """`teacher._check_method`, traced once per (method, models, classes, shape): method_zoo
  asks it of every pair, and the answer depends on nothing else."""
  answers = {}

  def checked(config, teacher_config, num_classes, shape):
    key = json.dumps([config.method.to_dict(), config.distill.to_dict(), config.model.to_dict(),
                      teacher_config.model.to_dict(), num_classes, list(shape)],
                     sort_keys=True, default=str)
    if key not in answers:
      try:
        check(config, teacher_config, num_classes, shape)
        answers[key] = None
      except ConfigError as e:
        answers[key] = e
    if answers[key] is not None:
      raise answers[key]

  return checked


def _launcher_stages(launcher: str, preset_name: str, workdir: str) -> dict:
  """{'stages': [[name, config], ...], 'stopped': why the body stopped early, or None}."""
  module = importlib.import_module(f'experiments.{launcher}')
  preset = module.PRESETS[preset_name]
  start = time.perf_counter()
  recorded = []
  stopped = None
  common.Stages.run = _recorder(recorded)
  setup, preset_now = common.make_setup(preset, dataset=None, epochs=0, seeds=0,
                                        train_examples=-1, quick=False, data_dir='')
  stages = common.Stages(workdir, setup)
  with open(os.devnull, 'w') as sink, contextlib.redirect_stdout(sink):
    try:
      module.body(stages, dict(preset_now, name=preset_name))
    except Exception as e:  # noqa: BLE001  (a stand-in result lacks what the body reads)
      stopped = f'{type(e).__name__} after {len(recorded)} stages'
  print(f'{launcher}/{preset_name}: {time.perf_counter() - start:.1f}s', file=sys.stderr)
  return {'stages': [list(s) for s in recorded], 'stopped': stopped}


def capture(keys=None) -> dict:
  """`{'launcher/preset': {'stages', 'stopped'}}` for every preset (or those in `keys`), and
  hinton_mnist's plans."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['stage_configs'])
  out = {}
  original = common.Stages.run, teacher_lib._check_method  # pylint: disable=protected-access
  teacher_lib._check_method = _memoised_check_method(original[1])
  with tempfile.TemporaryDirectory() as tmp:
    # imagenet_kd's teacher: a finished run directory given by flag, as a user would.
    teacher = os.path.join(tmp, 'imagenet_teacher')
    _stand_in_member(config_lib.default(), teacher)
    flags.FLAGS.teacher_workdir = teacher
    try:
      for launcher in LAUNCHERS:
        module = importlib.import_module(f'experiments.{launcher}')
        for name in module.PRESETS:
          if keys is not None and f'{launcher}/{name}' not in keys:
            continue
          out[f'{launcher}/{name}'] = _launcher_stages(
              launcher, name, os.path.join(tmp, launcher, name))
    finally:
      common.Stages.run, teacher_lib._check_method = original
      flags.FLAGS.teacher_workdir = imagenet_kd.TEACHER_WORKDIR.default
    # Paths under the temporary directory, the same on every capture.
    out = json.loads(json.dumps(out).replace(tmp, '<workdir>'))
  for quick in (False, True):
    plan = hinton_mnist._stages(quick, 1, 2)  # pylint: disable=protected-access
    out[f'hinton_mnist/{"quick" if quick else "full"}'] = {
        'stages': [[n, config_lib.to_json_dict(c)] for n, c in plan], 'stopped': None}
  return out


if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  os.makedirs(os.path.dirname(REFERENCE), exist_ok=True)
  captured = capture()
  with open(REFERENCE, 'w') as f:
    json.dump(captured, f, indent=1, sort_keys=True)
  for key, value in captured.items():
    print(key, len(value['stages']), value['stopped'] or '')
