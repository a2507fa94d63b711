"""The teacher of a distilled run: checked, loaded, and either cached or run in the step.

The teacher is another finished kdjax run (`config.teacher.workdir`). It is
checked before anything of the student's run is written (`check`), and
attached once the student's input is built (`attach`): its variables are a
frozen pytree outside the student's optimizer and checkpoint, and its logits
are either computed once for the whole (un-augmented) training set or
computed inside the train step on the student's augmented inputs.
"""

import dataclasses
import os

import ml_collections

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


def check(config: ml_collections.ConfigDict) -> None:
  """Refuses, in one line, a teacher this student cannot learn from.

  The teacher must be a finished run with its final checkpoint on disk that
  did not diverge, be a single run
  (a sweep's member directory, not the sweep itself), have the student's
  classes and input shape, and have trained on the student's dataset unless
  `config.teacher.allow_other_dataset` marks a deliberate transfer.
  """
  workdir = os.path.abspath(config.teacher.workdir)
  check_workdir(workdir)
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
  if config.method.name and student_shape is not None:
    _check_method(config, teacher_config, student_info.num_classes, tuple(student_shape))


def _check_method(config, teacher_config, num_classes: int, shape: tuple) -> None:
  """Traces the method's loss on both networks' outputs abstractly: a pair it cannot
  compare (an MLP for attention maps, unequal stage counts) is refused here."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  method = methods.get(config.method.name)
  images = jax.ShapeDtypeStruct((2, *shape), jnp.float32)

  def outputs(model_config):
    model = models.from_config(model_config, num_classes=num_classes)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(images.shape),
                                                  train=False))
    logits, features = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, return_features=True), variables, images)
    return {'logits': logits, 'features': features}

  student, teacher = outputs(config.model), outputs(teacher_config.model)
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


@dataclasses.dataclass
class Teacher:
  """A loaded teacher: its model, variables (None once cached), results."""
  workdir: str
  model: object
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
    """The teacher as recorded in the student's results.json."""
    return {'workdir': self.workdir, 'model': self.results['model'], 'dataset': self.dataset,
            'test_accuracy': self.results.get('test_accuracy'), 'cached': self.cached,
            'imported': self.results.get('imported'),
            'other_dataset': self.dataset != student_dataset}


def load(config, dataset) -> tuple:
  """The teacher's model, its variables as host arrays, and its results."""
  workdir = os.path.abspath(config.teacher.workdir)
  teacher_config, results = read_run(workdir)
  model = models.from_config(teacher_config.model, num_classes=dataset.num_classes)
  variables = _restore(workdir, results['final_checkpoint_epoch'])
  return model, variables, results, results.get('dataset', teacher_config.dataset)


# The last teacher restored in this process, by its checkpoint's path and the newest
# modification time of its files: the seeds and stages a launcher trains in turn from one
# teacher read it once.
_RESTORED: dict = {}


def _restore(workdir: str, epoch: int):
  path = os.path.join(workdir, 'checkpoints', str(epoch))
  try:
    stamps = [os.stat(path).st_mtime_ns] + [
        os.stat(os.path.join(root, name)).st_mtime_ns
        for root, _, names in os.walk(path) for name in names]
  except OSError:  # restore_variables says what is wrong
    return checkpoint_lib.restore_variables(workdir, epoch)
  key = (path, max(stamps), len(stamps))
  if key not in _RESTORED:
    _RESTORED.clear()
    _RESTORED[key] = checkpoint_lib.restore_variables(workdir, epoch)
  return _RESTORED[key]


def attach(config, dataset, feed, mesh) -> Teacher | None:
  """Loads the teacher and caches its logits in `feed` where that is allowed and asked for.

  'auto' caches when the student's inputs are not augmented, the feed holds
  the data on the devices, no method taps the teacher's features and none sees a
  second augmented view (MLKD);
  otherwise the teacher runs in the step.
  """
  if not config.teacher.workdir:
    return None
  model, variables, results, teacher_dataset = load(config, dataset)
  augmented = config.augment.max_shift > 0 or config.augment.flip
  cache = config.teacher.cache
  cached = (not augmented and feed.mode == 'device' and not methods.registry.needs_features(config)
            and not methods.registry.strong_view(config)) if cache == 'auto' else bool(cache)
  loaded = feed_lib.replicated(mesh, variables)
  if cached:
    predict = step_lib.make_predict(model, mesh=mesh, mean=dataset.mean, std=dataset.std,
                                    batch_size=config.eval_batch_size)
    feed.cache_teacher_logits(predict, loaded)
  return Teacher(workdir=os.path.abspath(config.teacher.workdir), model=model,
                 variables=None if cached else loaded,  # cached: the logits are all it needs
                 results=results, dataset=teacher_dataset, cached=cached,
                 loaded_variables=loaded)


def in_step_model(teacher: Teacher | None):
  """The teacher model the train step must run itself (None: cached or no teacher)."""
  return None if teacher is None or teacher.cached else teacher.model


def variables_of(teacher: Teacher | None):
  return None if teacher is None else teacher.variables
