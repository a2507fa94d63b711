"""The loss and metrics of one train step of every objective and method, on a fixed batch.

`values()` builds each case's objective from a config (as a run does), its
own parts and state (as `init_state` does) and runs one train step, not
compiled, on a fixed batch with fixed small networks, returning the step's
metrics as floats. `tests/test_reference.py` holds them against
`tests/reference/losses.json`, written by `python -m tests.reference_losses`
before a change that must leave every loss value as it was.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax import config as config_lib
from kdjax import losses, methods, models, objectives
from kdjax.methods import trained
from kdjax.train import step as step_lib

REFERENCE = os.path.join(os.path.dirname(__file__), 'reference', 'losses.json')
SHAPE = (8, 8, 1)
CLASSES = 4
N = 8  # the training set's size: CRD's memory banks hold one row per example
TRAIN_LABELS = (np.arange(N) % CLASSES).astype(np.int32)
HPARAMS = {'temperature': 4.0, 'alpha': 0.7}


def _case(objective: str = 'logit_kd', teacher: bool = True, step: int = 0,
          hparams: dict | None = None, model: dict | None = None, **changes) -> dict:
  return {'objective': objective, 'teacher': teacher, 'step': step,
          'hparams': dict(HPARAMS, **(hparams or {})), 'model': model, 'changes': changes}


def cases() -> dict[str, dict]:
  """name -> what the case trains: the objective, config changes, the step, hparams."""
  out = {'ce': _case(teacher=False)}
  for kind in losses.SOFT_LOSS_KINDS:
    out[f'logit_kd/{kind}'] = _case(**{'distill.kind': kind})
  out['logit_kd/standardize'] = _case(**{'distill.standardize': True})
  out['logit_kd/swept_kind'] = _case(hparams={'kind': 1}, swept_kind=True)
  out['defensive/teacher'] = _case('defensive', teacher=False, train_temperature=20.0,
                                   hparams={'temperature': 20.0, 'alpha': 1.0})
  out['defensive/distilled'] = _case('defensive', train_temperature=20.0,
                                     hparams={'temperature': 20.0, 'alpha': 0.6})
  out['byot'] = _case('byot', teacher=False, model={
      'name': 'multi_exit', 'base': 'cifar_resnet', 'blocks': (1, 1, 1),
      'widths': (4, 4, 8, 8), 'exits': (1, 2)}, **{'byot.deepest_weight': 0.5})
  names = (*sorted(methods.METHODS), *sorted(trained.TRAINED), 'ctkd', 'mlkd')
  for name in names:
    changes = {'method.name': name, 'distill.alpha': 0.0, 'method.dkd_warmup_epochs': 0.0,
               'method.reviewkd_warmup_epochs': 0.0, 'method.crd_nce_k': 4}
    hparams = {'alpha': 0.0}
    if name == 'ctkd':
      changes['distill.alpha'], hparams = 0.7, {}
    if name in ('ab', 'ft', 'fsp'):
      out[f'method/{name}/init_stage'] = _case(hparams=hparams, **changes,
                                               **{'method.init_epochs': 1})
      out[f'method/{name}/after_init'] = _case(step=2, hparams=hparams, **changes,
                                               **{'method.init_epochs': 1})
      continue
    out[f'method/{name}'] = _case(step=1, hparams=hparams, **changes)
  out['method/crd+kd'] = _case(step=1, hparams={'alpha': 0.5}, **{
      'method.name': 'crd', 'distill.alpha': 0.5, 'method.weight': 0.4, 'method.crd_nce_k': 4})
  out['method/dkd/warming_up'] = _case(step=1, hparams={'alpha': 0.0}, **{
      'method.name': 'dkd', 'distill.alpha': 0.0, 'method.dkd_warmup_epochs': 2.0})
  return out


def _config(case: dict):
  c = config_lib.default()
  c.distill.objective = case['objective']
  c.num_epochs = 3
  changes = dict(case['changes'])
  changes.pop('swept_kind', None)
  if case['model']:
    c.model = config_lib.ml_collections.ConfigDict(case['model'])
  return config_lib.override(c, changes)


def _batch() -> dict:
  rng = np.random.default_rng(0)
  return {'images': rng.integers(0, 256, (N, *SHAPE)).astype(np.uint8),
          'labels': TRAIN_LABELS[::-1].copy(), 'index': np.arange(N, dtype=np.int32)[::-1].copy()}


def value(case: dict) -> dict[str, float]:
  """One uncompiled train step of `case`: its metrics (loss, accuracy, the objective's)."""
  config = _config(case)
  if case['model']:
    options = {k: v for k, v in case['model'].items() if k != 'name'}
    student = models.create(case['model']['name'], num_classes=CLASSES, **options)
  else:
    student = models.create('resnet8', num_classes=CLASSES)
  teacher = models.create('resnet8', num_classes=CLASSES) if case['teacher'] else None
  teacher_variables = (teacher.init(jax.random.PRNGKey(3), jnp.zeros((1, *SHAPE)), train=False)
                       if teacher else None)
  objective = objectives.from_config(config, steps_per_epoch=2, train_labels=TRAIN_LABELS,
                                     swept_kind=bool(case['changes'].get('swept_kind')))
  tx = optax.sgd(0.05)
  teacher_outputs = (step_lib.output_shapes(teacher, teacher_variables, SHAPE) if teacher
                     else None)
  state = step_lib.init_state(student, tx, jax.random.PRNGKey(0), SHAPE, objective,
                              teacher_outputs=teacher_outputs)
  state = state.replace(step=jnp.int32(case['step']))
  train_step = step_lib.make_train_step(model=student, tx=tx, mean=(0.5,), std=(0.25,),
                                        teacher_model=teacher, objective=objective, max_shift=1)
  hparams = {k: (jnp.int32(v) if k == 'kind' else jnp.float32(v))
             for k, v in case['hparams'].items()}
  _, metrics = jax.jit(train_step)(state, _batch(), teacher_variables, hparams)
  return {k: float(v) for k, v in metrics.items()}


def values() -> dict[str, dict[str, float]]:
  return {name: value(case) for name, case in cases().items()}


if __name__ == '__main__':
  computed = values()
  with open(REFERENCE, 'w') as f:
    json.dump(computed, f, indent=1, sort_keys=True)
  for name, metrics in computed.items():
    print(name, metrics)
