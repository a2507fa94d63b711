r"""Evaluates a finished run, trained or imported, on a split of its dataset.

  python -m kdjax.evaluate --workdir=RUN [--split=SPLIT] [--examples=N]
      [--batch_size=B] [--data_dir=DIR]
  python -m kdjax.evaluate --workdir=RUN --attack=pgd --eps=0.1 [--norm=linf|l2]
      [--steps=40] [--examples=1000]

SPLIT is a TFDS split of the run's dataset (default: the split kdjax reports
as test, e.g. ImageNet's 'validation'); --examples=N evaluates its first N
examples. The images go through the streamed evaluation pipeline (ImageNet:
torchvision's resize-256 / centre-crop-224) and the run's normalisation.
Results go into RUN/evaluation.json, one entry per split evaluated: top-1
accuracy, top-5 where the dataset has more than 10 classes, the number of
examples and of errors. For a run imported with `python -m kdjax.weights`,
a full evaluation of the test split also becomes its results.json
`test_accuracy` (which a student's progress line and report show).

--attack evaluates under one of kdjax.attacks (fgsm, pgd, pgd_margin: PGD on
the logit margin, cw_l2, jsma) on the first N test examples (default 1,000),
in the model's [0, 1] pixel space, and writes RUN/robustness.json, one entry
per attack and eps: the success rate among the examples the run classifies
correctly, the accuracy under attack over all N, and the mean L0 / L2 / L∞
size of the successful perturbations. Any finished run, teacher or student.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import attacks
from kdjax import data as data_lib
from kdjax import models
from kdjax import report
from kdjax.errors import KDError
from kdjax.train import checkpoint
from kdjax.train import feed
from kdjax.train import results as results_lib
from kdjax.train import step
from kdjax.train import teacher
from kdjax.train import workdir as workdir_lib

EVALUATION_FILE = 'evaluation.json'


class _Run:
  """A finished run's model, final variables and dataset description, for evaluation."""

  def __init__(self, workdir: str, data_dir: str | None):
    self.workdir = os.path.abspath(workdir)
    teacher.check_workdir(self.workdir)  # before TensorFlow loads: a mistake is answered at once
    self.config, self.results = teacher.read_run(self.workdir)
    teacher.refuse_sweep(self.results, self.workdir, '--workdir')
    self.data_dir = data_dir
    data_lib.catalog.use(self.config, data_dir)  # a folder: / tfds: dataset, as it trained
    self.dataset = data_lib.catalog.get_info(self.config.dataset)
    # kdjax.data.stream, the first use of which imports TensorFlow.
    self.info = data_lib.stream.describe(self.config.dataset, data_dir=data_dir,
                                         image_size=self.config.input.image_size)
    self.model = models.from_config(self.config.model, num_classes=self.info.num_classes)
    self.variables = checkpoint.restore_variables(self.workdir,
                                                  self.results['final_checkpoint_epoch'])

  def split(self, split: str | None, examples: int) -> tuple[str, str]:
    """(the split's name, the TFDS split string of its first `examples` examples)."""
    split = split or self.dataset.test_split
    return split, (f'{split}[:{examples}]' if examples else split)

  def batches(self, tfds_split: str, batch_size: int):
    """(uint8 images, labels) of `tfds_split`, `batch_size` at a time (the last one short)."""
    try:
      for batch, valid in data_lib.stream.eval_batches(
          self.info, tfds_split, data_dir=self.data_dir, batch_size=batch_size):
        yield batch['images'][:valid], batch['labels'][:valid]
    except ValueError as e:  # TFDS's word for a split that does not exist
      raise KDError(f'--split={tfds_split!r}: {str(e).strip().splitlines()[0]}') from None

  def record(self, filename: str, key: str, entry: dict) -> None:
    if _is_writer():
      path = os.path.join(self.workdir, filename)
      recorded = report.read_json(path) if os.path.exists(path) else {}
      recorded[key] = entry
      report.write_json(path, recorded)


def _check_sizes(examples: int, batch_size: int) -> None:
  if examples < 0 or batch_size < 1 or batch_size % jax.device_count():
    raise KDError(f'--examples={examples} must be >= 0 and --batch_size={batch_size} a '
                  f'positive multiple of the {jax.device_count()} device(s)')


def evaluate_run(workdir: str, *, split: str | None = None, examples: int = 0,
                 batch_size: int = 250, data_dir: str | None = None) -> dict:
  """Evaluates `workdir`'s final weights on `split`; returns (and records) the entry.

  Raises:
    KDError: the workdir holds no finished single run, the data is absent,
      or an argument is out of range.
  """
  _check_sizes(examples, batch_size)
  run = _Run(workdir, data_dir)
  split, tfds_split = run.split(split, examples)
  mesh = step.data_mesh()
  variables = feed.replicated(mesh, run.variables)
  predict = step.make_predict(run.model, mesh=mesh, mean=run.info.mean, std=run.info.std,
                              batch_size=batch_size)
  start = time.perf_counter()
  logits, labels = [], []
  for images, batch_labels in run.batches(tfds_split, batch_size):
    valid = len(batch_labels)
    logits.append(np.asarray(predict(variables, step.pad_to_multiple(images, batch_size)))[:valid])
    labels.append(batch_labels)
  if not logits:
    raise KDError(f'--split={tfds_split!r} of {run.config.dataset} holds no examples')
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  correct = logits.argmax(-1) == labels
  entry = {'split': tfds_split, 'examples': int(len(labels)), 'errors': int((~correct).sum()),
           'top1_accuracy': float(correct.mean()),
           'seconds': round(time.perf_counter() - start, 2)}
  if run.info.num_classes > results_lib.TOP5_MIN_CLASSES:
    entry['top5_accuracy'] = results_lib.top_k_accuracy(logits, labels, 5)
  run.record(EVALUATION_FILE, tfds_split, entry)
  results = run.results
  if (results.get('imported') and split == run.dataset.test_split and not examples
      and _is_writer()):
    results.update(test_accuracy=entry['top1_accuracy'], test_errors=entry['errors'],
                   test_evaluated_by='python -m kdjax.evaluate')
    if 'top5_accuracy' in entry:
      results['test_top5_accuracy'] = entry['top5_accuracy']
    report.write_json(os.path.join(run.workdir, workdir_lib.RESULTS_FILE), results)
  return entry


def _is_writer() -> bool:
  return jax.process_index() == 0


def attack_run(workdir: str, *, attack: str, eps: float, split: str | None = None,
               examples: int = 1000, batch_size: int = 100, data_dir: str | None = None,
               **options) -> dict:
  """Attacks `workdir`'s final weights on the first `examples` of `split`.

  The examples are those the run classifies correctly; labels are the true
  ones. `attack` is one of `ATTACK_NAMES` (see `attack_fn`); `options` go to
  it. Returns (and records in robustness.json under '<attack> eps=<eps>')
  the success rate among correctly classified examples, the accuracy under
  attack over all examples, and the perturbation sizes.
  """
  _check_sizes(examples, batch_size)
  if attack not in ATTACK_NAMES:
    raise KDError(f'--attack={attack!r}: known: {", ".join(ATTACK_NAMES)}')
  if not eps > 0 and attack not in ('cw_l2', 'jsma'):
    raise KDError(f'--eps={eps} must be > 0')
  run = _Run(workdir, data_dir)
  split, tfds_split = run.split(split, examples)
  logits_fn = attacks.model_logits_fn(run.model, run.variables, run.info.mean, run.info.std)
  method = attack_fn(attack, run.info.num_classes)
  start = time.perf_counter()
  total, measured = 0, []
  for index, (images, labels) in enumerate(run.batches(tfds_split, batch_size)):
    images = jnp.asarray(images, jnp.float32) / 255.0
    labels = jnp.asarray(labels)
    correct = np.asarray(attacks.predictions(logits_fn, images) == labels)
    total += len(labels)
    if not correct.any():
      continue
    images, labels = images[correct], labels[correct]
    adversarial, targets = method(logits_fn, images, labels, jax.random.PRNGKey(index),
                                  eps=eps, **options)
    measured.append(attacks.measure(logits_fn, images, adversarial,
                                    labels if targets is None else targets,
                                    targeted=targets is not None))
  if not total:
    raise KDError(f'--split={tfds_split!r} of {run.config.dataset} holds no examples')
  summary = attacks.combine(measured)
  entry = {'attack': attack, 'eps': eps, 'options': options, 'split': tfds_split,
           'examples': total, 'correct_before': summary['examples'],
           'success_rate': summary['success_rate'] or 0.0,
           'accuracy_under_attack': (summary['examples'] - summary['successes']) / total,
           **{k: summary[k] for k in ('mean_l0', 'mean_l2', 'mean_linf')},
           'seconds': round(time.perf_counter() - start, 2)}
  run.record(ROBUSTNESS_FILE, f'{attack} eps={eps:g}', entry)
  return entry


ATTACK_NAMES = ('fgsm', 'pgd', 'pgd_margin', 'cw_l2', 'jsma')


def attack_fn(name: str, num_classes: int):
  """Attack `name` as f(logits_fn, images, labels, key, eps, **options) ->
  (adversarial images, the targets of a targeted attack or None).

  'pgd_margin' is PGD on the logit margin; 'cw_l2' and 'jsma' take no eps;
  JSMA is targeted, at a class other than the label drawn with `key`
  (Papernot et al.'s success: the target is reached).
  """

  def jsma(f, x, y, key, eps, **options):
    del eps
    other = attacks.other_class(key, y, num_classes)
    return attacks.jsma(f, x, other, **options), other

  return {
      'fgsm': lambda f, x, y, key, eps, **o: (attacks.fgsm(f, x, y, eps=eps, **o), None),
      'pgd': lambda f, x, y, key, eps, **o: (attacks.pgd(f, x, y, key, eps=eps, **o), None),
      'pgd_margin': lambda f, x, y, key, eps, **o: (
          attacks.pgd(f, x, y, key, eps=eps, loss='margin', **o), None),
      'cw_l2': lambda f, x, y, key, eps, **o: (attacks.carlini_wagner_l2(f, x, y, **o), None),
      'jsma': jsma,
  }[name]


ROBUSTNESS_FILE = 'robustness.json'


def describe(entry: dict) -> str:
  line = (f'{entry["split"]}: top-1 {100 * entry["top1_accuracy"]:.2f}% '
          f'({entry["errors"]} errors of {entry["examples"]})')
  if 'top5_accuracy' in entry:
    line += f', top-5 {100 * entry["top5_accuracy"]:.2f}%'
  return line


def describe_attack(entry: dict) -> str:
  eps = '' if entry['attack'] in ('cw_l2', 'jsma') else f' eps={entry["eps"]:g}'
  sizes = ', '.join(f'{name} {entry[f"mean_{name}"]:.3g}' for name in ('l0', 'l2', 'linf')
                    if entry[f'mean_{name}'] is not None)
  return (f'{entry["split"]} under {entry["attack"]}{eps}: success '
          f'{100 * entry["success_rate"]:.2f}% of {entry["correct_before"]} correctly classified, '
          f'accuracy {100 * entry["accuracy_under_attack"]:.2f}%'
          + (f'; mean perturbation {sizes}' if sizes else ''))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kdjax.evaluate',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, help='a finished run directory')
  parser.add_argument('--split', default=None, help="a TFDS split (default: the test split)")
  parser.add_argument('--examples', type=int, default=None,
                      help='only the first N examples (default: all; 1000 under attack)')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='default 250 (100 under attack)')
  parser.add_argument('--data_dir', default=None, help='TFDS data directory')
  parser.add_argument('--attack', default=None, choices=ATTACK_NAMES,
                      help='evaluate under this attack; writes robustness.json')
  parser.add_argument('--eps', type=float, default=0.1, help='attack budget (L-inf or L2)')
  parser.add_argument('--norm', default='linf', choices=('linf', 'l2'))
  parser.add_argument('--steps', type=int, default=40, help='PGD iterations')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  try:
    if args.attack:
      options = {}
      if args.attack in ('fgsm', 'pgd', 'pgd_margin'):
        options['norm'] = args.norm
      if args.attack in ('pgd', 'pgd_margin'):
        if args.steps < 1:
          raise KDError(f'--steps={args.steps} must be >= 1')
        options['steps'] = args.steps
      entry = attack_run(args.workdir, attack=args.attack, eps=args.eps, split=args.split,
                         examples=1000 if args.examples is None else args.examples,
                         batch_size=args.batch_size or 100, data_dir=args.data_dir, **options)
      print(describe_attack(entry))
      return 0
    entry = evaluate_run(args.workdir, split=args.split, examples=args.examples or 0,
                         batch_size=args.batch_size or 250, data_dir=args.data_dir)
  except KDError as e:
    print(f'error: {str(e).strip().splitlines()[0]}', file=sys.stderr)
    return 2
  print(describe(entry))
  return 0


if __name__ == '__main__':
  sys.exit(main())
