"""The teacher of a distilled run: checked, loaded, and either cached or run in the step.

The teacher is another finished kdjax run (`config.teacher.workdir`), or an
ensemble of them: a sweep's directory (all its members) or a comma-separated
list of run directories (see `Ensemble`). It is checked before anything of the
student's run is written (`check`), and attached once the student's input is
built (`attach`): its variables are a frozen pytree outside the student's
optimizer and checkpoint, and its logits are either computed once for the
whole (un-augmented) training set or computed inside the train step on the
student's augmented inputs.
"""

import dataclasses
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax import methods, models, report
from kdjax.errors import ConfigError, WorkdirError
from kdjax.train import checkpoint as checkpoint_lib
from kdjax.train import feed as feed_lib
from kdjax.train import step as step_lib
from kdjax.train import workdir as workdir_lib


def check_workdir(workdir: str) -> None:
  """Raises WorkdirError unless `workdir` holds a finished kdjax run."""
  if os.path.isfile(workdir):
    raise WorkdirError(f'config.teacher.workdir={workdir} is a file, not a run directory')
  if not os.path.isdir(workdir):
    raise WorkdirError(f'config.teacher.workdir={workdir} does not exist; train the teacher first')
  if not os.path.exists(os.path.join(workdir, workdir_lib.CONFIG_FILE)):
    raise WorkdirError(f'config.teacher.workdir={workdir} holds no kdjax run '
                       f'({workdir_lib.CONFIG_FILE} missing)')
  if not os.path.exists(os.path.join(workdir, workdir_lib.RESULTS_FILE)):
    raise WorkdirError(f'config.teacher.workdir={workdir} holds an unfinished run; '
                       'finish the teacher first (rerun its command)')


def read_run(workdir: str) -> tuple[ml_collections.ConfigDict, dict]:
  try:
    results = report.read_json(os.path.join(workdir, workdir_lib.RESULTS_FILE))
    teacher_config = config_lib.from_json_dict(
        report.read_json(os.path.join(workdir, workdir_lib.CONFIG_FILE)))
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    raise WorkdirError(f'config.teacher.workdir={workdir} holds unreadable run files '
                       f'({type(e).__name__}); retrain the teacher') from None
  return teacher_config, results


def refuse_sweep(results: dict, workdir: str, flag: str) -> None:
  """ConfigError when `workdir` (given as `flag`) holds a sweep rather than one run."""
  if 'members' in results:
    raise ConfigError(f'{flag}={workdir} is a sweep; name one member, '
                      f'e.g. {os.path.join(workdir, "members", results["members"][0]["label"])}')


def resolve(workdir_field: str) -> tuple[tuple[str, ...], bool]:
  """The teachers' run directories named by `config.teacher.workdir`, and whether they
  form an ensemble.

  The field is one run directory (a single teacher), a sweep's directory (an
  ensemble of all its members, in the sweep's order) or a comma-separated list of
  run or sweep directories (an ensemble of all of them). Each directory named is
  checked to hold a finished run (`check_workdir`); a sweep's members are checked
  by `check`.
  """
  names = [name.strip() for name in str(workdir_field).split(',')]
  if not all(names):
    raise ConfigError(f'config.teacher.workdir={workdir_field!r} has an empty entry in its '
                      'comma-separated list')
  directories = []
  for name in names:
    workdir = os.path.abspath(name)
    check_workdir(workdir)
    _, results = read_run(workdir)
    if 'members' not in results:
      directories.append(workdir)
      continue
    for row in results['members']:
      member = os.path.join(workdir, 'members', row['label'])
      if not os.path.isdir(member):
        raise WorkdirError(f'config.teacher.workdir={workdir}: the sweep\'s member '
                           f'{row["label"]} ({member}) does not exist; rerun the sweep')
      directories.append(member)
  if len(set(directories)) != len(directories):
    raise ConfigError(f'config.teacher.workdir={workdir_field!r} names a teacher twice')
  return tuple(directories), len(names) > 1 or directories != [os.path.abspath(names[0])]


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses, in one line, a teacher (or an ensemble) this student cannot learn from.

  Each teacher must be a finished run with its final checkpoint on disk that
  did not diverge, have the student's classes and input shape, and have trained
  on the student's dataset unless `config.teacher.allow_other_dataset` marks a
  deliberate transfer. An ensemble's members must agree on their class count,
  `config.teacher.weights` must give one weight per member, no method may tap
  the teachers' features, and with `ensemble='probs'` the temperature may not
  be swept (the ensemble's targets are formed at the run's T).
  """
  directories, ensemble = resolve(config.teacher.workdir)
  if ensemble:
    _check_ensemble(config, directories)
  elif len(config.teacher.weights):
    raise ConfigError(f'config.teacher.weights={tuple(config.teacher.weights)} weighs the '
                      'members of an ensemble; config.teacher.workdir names one teacher')
  checked_models = set()
  for workdir in directories:
    _check_one(config, workdir, checked_models)


def _check_ensemble(config, directories: tuple[str, ...]) -> None:
  """The checks that concern an ensemble as a whole (see `check`)."""
  weights = tuple(config.teacher.weights)
  if weights and len(weights) != len(directories):
    raise ConfigError(f'config.teacher.weights has {len(weights)} weights for '
                      f'{len(directories)} teachers in config.teacher.workdir')
  classes = {}
  for workdir in directories:
    check_workdir(workdir)
    teacher_config, results = read_run(workdir)
    dataset = results.get('dataset', teacher_config.dataset)
    classes.setdefault(data_lib.catalog.get_info(dataset).num_classes, workdir)
  if len(classes) > 1:
    raise ConfigError('config.teacher.workdir mixes class counts: '
                      + ', '.join(f'{n} classes ({d})' for n, d in sorted(classes.items())))
  if methods.registry.needs_features(config):
    raise ConfigError(f'config.method.name={config.method.name!r} taps the teacher\'s features; '
                      'an ensemble of teachers gives logits only')
  if config.teacher.ensemble == 'probs' and len(config.sweep.temperature):
    raise ConfigError("config.sweep.temperature: an ensemble with teacher.ensemble='probs' "
                      'averages probabilities at the run\'s T; train one run per temperature '
                      "or use teacher.ensemble='logits'")


def _check_one(config, workdir: str, checked_models: set) -> None:
  """The checks of one teacher (see `check`); a method's pairing is traced once per
  architecture in `checked_models`."""
  teacher_config, results = read_run(workdir)
  refuse_sweep(results, workdir, 'config.teacher.workdir')
  if results.get('diverged'):
    raise ConfigError(f'config.teacher.workdir={workdir} is a run that diverged; '
                      'choose another teacher')
  teacher_dataset = results.get('dataset', teacher_config.dataset)
  teacher_info = data_lib.catalog.get_info(teacher_dataset)
  student_info = data_lib.catalog.get_info(config.dataset)
  if teacher_info.num_classes != student_info.num_classes:
    raise ConfigError(
        f'config.teacher.workdir={workdir}: the teacher has {teacher_info.num_classes} classes '
        f'({teacher_dataset}) but config.dataset={config.dataset!r} has '
        f'{student_info.num_classes}')
  student_shape = data_lib.catalog.image_shape(config)
  teacher_shape = results.get('image_shape')
  if teacher_shape is not None and student_shape is not None and (
      tuple(teacher_shape) != tuple(student_shape)):
    raise ConfigError(f'config.teacher.workdir={workdir}: the teacher\'s input shape '
                      f'{tuple(teacher_shape)} differs from the student\'s {tuple(student_shape)}')
  epoch = results.get('final_checkpoint_epoch')
  final = os.path.join(workdir, 'checkpoints', str(epoch))
  if epoch is None or not os.path.isdir(final):
    raise WorkdirError(f'config.teacher.workdir={workdir} has no checkpoint of its final '
                       f'epoch ({final} missing); retrain the teacher')
  if teacher_dataset != config.dataset and not config.teacher.allow_other_dataset:
    raise ConfigError(
        f'the teacher in {workdir} trained on {teacher_dataset}, the student on '
        f'{config.dataset}; set teacher.allow_other_dataset=True for a deliberate transfer')
  model_key = _model_key(teacher_config)
  if config.method.name and student_shape is not None and model_key not in checked_models:
    checked_models.add(model_key)
    _check_method(config, teacher_config, student_info.num_classes, tuple(student_shape))


def _model_key(teacher_config) -> str:
  """A teacher's architecture, as a string equal for equal model configs."""
  return json.dumps(teacher_config.model.to_dict(), sort_keys=True, default=str)


_OUTPUTS = {}  # (model config, classes, shape) -> its abstract outputs, traced once


def _abstract_outputs(model_config, num_classes: int, shape: tuple) -> dict:
  """{'logits', 'features'}: a network's outputs on two images of `shape`, as shapes.

  Traced once per architecture, classes and shape in a process: a launcher checks
  every pair of its stages, and the trace depends on nothing else."""
  key = (json.dumps(model_config.to_dict(), sort_keys=True, default=str), num_classes,
         tuple(shape))
  if key not in _OUTPUTS:
    model = models.from_config(model_config, num_classes=num_classes)
    images = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(images.shape),
                                                  train=False))
    logits, features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_features=True), variables, images)
    _OUTPUTS[key] = {'logits': logits, 'features': features}
  return dict(_OUTPUTS[key])


def _check_method(config, teacher_config, num_classes: int, shape: tuple) -> None:
  """Traces the method's loss on both networks' outputs abstractly: a pair it cannot
  compare (an MLP for attention maps, unequal stage counts) is refused here."""
  method = methods.get(config.method.name)
  student = _abstract_outputs(config.model, num_classes, shape)
  teacher = _abstract_outputs(teacher_config.model, num_classes, shape)
  if getattr(method, 'strong_view', False):  # the second view's logits: shaped as the first's
    student['strong_logits'], teacher['strong_logits'] = student['logits'], teacher['logits']
  try:
    jax.eval_shape(lambda s, t: method.between(s, t, jnp.zeros(2, jnp.int32),
                                               methods.registry.options(config), 0.0),
                   student, teacher)
  except Exception as e:  # pylint: disable=broad-except  # shapes the method cannot pair
    raise ConfigError(f'config.method.name={config.method.name!r} cannot pair student '
                      f'{config.model.name} with teacher {teacher_config.model.name}: '
                      f'{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}'
                      ) from None


def combine(member_logits, weights, kind: str, temperature: float):
  """The ensemble's logits from its members' logits `member_logits` [K, ..., C].

  'logits': the weighted mean logits, Σ_k w_k z_k.
  'probs' (Hinton's arithmetic mean of the softened probabilities):
      p̄ = Σ_k w_k softmax(z_k / T),   x = T log p̄ − mean_c(T log p̄),
  so that softmax(x / T) = p̄ exactly: every soft-target loss at the run's T
  (KL, soft cross-entropy, MSE of probabilities, cosine) sees the ensemble's
  mean probabilities, and the logit-matching loss ('mse_logits') matches
  zero-mean logits (for one teacher, its logits minus their mean, which the
  softmax does not see). At another temperature T', softmax(x / T') is p̄^(T/T')
  renormalised; the arg max is the ensemble's prediction at T.

  Args:
    member_logits: [K, ..., C].
    weights: K non-negative numbers summing to 1.
    kind: 'probs' or 'logits'.
    temperature: T of 'probs' (> 0).
  """
  z = jnp.asarray(member_logits, jnp.float32)
  w = jnp.asarray(weights, jnp.float32).reshape((-1,) + (1,) * (z.ndim - 1))
  if kind == 'logits':
    return jnp.sum(w * z, axis=0)
  log_probs = jax.nn.log_softmax(z / temperature, axis=-1)
  x = temperature * jax.scipy.special.logsumexp(log_probs, axis=0, b=w)
  return x - jnp.mean(x, axis=-1, keepdims=True)


@dataclasses.dataclass(frozen=True, eq=False)
class Ensemble:
  """Several teachers as one network: `apply(variables, images)` is the ensemble's logits.

  `variables` holds one entry per architecture (`groups[g]`: the members of
  architecture `models[g]`, in the ensemble's order), that architecture's members'
  variables stacked on a leading axis, so each architecture runs as one vmapped
  pass. What the train step, the objective, logit-reading methods (DKD, MLKD,
  ...) and the evaluators see as "the teacher's logits" is `combine`'s output at
  `temperature` (the run's `distill.temperature`): with 'probs', centred logits
  whose softmax at T is the members' (weighted) mean probabilities at T; with
  'logits', the weighted mean logits. It gives logits only (no features), in
  eval mode.
  """
  models: tuple
  groups: tuple[tuple[int, ...], ...]
  weights: tuple[float, ...]
  kind: str
  temperature: float

  @property
  def count(self) -> int:
    return len(self.weights)

  def member_logits(self, variables, images):
    """[K, B, C]: each member's logits on `images`, in the ensemble's order."""
    parts = [jax.vmap(lambda v, model=model: model.apply(v, images, train=False))(stacked)
             .astype(jnp.float32) for model, stacked in zip(self.models, variables)]
    order = np.argsort([m for group in self.groups for m in group])
    return jnp.take(jnp.concatenate(parts, axis=0), jnp.asarray(order), axis=0)

  def apply(self, variables, images, train: bool = False, return_features: bool = False,
            **unused):
    """The ensemble's logits (see `combine`); the members always run in eval mode."""
    del train, unused
    if return_features:
      raise ConfigError('an ensemble of teachers gives logits only, not features')
    return combine(self.member_logits(variables, images), self.weights, self.kind,
                   self.temperature)


@dataclasses.dataclass
class Teacher:
  """A loaded teacher: its model, variables (None once cached), results."""
  workdir: str
  model: object  # a flax module, or an `Ensemble`
  variables: object  # what the train step gets: None once the logits are cached
  results: dict
  dataset: str
  cached: bool
  # The teacher's variables even when cached, for evaluators (kdjax.evaluators).
  loaded_variables: object = None

  def note(self) -> str:
    """The teacher's part of the run's first progress line."""
    accuracy = self.results.get('test_accuracy')
    known = 'not evaluated' if accuracy is None else f'{100 * accuracy:.2f}%'
    if self.results.get('imported'):
      known = f'imported from {self.results["imported"]["from"]}, {known}'
    return (f'; teacher {self.results["model"]} ({known}, '
            f'{"cached logits" if self.cached else "run in the step"})')

  def summary(self, student_dataset: str) -> dict:
    """The teacher as recorded in the student's results.json; an ensemble's
    `test_accuracy` is the ensemble's (at T = 1), with its `members`."""
    out = {'workdir': self.workdir, 'model': self.results['model'], 'dataset': self.dataset,
           'test_accuracy': self.results.get('test_accuracy'), 'cached': self.cached,
           'imported': self.results.get('imported'),
           'other_dataset': self.dataset != student_dataset}
    out.update({k: self.results[k] for k in ENSEMBLE_FIELDS if k in self.results})
    return out


# What an ensemble adds to the teacher's section of results.json.
ENSEMBLE_FIELDS = ('ensemble', 'weights', 'validation_accuracy', 'members')


def load(workdir: str, dataset) -> tuple:
  """The teacher's model, its variables as host arrays, and its results."""
  teacher_config, results = read_run(workdir)
  model = models.from_config(teacher_config.model, num_classes=dataset.num_classes)
  (variables,) = _restore_all([(workdir, results['final_checkpoint_epoch'])])
  return model, variables, results, results.get('dataset', teacher_config.dataset)


def load_ensemble(config, dataset, directories: tuple[str, ...]) -> tuple:
  """The `Ensemble` of the runs in `directories`, its variables (one stacked pytree per
  architecture, host arrays), its results so far and its dataset (the first member's)."""
  runs = [(workdir, *read_run(workdir)) for workdir in directories]
  keys = {}
  for m, (_, teacher_config, _) in enumerate(runs):
    keys.setdefault(_model_key(teacher_config), []).append(m)
  groups = tuple(tuple(members) for members in keys.values())
  restored = _restore_all([(w, r['final_checkpoint_epoch']) for w, _, r in runs])
  variables = tuple(jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]),
                                 *[restored[m] for m in group]) for group in groups)
  weights = np.asarray(tuple(config.teacher.weights) or (1.0,) * len(runs), np.float64)
  weights = tuple(float(w) for w in weights / weights.sum())
  ensemble = Ensemble(
      models=tuple(models.from_config(runs[g[0]][1].model, num_classes=dataset.num_classes)
                   for g in groups),
      groups=groups, weights=weights, kind=config.teacher.ensemble,
      temperature=float(config.distill.temperature))
  names = sorted({r['model'] for _, _, r in runs})
  results = {
      'model': f'ensemble of {len(runs)} ({", ".join(names)})', 'ensemble': ensemble.kind,
      'weights': list(weights),
      'members': [{'workdir': w, 'model': r['model'],
                   'checkpoint_sha256': checkpoint_sha256(w, r['final_checkpoint_epoch']),
                   'test_accuracy': r.get('test_accuracy')} for w, _, r in runs]}
  dataset_name = runs[0][2].get('dataset', runs[0][1].dataset)
  return ensemble, variables, results, dataset_name


def checkpoint_sha256(workdir: str, epoch: int) -> str:
  """SHA-256 of a run's checkpoint of `epoch`: over its files in sorted order, each as
  its path relative to the checkpoint's directory, a NUL byte, then its bytes."""
  root = os.path.join(workdir, 'checkpoints', str(epoch))
  paths = sorted(os.path.relpath(os.path.join(d, name), root)
                 for d, _, names in os.walk(root) for name in names)
  digest = hashlib.sha256()
  for path in paths:
    digest.update(path.encode() + b'\0')
    with open(os.path.join(root, path), 'rb') as f:
      for block in iter(lambda f=f: f.read(1 << 20), b''):
        digest.update(block)
  return digest.hexdigest()


# The last teachers restored in this process, by their checkpoints' paths and the newest
# modification time of their files: the seeds and stages a launcher trains in turn from
# one teacher (or one ensemble) read them once.
_RESTORED: dict = {}


def _restore_all(runs: list[tuple[str, int]]) -> list:
  """The variables of each (workdir, epoch) in `runs`, as host arrays."""
  keys = []
  for workdir, epoch in runs:
    path = os.path.join(workdir, 'checkpoints', str(epoch))
    try:
      stamps = [os.stat(path).st_mtime_ns] + [
          os.stat(os.path.join(root, name)).st_mtime_ns
          for root, _, names in os.walk(path) for name in names]
    except OSError:  # restore_variables says what is wrong
      return [checkpoint_lib.restore_variables(w, e) for w, e in runs]
    keys.append((path, max(stamps), len(stamps)))
  key = tuple(keys)
  if key not in _RESTORED:
    _RESTORED.clear()
    _RESTORED[key] = [checkpoint_lib.restore_variables(w, e) for w, e in runs]
  return _RESTORED[key]


def attach(config, dataset, feed, mesh) -> Teacher | None:
  """Loads the teacher (or ensemble) and caches its logits in `feed` where that is allowed
  and asked for.

  'auto' caches when the student's inputs are not augmented and the run is not
  consistent (function matching, `distill.consistent`), the feed holds the data on
  the devices, no method taps the teacher's features and none sees a second augmented
  view (MLKD); otherwise the teacher runs in the step. An ensemble is cached as one output
  (its combined logits, `Ensemble`), and its accuracy on the evaluation splits
  (members combined at T = 1) goes into its results.
  """
  if not config.teacher.workdir:
    return None
  directories, ensemble = resolve(config.teacher.workdir)
  if ensemble:
    model, variables, results, teacher_dataset = load_ensemble(config, dataset, directories)
  else:
    model, variables, results, teacher_dataset = load(directories[0], dataset)
  # Function matching (distill.consistent): the teacher sees the step's own images.
  augmented = (config.augment.max_shift > 0 or config.augment.flip
               or config.distill.consistent)
  cache = config.teacher.cache
  cached = (not augmented and feed.mode == 'device' and not methods.registry.needs_features(config)
            and not methods.registry.strong_view(config)) if cache == 'auto' else bool(cache)
  loaded = feed_lib.replicated(mesh, variables)
  predict = lambda m: step_lib.make_predict(  # noqa: E731
      m, mesh=mesh, mean=dataset.mean, std=dataset.std, batch_size=config.eval_batch_size)
  if cached:
    feed.cache_teacher_logits(predict(model), loaded)
  if ensemble:
    logits = feed.eval_logits(predict(dataclasses.replace(model, temperature=1.0)), loaded, 0)
    accuracy = {f'{split}_accuracy': float(np.mean(v[0].argmax(-1) == feed.labels[split]))
                for split, v in logits.items()}
    results = dict(results, **accuracy)
  return Teacher(workdir=config.teacher.workdir if ensemble else directories[0], model=model,
                 variables=None if cached else loaded,  # cached: the logits are all it needs
                 results=results, dataset=teacher_dataset, cached=cached,
                 loaded_variables=loaded)


def in_step_model(teacher: Teacher | None):
  """The teacher model the train step must run itself (None: cached or no teacher)."""
  return None if teacher is None or teacher.cached else teacher.model


def variables_of(teacher: Teacher | None):
  return None if teacher is None else teacher.variables
