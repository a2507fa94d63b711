"""One run, end to end: a teacher, a student alone, a distilled student, or a sweep.

The driver `train_and_evaluate` reads as its stages:

  prepare the run   validate, refuse what cannot run, workdir (resume or finished)
  build the input   dataset + feed (held on the devices, or streamed)
  build students    model, optimizer, state and hparams over the `Members`
  attach teacher    loaded, cached or run in the step (kdjax.train.teacher)
  compile           the epoch (or step) program and the eval program
  train epochs      restore-or-start, then epochs with evaluation, records,
                    progress lines, checkpoints, NaN and preemption handling
  finish            final evaluation, the config's evaluators (kdjax.evaluators),
                    results.json, logits, plots (kdjax.train.results)
"""

import dataclasses
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from kdjax import caching
from kdjax import config as config_lib
from kdjax import evaluators
from kdjax import models
from kdjax import online
from kdjax import report
from kdjax import terms as terms_lib
from kdjax.models import flops
from kdjax.errors import NonFiniteLossError, KDError, Preempted
from kdjax.train import checkpoint as checkpoint_lib
from kdjax.train import feed as feed_lib
from kdjax import objectives as objective_lib
from kdjax.train import optim, preflight
from kdjax.train import progress as progress_lib
from kdjax.train import results as results_lib
from kdjax.train import step as step_lib
from kdjax.train import summaries
from kdjax.train import sweep as sweep_lib
from kdjax.train import teacher as teacher_lib
from kdjax.train import workdir as workdir_lib

CONFIG_FILE = workdir_lib.CONFIG_FILE
RESULTS_FILE = workdir_lib.RESULTS_FILE
say = progress_lib.say


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one model, or a sweep of students, as `config` says.

  Everything goes into `workdir`: config.json, orbax checkpoints, TensorBoard
  summaries, results.json, logits.npz and curves.png. A sweep
  (`config.sweep`) gives each member a complete run directory of its own
  under `workdir/members/` (usable as a teacher); the sweep's results.json
  lists the members, their mean ± std over seeds and the member chosen on
  validation. Re-running with the same workdir resumes from the latest
  checkpoint; a finished run is returned as it is.

  Returns:
    The results dict also written to `<workdir>/results.json`.

  Raises:
    KDError: for any mistake in the config, the data or the workdir, found
      before anything is written where it can be.
  """
  workdir = os.path.abspath(workdir)
  finished = prepare(config, workdir)
  if finished is not None:
    say(f'{workdir} holds a finished run with this config: nothing to do')
    return finished
  members = sweep_lib.Members.of(config)
  if members.mode == 'loop':
    return train_in_turn(config, workdir, members)
  run = build(config, workdir, members)
  state, progress = train_epochs(run)
  return finish(run, state, progress)


def prepare(config, workdir: str) -> dict | None:
  """Checks everything that can be checked, then readies the workdir.

  Returns the finished results when the workdir already holds this run.
  """
  caching.ensure()  # decoded datasets and compiled programs reused across processes
  preflight.check(config)  # the schema, the teacher, the data, the model: nothing written
  return workdir_lib.prepare(workdir, config_lib.to_json_dict(config), config.overwrite)


@dataclasses.dataclass
class Run:
  """The objects a run's stages build and the epoch loop uses."""
  config: ml_collections.ConfigDict
  workdir: str
  members: sweep_lib.Members
  dataset: object
  feed: object
  model: object
  state: step_lib.TrainState
  hparams: dict
  num_params: int
  teacher: teacher_lib.Teacher | None
  train_step: object
  predict: object
  data_rng: jax.Array
  timing: dict
  final_evals: dict | None = None  # the last epoch's evaluation, when it ran in this process


def build(config, workdir: str, members: sweep_lib.Members) -> Run:
  """Input, students, teacher and compiled programs of a run trained in one program."""
  mesh = step_lib.data_mesh()
  dataset, feed = feed_lib.build(config, mesh)
  model = models.from_config(config.model, num_classes=dataset.num_classes)
  tx = optim.optimizer(config, feed.steps_per_epoch)
  objective = objective_lib.from_config(config, swept_kind=bool(len(config.sweep.kind)),
                                        steps_per_epoch=feed.steps_per_epoch,
                                        train_labels=feed.train_labels)
  objective = online.objective_of(config, objective, model, dataset.image_shape)
  teacher = teacher_lib.attach(config, dataset, feed, mesh)
  teacher_outputs = (step_lib.output_shapes(teacher.model, teacher.variables,
                                            dataset.image_shape)
                     # cached: the logits are all there is, and no variables to shape
                     if objective.init_with is not None and teacher is not None
                     and teacher.variables is not None else None)
  state = members.init_state(lambda seed: step_lib.init_state(
      model, tx, jax.random.PRNGKey(seed), dataset.image_shape, objective,
      teacher_outputs=teacher_outputs))
  num_params = models.count_params(members.take(state.params, 0))
  state = feed_lib.replicated(mesh, state)
  hparams = feed_lib.replicated(mesh, members.hparams())
  train_step = step_lib.make_train_step(
      model=model, tx=tx, mean=dataset.mean, std=dataset.std,
      max_shift=config.augment.max_shift, flip=config.augment.flip,
      teacher_model=teacher_lib.in_step_model(teacher), objective=objective,
      max_norm=config.optimizer.max_norm, freeze_on_divergence=members.stacked,
      mixup=float(config.augment.mixup))
  train_step = online.step_of(config, train_step, model)
  run = Run(config=config, workdir=workdir, members=members, dataset=dataset, feed=feed,
            model=model, state=state, hparams=hparams, num_params=num_params, teacher=teacher,
            train_step=train_step, data_rng=members.data_rng(), timing={},
            predict=step_lib.make_predict(model, mesh=mesh, mean=dataset.mean, std=dataset.std,
                                          batch_size=config.eval_batch_size,
                                          num_members=members.axis_size))
  compile_programs(run)
  return run


def compile_programs(run: Run) -> None:
  """Compiles the train program; counts its FLOPs (XLA's count of one step, from the
  lowered program) and the model's."""
  teacher_variables = teacher_lib.variables_of(run.teacher)
  run.timing['compile_seconds'] = run.feed.compile(
      run.train_step, num_members=run.members.axis_size, state=run.state,
      teacher_variables=teacher_variables, hparams=run.hparams, data_rng=run.data_rng,
      member_orders=run.members.own_data_orders, input_groups=run.members.input_groups)
  one = run.members.take(run.state, 0)
  run.timing['flops_per_example'] = flops.forward_flops_per_example(
      run.model, {'params': one.params, **one.model_state}, run.dataset.image_shape)
  run.timing['train_step_flops'] = run.feed.step_flops


def evaluate(run: Run, state) -> dict:
  """Per split: logits [M, N, K] and correctness [M, N] (M = 1 for a plain run)."""
  variables = {'params': state.params, **state.model_state}
  logits = run.feed.eval_logits(run.predict, variables, run.members.axis_size)
  return {name: (split_logits, split_logits.argmax(-1) == run.feed.labels[name])
          for name, split_logits in logits.items()}


def train_epochs(run: Run):
  """Restores or starts, then trains the remaining epochs. Returns (state, progress)."""
  config, members = run.config, run.members
  checkpoints = checkpoint_lib.Checkpoints(run.workdir, keep=config.keep_checkpoints)
  state, progress = run.state, progress_lib.Progress.start(members.count)
  latest = checkpoints.latest_epoch()
  if latest is not None:
    state, meta = restore(checkpoints, latest, state)
    progress = progress_lib.Progress.resumed(meta, latest)
    say(f'resuming {run.workdir} from the checkpoint of epoch {latest}')
  say(first_line(run))
  writer = summaries.open_writer(config.summary_writer, run.workdir,
                                 process_index=jax.process_index())
  diverged = np.zeros(members.count, np.int64)
  # Wall-clock time of the first step, for `experiments.benchmark`'s
  # process-start-to-first-step column.
  run.timing['first_step_unix_time'] = time.time()
  try:
    with progress_lib.PreemptionGuard() as guard:
      for epoch in range(progress.start_epoch + 1, config.num_epochs + 1):
        start = time.perf_counter()
        state, metrics, complete = run.feed.run_epoch(
            state, teacher_lib.variables_of(run.teacher), run.hparams, run.data_rng, epoch,
            stop_requested=lambda: guard.requested)
        seconds = time.perf_counter() - start
        diverged = check_finite(run, state, metrics, epoch, checkpoints, diverged)
        if not complete:  # a streamed epoch stopped by SIGTERM: not checkpointed
          raise Preempted(f'SIGTERM: stopped epoch {epoch} after {len(metrics["loss"])} of '
                          f'{run.feed.steps_per_epoch} steps; {_kept(checkpoints)}; '
                          'rerun the same command to resume')
        evals = (evaluate(run, state) if progress_lib.due(epoch, config.eval_every,
                                                          config.num_epochs) else {})
        if epoch == config.num_epochs:
          run.final_evals = evals or None
        records = progress.record(epoch, epoch * run.feed.steps_per_epoch, metrics,
                                  {name: correct for name, (_, correct) in evals.items()},
                                  seconds)
        log_epoch(run, writer, progress, records, epoch)
        if progress_lib.due(epoch, config.checkpoint_every, config.num_epochs) or (
            guard.requested):
          checkpoints.save(epoch, state, progress.meta())
        if guard.requested and epoch < config.num_epochs:
          raise Preempted(f'SIGTERM: saved the checkpoint of epoch {epoch} in '
                          f'{checkpoints.directory}; rerun the same command to resume')
  finally:
    # Cleanup must not hide the error that ended the loop (e.g. a full disk
    # also fails the summary flush), so its own failures are only logged.
    for cleanup in (writer.close, checkpoints.close):
      try:
        cleanup()
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('cleanup %s failed: %s', cleanup.__qualname__, e)
  return state, progress


def restore(checkpoints, epoch: int, state):
  try:
    return checkpoints.restore(epoch, state)
  except (ValueError, KeyError, TypeError) as e:  # saved by an older train state
    raise KDError(f'the checkpoint of epoch {epoch} in {checkpoints.directory} does not match '
                  f'this version\'s train state ({type(e).__name__}); pass '
                  '--config.overwrite=True to start the run again') from None


def _kept(checkpoints) -> str:
  epoch = checkpoints.latest_epoch()
  return (f'the checkpoint of epoch {epoch} in {checkpoints.directory} is kept'
          if epoch else 'no checkpoint yet')


def check_finite(run: Run, state, metrics: dict, epoch: int, checkpoints,
                 diverged: np.ndarray) -> np.ndarray:
  """Stops a plain run at its first non-finite loss; notes diverged sweep members.

  A member of a vectorised sweep that diverges keeps its last finite state
  (the step freezes it) while the others train on; only when every member has
  diverged does the sweep stop. Returns each member's divergence step (0: none).
  """
  members = run.members
  if members.stacked:
    now = np.asarray(jax.device_get(state.diverged_step)).reshape(-1)
    for m in np.flatnonzero((now > 0) & (diverged == 0)):
      say(f'member {members.label(m)} diverged at step {now[m]} (epoch {epoch}); its last '
          'finite weights are kept and the other members train on')
    if np.all(now > 0):
      raise NonFiniteLossError(f'every member of the sweep diverged (the last at step '
                               f'{now.max()}, epoch {epoch}); try a lower '
                               'config.optimizer.learning_rate')
    return now
  found = progress_lib.first_nonfinite(metrics['loss'])
  if found is None:
    return diverged
  bad_step, member = found
  global_step = (epoch - 1) * run.feed.steps_per_epoch + bad_step + 1
  latest = checkpoints.latest_epoch()
  where = (f'the checkpoint of epoch {latest} in {checkpoints.directory}' if latest
           else 'none saved yet')
  raise NonFiniteLossError(
      f'training loss became {metrics["loss"][bad_step, member]} at step {global_step} '
      f'(epoch {epoch}); last good checkpoint: {where}; '
      'try a lower config.optimizer.learning_rate')


def first_line(run: Run) -> str:
  """What is about to train, on what, with which teacher, compiled how fast."""
  teacher_note = run.teacher.note() if run.teacher else ''
  sweep_note = (f'; sweep of {run.members.count} members' if run.members.mode != 'single'
                else '')
  return (f'{run.config.model.name} ({run.num_params:,} params) on {run.config.dataset}: '
          f'{run.feed.num_train_examples:,} train examples ({run.feed.mode} input), '
          f'{run.feed.steps_per_epoch} steps/epoch, {jax.device_count()} device(s)'
          f'{teacher_note}{sweep_note}; compiled in {run.timing["compile_seconds"]:.1f}s')


def log_epoch(run: Run, writer, progress, records: list[dict], epoch: int) -> None:
  """TensorBoard scalars for every member, and the progress line when due."""
  config, members = run.config, run.members
  for m, record in enumerate(records):
    writer.write_scalars(record['step'], {
        members.writer_prefix(m) + k: v for k, v in record.items() if k not in ('epoch', 'step')})
  if progress_lib.due(epoch, config.log_every_epochs, config.num_epochs):
    note = (f' (member {members.label(0)} of {members.count})'
            if members.mode != 'single' else '')
    say(progress.line(epoch, config.num_epochs, run.feed.steps_per_epoch * config.batch_size,
                      note, terms=terms_lib.describe(members.config_of(0))))


def finish(run: Run, state, progress) -> dict:
  """Final evaluation and every file of the finished run."""
  config = run.config
  final = run.final_evals if run.final_evals is not None else evaluate(run, state)
  trained_here = config.num_epochs - progress.start_epoch
  steps_here = trained_here * run.feed.steps_per_epoch
  step_flops = run.timing['train_step_flops']
  timing = dict(
      run.timing, train_seconds=progress.train_seconds,
      examples_per_second=config.num_epochs * run.feed.steps_per_epoch * config.batch_size
      * run.members.count / max(progress.train_seconds, 1e-9),
      achieved_flops_per_second=None if step_flops is None else (
          step_flops * steps_here / max(progress.train_seconds - progress.resumed_seconds,
                                        1e-9)))
  facts = results_lib.run_facts(config, run.dataset, run.feed, num_params=run.num_params,
                                teacher=run.teacher, timing=timing,
                                devices=jax.device_count())
  diverged = (np.asarray(jax.device_get(state.diverged_step)).reshape(-1)
              if run.members.stacked else np.zeros(1, np.int64))
  shared, member_extras = evaluators.run(evaluation_context(run, state, final))
  facts = results_lib.add_sections(facts, shared)
  results = results_lib.write(run.workdir, config=config, members=run.members, state=state,
                              facts=facts, progress=progress, final=final,
                              labels=run.feed.labels, num_classes=run.dataset.num_classes,
                              diverged_at=diverged, member_extras=member_extras)
  say(results_lib.done_line(results, run.workdir, progress.train_seconds))
  return results


def evaluation_context(run: Run, state, final: dict) -> evaluators.Context:
  """What the evaluators read of the finished run: its networks, final logits, labels."""

  def predict(model, variables, num_members: int) -> dict:
    program = step_lib.make_predict(model, mesh=step_lib.data_mesh(), mean=run.dataset.mean,
                                    std=run.dataset.std, batch_size=run.config.eval_batch_size,
                                    num_members=num_members)
    return run.feed.eval_logits(program, variables, num_members)

  return evaluators.Context(
      config=run.config, members=run.members, model=run.model, state=state,
      image_shape=run.dataset.image_shape,
      logits={split: logits for split, (logits, _) in final.items()},
      labels=run.feed.labels, teacher=run.teacher, predict=predict)


def train_in_turn(config, workdir: str, members: sweep_lib.Members) -> dict:
  """A sweep trained one member after another, each a plain run in members/<label>.

  The result has the layout of a vectorised sweep. Finished members are
  skipped and an interrupted one resumes, like any run; a member whose loss
  stops being finite is recorded as diverged and the others still train.
  """
  rows, facts, seconds, histories = [], None, [], {}
  start = time.perf_counter()
  for m in range(members.count):
    directory = members.directory(workdir, m)
    say(f'sweep member {members.label(m)} ({m + 1}/{members.count})')
    try:
      results = train_and_evaluate(members.config_of(m), directory)
    except NonFiniteLossError as e:
      say(f'member {members.label(m)} diverged: {e}')
      rows.append(dict(members.rows[m], workdir=directory, diverged=True,
                       diverged_at_step=None, test_accuracy=None, validation_accuracy=None))
      continue
    rows.append(sweep_lib.member_row(results, members.rows[m], directory))
    histories[members.label(m)] = results['history']
    seconds.append(results['train_seconds'])
    facts = facts or {k: v for k, v in results.items()
                      if k in _SHARED_FACTS + evaluators.shared_sections()}
  if facts is None:
    raise NonFiniteLossError('every member of the sweep diverged; try a lower '
                             'config.optimizer.learning_rate')
  results = dict(facts, members=rows, config=config_lib.to_json_dict(config), sweep_mode='loop',
                 train_seconds=float(sum(seconds)), **sweep_lib.summary(rows))
  if jax.process_index() == 0:
    report.plot_member_curves(histories, os.path.join(workdir, 'curves.png'),
                              title=f'{config.model.name} on {config.dataset}')
    report.write_json(os.path.join(workdir, RESULTS_FILE), results)
  say(results_lib.done_line(results, workdir, time.perf_counter() - start))
  return results


# Fields of a member's results that describe the whole sweep.
_SHARED_FACTS = ('dataset', 'model', 'params', 'image_shape', 'num_classes',
                 'num_train_examples', 'train_examples', 'omit_classes', 'keep_classes',
                 'validation', 'input_pipeline', 'steps_per_epoch', 'epochs', 'objective',
                 'compile_seconds', 'flops_per_example', 'train_step_flops', 'devices',
                 'teacher', 'final_checkpoint_epoch')
