"""What a finished run leaves behind: results.json, logits.npz, curves.png, per member.

A plain run writes them into its workdir. A sweep writes one complete run
directory per member under `members/` (a checkpoint, config.json and these
files, so any member can serve as a teacher) and, in its own workdir, a
results.json with the member rows, their mean ± std over seeds and the
member chosen on validation, never a best-of-members test accuracy.
"""

import os

import jax
import numpy as np

from kdjax import config as config_lib
from kdjax import report
from kdjax import terms as terms_lib
from kdjax.methods import registry as methods_registry
from kdjax.train import checkpoint as checkpoint_lib
from kdjax.train import progress as progress_lib
from kdjax.train import sweep as sweep_lib
from kdjax.train import workdir as workdir_lib


# Datasets with more classes than this also report top-5 accuracy.
TOP5_MIN_CLASSES = 10


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  """The fraction of examples whose label is among the `k` largest logits.

  Ties are counted against the example: the label must beat all but k − 1
  other classes strictly (so all-equal logits score 0, not 1).
  """
  logits = np.asarray(logits, np.float32)
  label_logit = np.take_along_axis(logits, np.asarray(labels)[:, None], axis=-1)
  return float(np.mean(np.sum(logits >= label_logit, axis=-1) <= k))


def run_facts(config, dataset, feed, *, num_params: int, teacher, timing: dict,
              devices: int) -> dict:
  """The fields every member of a run shares (data, model, input, time, teacher)."""
  validation = None
  if 'validation' in feed.labels:  # filled by the final evaluation for streamed input
    validation = {'examples': len(feed.labels['validation']),
                  'fraction': float(config.validation_fraction),
                  'seed': int(config.validation_seed)}
  return {
      'dataset': config.dataset,
      'model': config.model.name,
      'params': num_params,
      'image_shape': list(dataset.image_shape),
      'num_classes': dataset.num_classes,
      'num_train_examples': int(feed.num_train_examples),
      'train_examples': int(config.train_examples),
      'omit_classes': [int(k) for k in config.omit_classes],
      'keep_classes': [int(k) for k in config.keep_classes],
      'validation': validation,
      'input_pipeline': feed.mode,
      'steps_per_epoch': feed.steps_per_epoch,
      'epochs': config.num_epochs,
      # 'terms' for a run that names its terms (config.distill.terms; see `loss`).
      'objective': 'terms' if len(config.distill.terms) else config.distill.objective,
      'method': _method(config),
      # An online cohort's kind, weight, temperature and refresh (kdjax.online); None if not.
      'online': None if config.online.kind is None else config.online.to_dict(),
      **timing,
      'devices': devices,
      'teacher': None if teacher is None else teacher.summary(config.dataset),
      'final_checkpoint_epoch': config.num_epochs,
  }


def _method(config) -> dict | None:
  """The distillation method beside the objective, with its weight and options."""
  if not config.method.name:
    return None
  return {'name': config.method.name, 'weight': methods_registry.weight(config),
          **methods_registry.options(config)}


def member_results(facts: dict, member_config, records: list[dict], final: dict, m: int,
                   labels: dict, num_classes: int, diverged_at: int) -> dict:
  """One member's results.json: the facts, its settings, its accuracies, its history.

  `loss` spells out the sum its step minimised ('loss = 0.1·ce + 0.9·kd@T4') and
  `loss_terms` lists each term's `name` (its key in the history, `train_term/<name>`),
  `label` and `weight` (`kdjax.terms.describe`).

  `final` maps a split to (logits [M, N, K], correct [M, N]) after the last
  epoch; `test_accuracy` is the last epoch's, never a maximum over epochs.
  """
  distilled = facts['teacher'] is not None
  test_correct = final['test'][1][m]
  test_labels = labels['test']
  out = dict(facts)
  out.update({
      'test_accuracy': float(test_correct.mean()),
      'test_errors': int((~test_correct).sum()),
      'per_class_accuracy': [float(test_correct[test_labels == k].mean())
                             if np.any(test_labels == k) else None  # class absent from test
                             for k in range(num_classes)],
      'per_class_errors': [int((~test_correct[test_labels == k]).sum())
                           for k in range(num_classes)],
      'temperature': float(member_config.distill.temperature) if distilled else None,
      'alpha': config_lib.alpha(member_config) if distilled else None,
      'kind': member_config.distill.kind if distilled else None,
      'seed': int(member_config.seed),
      'data_seed': int(member_config.data_seed),
      'learning_rate': float(member_config.optimizer.learning_rate),
      'method_weight': (methods_registry.weight(member_config) if member_config.method.name
                        else None),
      **terms_lib.results_fields(member_config),
      'diverged': bool(diverged_at),
      'diverged_at_step': int(diverged_at) or None,
  })
  if 'validation' in final:
    out['validation_accuracy'] = float(final['validation'][1][m].mean())
  if num_classes > TOP5_MIN_CLASSES:
    for split, (logits, _) in final.items():
      out[f'{split}_top5_accuracy'] = top_k_accuracy(logits[m], labels[split], 5)
  out.update(progress_lib.selection_fields(records))
  out['config'] = config_lib.to_json_dict(member_config)
  out['history'] = records
  return out


def add_sections(results: dict, sections: dict) -> dict:
  """`results` with an evaluator's `sections` added; ValueError for a field already there."""
  taken = sorted(set(results) & set(sections))
  if taken:
    raise ValueError(f'evaluator sections {taken} would replace fields of results.json')
  return {**results, **sections}


def write_run_files(directory: str, results: dict, logits: dict, title: str | None) -> None:
  """logits.npz, curves.png (unless `title` is None) and, last, results.json.

  results.json is written last: it marks a finished run.
  """
  np.savez_compressed(os.path.join(directory, 'logits.npz'), **logits)
  if title is not None:
    report.plot_curves(results['history'], os.path.join(directory, 'curves.png'), title=title)
  report.write_json(os.path.join(directory, workdir_lib.RESULTS_FILE), results)


def write(workdir: str, *, config, members: sweep_lib.Members, state, facts: dict,
          progress, final: dict, labels: dict, num_classes: int, diverged_at,
          member_extras: list[dict] | None = None) -> dict:
  """Writes every member's files (and a sweep's summary); returns the run's results.

  `member_extras[m]`, when given, adds sections to member m's results (its
  evaluators', `kdjax.evaluators`).
  """
  title = f'{config.model.name} on {config.dataset}'
  writer = jax.process_index() == 0
  rows = []
  state = members.on_host(state)
  for m in range(members.count):
    member_config = members.config_of(m)
    directory = members.directory(workdir, m)
    if members.stacked:  # a complete run directory, usable as a teacher
      os.makedirs(directory, exist_ok=True)
      report.write_json(os.path.join(directory, workdir_lib.CONFIG_FILE),
                        config_lib.to_json_dict(member_config))
      saved = checkpoint_lib.Checkpoints(directory, keep=1)
      saved.save(config.num_epochs, members.take(state, m),
                 {'history': [progress.history[m]], 'train_seconds': progress.train_seconds})
      saved.close()
    results = member_results(facts, member_config, progress.history[m], final, m, labels,
                             num_classes, int(diverged_at[m]))
    if member_extras:
      results = add_sections(results, member_extras[m])
    if writer:  # a sweep's members share one figure, drawn below
      write_run_files(directory, results, {name: v[0][m] for name, v in final.items()},
                      title if members.mode == 'single' else None)
    if members.mode == 'single':
      return results
    rows.append(sweep_lib.member_row(results, members.rows[m], directory))
  results = dict(facts, members=rows, config=config_lib.to_json_dict(config),
                 sweep_mode=members.mode, **sweep_lib.summary(rows))
  if writer:
    report.plot_member_curves({row['label']: history for row, history in
                               zip(members.rows, progress.history)},
                              os.path.join(workdir, 'curves.png'), title=title)
    report.write_json(os.path.join(workdir, workdir_lib.RESULTS_FILE), results)
  return results


def done_line(results: dict, workdir: str, seconds: float) -> str:
  """The run's last line: what it reached, how long it took, where its results are."""
  path = os.path.join(workdir, workdir_lib.RESULTS_FILE)
  if 'members' not in results:
    what = (f'test accuracy {100 * results["test_accuracy"]:.2f}% '
            f'({results["test_errors"]} errors)')
  else:
    chosen = results['selection']
    what = f'sweep of {len(results["members"])} members'
    if chosen:
      what += (f', chosen on validation: {chosen["chosen"]} '
               f'(validation {100 * chosen["validation_accuracy"]:.2f}%, '
               f'test {100 * chosen["test_accuracy"]:.2f}%)')
    if results['diverged']:
      what += f', diverged: {", ".join(results["diverged"])}'
  return f'done: {what} in {progress_lib.format_seconds(seconds)}; results in {path}'
