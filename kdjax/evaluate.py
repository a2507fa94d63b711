r"""Evaluates a finished run, trained or imported, on a split of its dataset.

  python -m kdjax.evaluate --workdir=RUN [--split=SPLIT] [--examples=N]
      [--batch_size=B] [--data_dir=DIR]

SPLIT is a TFDS split of the run's dataset (default: the split kdjax reports
as test, e.g. ImageNet's 'validation'); --examples=N evaluates its first N
examples. The images go through the streamed evaluation pipeline (ImageNet:
torchvision's resize-256 / centre-crop-224) and the run's normalisation.
Results go into RUN/evaluation.json, one entry per split evaluated: top-1
accuracy, top-5 where the dataset has more than 10 classes, the number of
examples and of errors. For a run imported with `python -m kdjax.weights`,
a full evaluation of the test split also becomes its results.json
`test_accuracy` (which a student's progress line and report show).
"""

import argparse
import os
import sys
import time

import numpy as np

from kdjax import report
from kdjax.errors import KDError

EVALUATION_FILE = 'evaluation.json'


def evaluate_run(workdir: str, *, split: str | None = None, examples: int = 0,
                 batch_size: int = 250, data_dir: str | None = None) -> dict:
  """Evaluates `workdir`'s final weights on `split`; returns (and records) the entry.

  Raises:
    KDError: the workdir holds no finished single run, the data is absent,
      or an argument is out of range.
  """
  from kdjax.train import teacher  # pylint: disable=import-outside-toplevel
  workdir = os.path.abspath(workdir)
  teacher.check_workdir(workdir)  # before TensorFlow loads: a mistake is answered at once
  import jax  # pylint: disable=import-outside-toplevel
  from kdjax import models  # pylint: disable=import-outside-toplevel
  from kdjax.data import catalog, stream  # pylint: disable=import-outside-toplevel
  from kdjax.train import checkpoint, feed, step  # pylint: disable=import-outside-toplevel
  from kdjax.train import results as results_lib  # pylint: disable=import-outside-toplevel
  from kdjax.train import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  config, results = teacher.read_run(workdir)
  if 'members' in results:
    raise KDError(f'--workdir={workdir} is a sweep; name one member, e.g. '
                  f'{os.path.join(workdir, "members", results["members"][0]["label"])}')
  if examples < 0 or batch_size < 1 or batch_size % jax.device_count():
    raise KDError(f'--examples={examples} must be >= 0 and --batch_size={batch_size} a '
                  f'positive multiple of the {jax.device_count()} device(s)')
  dataset = catalog.get_info(config.dataset)
  split = split or dataset.test_split
  tfds_split = f'{split}[:{examples}]' if examples else split
  info = stream.describe(config.dataset, data_dir=data_dir, image_size=config.input.image_size)
  model = models.from_config(config.model, num_classes=info.num_classes)
  mesh = step.data_mesh()
  variables = feed.replicated(mesh, checkpoint.restore_variables(
      workdir, results['final_checkpoint_epoch']))
  predict = step.make_predict(model, mesh=mesh, mean=info.mean, std=info.std,
                              batch_size=batch_size)
  start = time.perf_counter()
  logits, labels = [], []
  try:
    batches = stream.eval_batches(info, tfds_split, data_dir=data_dir, batch_size=batch_size)
    for batch, valid in batches:
      logits.append(np.asarray(predict(variables, batch['images']))[:valid])
      labels.append(batch['labels'][:valid])
  except ValueError as e:  # TFDS's word for a split that does not exist
    raise KDError(f'--split={split!r}: {str(e).strip().splitlines()[0]}') from None
  if not logits:
    raise KDError(f'--split={tfds_split!r} of {config.dataset} holds no examples')
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  correct = logits.argmax(-1) == labels
  entry = {'split': tfds_split, 'examples': int(len(labels)), 'errors': int((~correct).sum()),
           'top1_accuracy': float(correct.mean()),
           'seconds': round(time.perf_counter() - start, 2)}
  if info.num_classes > results_lib.TOP5_MIN_CLASSES:
    entry['top5_accuracy'] = results_lib.top_k_accuracy(logits, labels, 5)
  if jax.process_index() == 0:
    path = os.path.join(workdir, EVALUATION_FILE)
    recorded = report.read_json(path) if os.path.exists(path) else {}
    recorded[tfds_split] = entry
    report.write_json(path, recorded)
    if results.get('imported') and split == dataset.test_split and not examples:
      results.update(test_accuracy=entry['top1_accuracy'], test_errors=entry['errors'],
                     test_evaluated_by='python -m kdjax.evaluate')
      if 'top5_accuracy' in entry:
        results['test_top5_accuracy'] = entry['top5_accuracy']
      report.write_json(os.path.join(workdir, workdir_lib.RESULTS_FILE), results)
  return entry


def describe(entry: dict) -> str:
  line = (f'{entry["split"]}: top-1 {100 * entry["top1_accuracy"]:.2f}% '
          f'({entry["errors"]} errors of {entry["examples"]})')
  if 'top5_accuracy' in entry:
    line += f', top-5 {100 * entry["top5_accuracy"]:.2f}%'
  return line


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kdjax.evaluate',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='a finished run directory')
  parser.add_argument('--split', default=None, help="a TFDS split (default: the test split)")
  parser.add_argument('--examples', type=int, default=0, help='only the first N examples')
  parser.add_argument('--batch_size', type=int, default=250)
  parser.add_argument('--data_dir', default=None, help='TFDS data directory')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  try:
    entry = evaluate_run(args.workdir, split=args.split, examples=args.examples,
                         batch_size=args.batch_size, data_dir=args.data_dir)
  except KDError as e:
    print(f'error: {str(e).strip().splitlines()[0]}', file=sys.stderr)
    return 2
  print(describe(entry))
  return 0


if __name__ == '__main__':
  sys.exit(main())
