"""One run: a teacher, a student alone, or a distilled student, end to end.

config → dataset on device → student (and teacher logits, cached or inline)
→ loss → compiled epochs → eval → checkpoints → results.json.
"""

import os
import shutil
import signal
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers

from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax import losses, models, report
from kdjax.errors import ConfigError, NonFiniteLossError, WorkdirError
from kdjax.train import checkpoint as checkpoint_lib
from kdjax.train import feed as feed_lib
from kdjax.train import optim, step as step_lib

CONFIG_FILE = 'config.json'
RESULTS_FILE = 'results.json'


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def _prepare_workdir(workdir: str, config_dict: dict, overwrite: bool) -> dict | None:
  """Checks the workdir; returns the finished results if the run is done."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f'workdir {workdir} exists and is not a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} cannot be created: {e.strerror}') from None
  try:  # os.access says yes to root even on read-only mounts: really write
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write-probe-'):
      pass
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} is not writable: {e.strerror}') from None
  config_path = os.path.join(workdir, CONFIG_FILE)
  results_path = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(config_path):
    # Fields added to kdjax since that run was saved take their defaults.
    saved = config_lib.to_json_dict(config_lib.from_json_dict(report.read_json(config_path)))
    changed = config_lib.differing_fields(saved, config_dict)
    if changed and not overwrite:
      raise WorkdirError(
          f'workdir {workdir} holds a run with a different config '
          f'({", ".join(changed[:6])}{", ..." if len(changed) > 6 else ""}); '
          'use another --workdir, or pass --config.overwrite=True to replace that run')
    if changed:
      for name in ('checkpoints', RESULTS_FILE):
        path = os.path.join(workdir, name)
        if os.path.isdir(path):
          shutil.rmtree(path)
        elif os.path.exists(path):
          os.remove(path)
    elif os.path.exists(results_path):
      return report.read_json(results_path)
  report.write_json(config_path, config_dict)
  return None


def _filter_classes(split: data_lib.Split, config) -> data_lib.Split:
  """The training examples the config asks for: class filters, then the subset."""
  keep = np.ones(len(split.labels), bool)
  if len(config.omit_classes):
    keep &= ~np.isin(split.labels, list(config.omit_classes))
  if len(config.keep_classes):
    keep &= np.isin(split.labels, list(config.keep_classes))
  indices = np.flatnonzero(keep)
  if config.train_examples:
    if config.train_examples > len(indices):
      raise ConfigError(f'config.train_examples={config.train_examples} exceeds the '
                        f'{len(indices)} training examples available')
    chosen = np.random.default_rng(config.data_seed).permutation(len(indices))
    indices = np.sort(indices[chosen[:config.train_examples]])
  return data_lib.Split(images=split.images[indices], labels=split.labels[indices])


def _model_options(model_config: ml_collections.ConfigDict) -> dict:
  options = model_config.to_dict()
  options.pop('name')
  return options


def check_teacher_workdir(workdir: str) -> None:
  """Raises WorkdirError unless `workdir` holds a finished kdjax run."""
  if not os.path.isdir(workdir):
    raise WorkdirError(f'config.teacher.workdir={workdir} does not exist; train the teacher first')
  if not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
    raise WorkdirError(f'config.teacher.workdir={workdir} holds no kdjax run '
                       f'({CONFIG_FILE} missing)')
  if not os.path.exists(os.path.join(workdir, RESULTS_FILE)):
    raise WorkdirError(f'config.teacher.workdir={workdir} holds an unfinished run; '
                       'finish the teacher first (rerun its command)')


def load_teacher(config, dataset: data_lib.Dataset):
  """The finished teacher named by `config.teacher.workdir`.

  Returns:
    (teacher_model, teacher_variables as host arrays, teacher results dict).
  """
  workdir = os.path.abspath(config.teacher.workdir)
  results_path = os.path.join(workdir, RESULTS_FILE)
  config_path = os.path.join(workdir, CONFIG_FILE)
  check_teacher_workdir(workdir)
  teacher_results = report.read_json(results_path)
  teacher_config = config_lib.from_json_dict(report.read_json(config_path))
  if teacher_config.dataset != config.dataset:
    teacher_info = data_lib.DATASETS[teacher_config.dataset]
    student_info = data_lib.DATASETS[config.dataset]
    if teacher_info.num_classes != student_info.num_classes:
      raise ConfigError(
          f'teacher has {teacher_info.num_classes} classes ({teacher_config.dataset}) but '
          f'config.dataset={config.dataset!r} has {student_info.num_classes}')
  if tuple(teacher_results.get('image_shape', dataset.image_shape)) != tuple(dataset.image_shape):
    raise ConfigError(f'teacher input shape {tuple(teacher_results["image_shape"])} differs from '
                      f'the student\'s {tuple(dataset.image_shape)}')
  teacher_model = models.create(teacher_config.model.name, num_classes=dataset.num_classes,
                                **_model_options(teacher_config.model))
  tx = optim.optimizer(teacher_config, teacher_results.get('steps_per_epoch', 1))
  abstract = jax.eval_shape(
      lambda: step_lib.init_state(teacher_model, tx, jax.random.PRNGKey(0), dataset.image_shape))
  variables = checkpoint_lib.restore_variables(
      workdir, teacher_results['final_checkpoint_epoch'], abstract)
  return teacher_model, variables, teacher_results


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


def _member_slice(tree, index: int | None):
  return tree if index is None else jax.tree.map(lambda x: x[index], tree)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one model, or a vectorised sweep of students, as `config` says.

  Everything goes into `workdir`: config.json, orbax checkpoints, TensorBoard
  summaries, results.json, logits.npz and curves.png. A sweep
  (`config.sweep`) trains all its members in one compiled program and gives
  each member a complete run directory of its own under `workdir/members/`
  (usable as a teacher); the sweep's results.json lists the members.
  Re-running with the same workdir resumes from the latest checkpoint; a
  finished run is returned as it is.

  Returns:
    The results dict also written to `<workdir>/results.json`.

  Raises:
    KDError: for any mistake in the config, the data or the workdir.
  """
  config_lib.validate(config)
  workdir = os.path.abspath(workdir)
  if config.teacher.workdir:
    check_teacher_workdir(os.path.abspath(config.teacher.workdir))
  config_dict = config_lib.to_json_dict(config)
  finished = _prepare_workdir(workdir, config_dict, config.overwrite)
  if finished is not None:
    _say(f'{workdir} holds a finished run with this config: nothing to do')
    return finished
  members = config_lib.sweep_members(config)
  if members and _sweep_mode(config) == 'loop':
    return _train_members_in_turn(config, workdir, members, config_dict)
  num_members = len(members)
  # Plain runs keep unstacked state; `index` picks a member out of a sweep.
  indices = list(range(num_members)) if members else [None]

  mesh = step_lib.data_mesh()
  if config_lib.input_pipeline(config) == 'device':
    dataset = data_lib.load(config.dataset, data_dir=config.data_dir or None,
                            validation_fraction=config.validation_fraction,
                            validation_seed=config.validation_seed)
    feed = feed_lib.DeviceFeed(config, dataset, _filter_classes(dataset.train, config), mesh)
  else:
    dataset = data_lib.stream.describe(config.dataset, data_dir=config.data_dir or None,
                                       image_size=config.input.image_size,
                                       validation_fraction=config.validation_fraction)
    feed = feed_lib.StreamFeed(config, dataset, mesh)
  num_devices = jax.device_count()
  steps_per_epoch = feed.steps_per_epoch

  model = models.create(config.model.name, num_classes=dataset.num_classes,
                        **_model_options(config.model))
  tx = optim.optimizer(config, steps_per_epoch)

  def init(seed):
    return step_lib.init_state(model, tx, jax.random.PRNGKey(seed), dataset.image_shape)

  if members:
    state = step_lib.init_fast(jax.vmap(init), jnp.array([m['seed'] for m in members]))
    hparams = {'temperature': np.array([m['temperature'] for m in members], np.float32),
               'alpha': np.array([m['alpha'] for m in members], np.float32)}
    if len(config.sweep.learning_rate):
      # The optimizer is built for config.optimizer.learning_rate; each member
      # scales its updates to its own rate (exact: updates are linear in it).
      hparams['lr_scale'] = np.array(
          [m['learning_rate'] / config.optimizer.learning_rate for m in members], np.float32)
    if len(config.sweep.kind):
      hparams['kind'] = np.array([losses.SOFT_LOSS_KINDS.index(m['kind']) for m in members],
                                 np.int32)
  else:
    state = step_lib.init_fast(init, jnp.int32(config.seed))
    hparams = {'temperature': np.float32(config.distill.temperature),
               'alpha': np.float32(config_lib.alpha(config))}
  num_params = models.count_params(_member_slice(state.params, 0 if members else None))

  teacher_model = teacher_variables = teacher_results = None
  cache_teacher = False
  if config.teacher.workdir:
    teacher_model, teacher_variables, teacher_results = load_teacher(config, dataset)
    augmented = config.augment.max_shift > 0 or config.augment.flip
    cache = config.teacher.cache
    cache_teacher = (not augmented and feed.mode == 'device') if cache == 'auto' else bool(cache)
  state = feed_lib.replicated(mesh, state)
  hparams = feed_lib.replicated(mesh, hparams)
  if teacher_variables is not None:
    teacher_variables = feed_lib.replicated(mesh, teacher_variables)

  predict = step_lib.make_predict(model, mesh=mesh, mean=dataset.mean, std=dataset.std,
                                  batch_size=config.eval_batch_size, num_members=num_members)
  if cache_teacher:
    feed.cache_teacher_logits(
        step_lib.make_predict(teacher_model, mesh=mesh, mean=dataset.mean, std=dataset.std,
                              batch_size=config.eval_batch_size),
        teacher_variables)
    teacher_variables = None  # the cached logits are all the step needs

  train_step = step_lib.make_train_step(
      model=model, tx=tx, mean=dataset.mean, std=dataset.std,
      max_shift=config.augment.max_shift, flip=config.augment.flip,
      teacher_model=None if cache_teacher else teacher_model,
      soft_kind=None if len(config.sweep.kind) else config.distill.kind,
      max_norm=config.optimizer.max_norm)
  data_rng = jax.random.PRNGKey(config.data_seed)

  def evaluate(state):
    """Per split: logits [M, N, K] and correctness [M, N] (M = 1 for a plain run)."""
    variables = {'params': state.params, **state.model_state}
    logits = feed.eval_logits(predict, variables, num_members)
    return {name: (split_logits, split_logits.argmax(-1) == feed.labels[name])
            for name, split_logits in logits.items()}

  compile_seconds = feed.compile(train_step, num_members=num_members, state=state,
                                 teacher_variables=teacher_variables, hparams=hparams,
                                 data_rng=data_rng)
  flops_per_example = _forward_flops(model, _member_slice(state, 0 if members else None),
                                     dataset.image_shape)
  step_flops = step_lib.train_step_flops(train_step, state, feed.batch_shapes(),
                                         teacher_variables, hparams,
                                         num_members=num_members)

  checkpoints = checkpoint_lib.Checkpoints(workdir, keep=config.keep_checkpoints)
  history = [[] for _ in indices]
  train_seconds, start_epoch = 0.0, 0
  latest = checkpoints.latest_epoch()
  if latest is not None:
    state, meta = checkpoints.restore(latest, state)
    history, train_seconds, start_epoch = meta['history'], meta['train_seconds'], latest
    _say(f'resuming {workdir} from the checkpoint of epoch {latest}')
  resumed_seconds = train_seconds

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  teacher_note = ''
  if teacher_results is not None:
    teacher_note = (f'; teacher {teacher_results["model"]} '
                    f'({100 * teacher_results["test_accuracy"]:.2f}%, '
                    f'{"cached logits" if cache_teacher else "run in the step"})')
  sweep_note = f'; sweep of {num_members} members' if members else ''
  _say(f'{config.model.name} ({num_params:,} params) on {config.dataset}: '
       f'{feed.num_train_examples:,} train examples ({feed.mode} input), '
       f'{steps_per_epoch} steps/epoch, {num_devices} device(s){teacher_note}{sweep_note}; '
       f'compiled in {compile_seconds:.1f}s')

  terminate = {'requested': False}

  def on_sigterm(signum, frame):
    terminate['requested'] = True

  try:
    previous_handler = signal.signal(signal.SIGTERM, on_sigterm)
  except ValueError:  # signals can only be caught on the main thread
    previous_handler = None

  try:
    last_good_epoch = start_epoch
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
      epoch_start = time.perf_counter()
      state, step_metrics, finished = feed.run_epoch(
          state, teacher_variables, hparams, data_rng, epoch,
          stop_requested=lambda: terminate['requested'])
      step_losses, step_accuracy = step_metrics['loss'], step_metrics['accuracy']
      epoch_seconds = time.perf_counter() - epoch_start
      if not np.all(np.isfinite(step_losses)):
        bad_step, bad_member = np.argwhere(~np.isfinite(step_losses))[0]
        global_step = (epoch - 1) * steps_per_epoch + int(bad_step) + 1
        where = (f'the checkpoint of epoch {last_good_epoch} in {checkpoints.directory}'
                 if last_good_epoch else 'none saved yet')
        member = f' in member {members[bad_member]["label"]}' if members else ''
        raise NonFiniteLossError(
            f'training loss became {step_losses[bad_step, bad_member]} at step {global_step} '
            f'(epoch {epoch}){member}; last good checkpoint: {where}; '
            'try a lower config.optimizer.learning_rate')
      if not finished:  # a streamed epoch stopped by SIGTERM: not checkpointed
        where = (f'the checkpoint of epoch {last_good_epoch} in {checkpoints.directory} is kept'
                 if last_good_epoch else 'no checkpoint yet')
        raise Preempted(f'SIGTERM: stopped epoch {epoch} after {len(step_losses)} of '
                        f'{steps_per_epoch} steps; {where}; rerun the same command to resume')
      train_seconds += epoch_seconds
      evaluated = epoch % config.eval_every == 0 or epoch == config.num_epochs
      evals = evaluate(state) if evaluated else {}
      for m in range(len(indices)):
        record = {'epoch': epoch, 'step': epoch * steps_per_epoch,
                  'train_loss': float(step_losses[:, m].mean()),
                  'train_accuracy': float(step_accuracy[:, m].mean()),
                  'epoch_seconds': epoch_seconds}
        for name, (_, correct) in evals.items():
          record[f'{name}_accuracy'] = float(correct[m].mean())
        history[m].append(record)
        prefix = f'{members[m]["label"]}/' if members else ''
        writer.write_scalars(epoch * steps_per_epoch, {
            prefix + k: v for k, v in record.items() if k not in ('epoch', 'step')})
      if epoch % config.log_every_epochs == 0 or epoch == config.num_epochs:
        remaining = ((config.num_epochs - epoch) * (train_seconds - resumed_seconds)
                     / (epoch - start_epoch))  # from the epochs run in this process
        shown = history[0][-1]
        accuracies = ''.join(f'  {name} {100 * shown[f"{name}_accuracy"]:.2f}%'
                             for name in ('train', 'validation', 'test')
                             if f'{name}_accuracy' in shown)
        if members:
          accuracies += f' (member {members[0]["label"]}; best test ' + (
              f'{100 * max(h[-1].get("test_accuracy", 0) for h in history):.2f}%)'
              if evaluated else 'n/a)')
        examples_per_second = steps_per_epoch * config.batch_size / epoch_seconds
        _say(f'epoch {epoch}/{config.num_epochs}  step {shown["step"]}  '
             f'loss {shown["train_loss"]:.4f}{accuracies}  '
             f'{examples_per_second:,.0f} ex/s  {epoch_seconds:.1f}s/epoch  '
             f'ETA {_format_seconds(remaining)}')
      if (epoch % config.checkpoint_every == 0 or epoch == config.num_epochs
          or terminate['requested']):
        checkpoints.save(epoch, state, {'history': history, 'train_seconds': train_seconds})
        last_good_epoch = epoch
      if terminate['requested'] and epoch < config.num_epochs:
        raise Preempted(f'SIGTERM: saved the checkpoint of epoch {epoch} in '
                        f'{checkpoints.directory}; rerun the same command to resume')
  finally:
    # Cleanup must not hide the error that ended the loop (e.g. a full disk
    # also fails the summary flush), so its own failures are only logged.
    for cleanup in (writer.flush, checkpoints.close):
      try:
        cleanup()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('cleanup %s failed: %s', cleanup.__qualname__, e)
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)

  final = evaluate(state)
  shared = {
      'dataset': config.dataset,
      'model': config.model.name,
      'params': num_params,
      'image_shape': list(dataset.image_shape),
      'num_classes': dataset.num_classes,
      'num_train_examples': int(feed.num_train_examples),
      'input_pipeline': feed.mode,
      'steps_per_epoch': steps_per_epoch,
      'epochs': config.num_epochs,
      'train_seconds': train_seconds,
      'examples_per_second': config.num_epochs * steps_per_epoch * config.batch_size
                             * len(indices) / max(train_seconds, 1e-9),
      'compile_seconds': compile_seconds,
      'flops_per_example': flops_per_example,
      'train_step_flops': step_flops,
      'achieved_flops_per_second': None if step_flops is None else (
          step_flops * (config.num_epochs - start_epoch) * steps_per_epoch
          / max(train_seconds - resumed_seconds, 1e-9)),
      'devices': num_devices,
      'teacher': None if teacher_results is None else {
          'workdir': os.path.abspath(config.teacher.workdir),
          'model': teacher_results['model'],
          'test_accuracy': teacher_results['test_accuracy'],
          'cached': cache_teacher},
      'final_checkpoint_epoch': config.num_epochs,
  }

  def member_results(m: int, member_config) -> dict:
    test_correct = final['test'][1][m]
    labels = feed.labels['test']
    evaluated = [h for h in history[m] if 'test_accuracy' in h]
    out = dict(shared)
    out.update({
        'test_accuracy': float(test_correct.mean()),
        'test_errors': int((~test_correct).sum()),
        'best_test_accuracy': max(h['test_accuracy'] for h in evaluated),
        'per_class_accuracy': [float(test_correct[labels == k].mean())
                               if np.any(labels == k) else None  # class absent from test
                               for k in range(dataset.num_classes)],
        'per_class_errors': [int((~test_correct[labels == k]).sum())
                             for k in range(dataset.num_classes)],
        'temperature': float(member_config.distill.temperature) if teacher_results else None,
        'alpha': config_lib.alpha(member_config) if teacher_results else None,
        'seed': int(member_config.seed),
        'learning_rate': float(member_config.optimizer.learning_rate),
        'kind': member_config.distill.kind if teacher_results else None,
    })
    if 'validation' in final:
      out['validation_accuracy'] = float(final['validation'][1][m].mean())
      out['best_validation_accuracy'] = max(h['validation_accuracy'] for h in evaluated)
    out['config'] = config_lib.to_json_dict(member_config)
    out['history'] = history[m]
    return out

  def write_run(directory: str, results: dict, logits: dict) -> None:
    np.savez_compressed(os.path.join(directory, 'logits.npz'), **logits)
    report.plot_curves(results['history'], os.path.join(directory, 'curves.png'),
                       title=f'{config.model.name} on {config.dataset}')
    report.write_json(os.path.join(directory, RESULTS_FILE), results)

  if not members:
    results = member_results(0, config)
    if jax.process_index() == 0:
      write_run(workdir, results, {name: v[0][0] for name, v in final.items()})
  else:
    rows = []
    for m, member in enumerate(members):
      member_cfg = config_lib.member_config(config, member)
      member_dir = os.path.join(workdir, 'members', member['label'])
      os.makedirs(member_dir, exist_ok=True)
      report.write_json(os.path.join(member_dir, CONFIG_FILE),
                        config_lib.to_json_dict(member_cfg))
      member_checkpoints = checkpoint_lib.Checkpoints(member_dir, keep=1)
      member_checkpoints.save(config.num_epochs, _member_slice(state, m),
                              {'history': [history[m]], 'train_seconds': train_seconds})
      member_checkpoints.close()
      results = member_results(m, member_cfg)
      if jax.process_index() == 0:
        write_run(member_dir, results, {name: v[0][m] for name, v in final.items()})
      rows.append(_member_row(results, member, member_dir))
    results = dict(shared)
    results.update({'members': rows, 'config': config_dict, 'sweep_mode': 'vmap',
                    'test_accuracy': max(r['test_accuracy'] for r in rows)})
    if jax.process_index() == 0:
      report.write_json(os.path.join(workdir, RESULTS_FILE), results)
  best = f'best member {100 * results["test_accuracy"]:.2f}%' if members else (
      f'test accuracy {100 * results["test_accuracy"]:.2f}% ({results["test_errors"]} errors)')
  _say(f'done: {best} in {_format_seconds(train_seconds)}; '
       f'results in {os.path.join(workdir, RESULTS_FILE)}')
  return results


def _sweep_mode(config) -> str:
  if config.sweep.mode != 'auto':
    return config.sweep.mode
  dense = config.model.name == 'mlp'
  return 'vmap' if dense or jax.default_backend() != 'cpu' else 'loop'


def _member_row(results: dict, member: dict, member_dir: str) -> dict:
  """A sweep member's line in the sweep's results.json."""
  row = {k: results[k] for k in (
      'temperature', 'alpha', 'seed', 'learning_rate', 'kind', 'test_accuracy', 'test_errors',
      'best_test_accuracy', 'per_class_errors')}
  row.update(label=member['label'], workdir=member_dir)
  if 'validation_accuracy' in results:
    row['validation_accuracy'] = results['validation_accuracy']
  return row


def _train_members_in_turn(config, workdir: str, members: list[dict], config_dict: dict) -> dict:
  """A sweep trained one member after another, each a plain run in members/<label>.

  The result has the layout of a vectorised sweep. Finished members are
  skipped and an interrupted one resumes, like any run.
  """
  rows, results, seconds = [], None, []
  start = time.perf_counter()
  for member in members:
    member_dir = os.path.join(workdir, 'members', member['label'])
    _say(f'sweep member {member["label"]} ({len(rows) + 1}/{len(members)})')
    results = train_and_evaluate(config_lib.member_config(config, member), member_dir)
    rows.append(_member_row(results, member, member_dir))
    seconds.append(results['train_seconds'])
  shared = {k: v for k, v in results.items() if k not in (
      'history', 'config', 'per_class_accuracy', 'per_class_errors', 'test_errors',
      'best_test_accuracy', 'temperature', 'alpha', 'seed', 'learning_rate', 'kind',
      'validation_accuracy', 'best_validation_accuracy', 'train_seconds',
      'examples_per_second', 'achieved_flops_per_second')}
  shared.update(members=rows, config=config_dict, sweep_mode='loop',
                train_seconds=float(sum(seconds)),
                test_accuracy=max(r['test_accuracy'] for r in rows))
  if jax.process_index() == 0:
    report.write_json(os.path.join(workdir, RESULTS_FILE), shared)
  _say(f'done: sweep of {len(rows)} members, best {100 * shared["test_accuracy"]:.2f}%, '
       f'{_format_seconds(time.perf_counter() - start)}; results in '
       f'{os.path.join(workdir, RESULTS_FILE)}')
  return shared


def _forward_flops(model, state, image_shape) -> float | None:
  from kdjax.models import flops
  variables = {'params': state.params, **state.model_state}
  return flops.forward_flops_per_example(model, variables, image_shape)
