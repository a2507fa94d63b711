r"""Online distillation: K students that teach each other, against K trained apart.

  python -m experiments.online --preset=cpu --workdir=runs/online_cpu
  python -m experiments.online --preset=mnist --workdir=runs/online_mnist
  python -m experiments.online --preset=fashion_mnist --workdir=runs/online_fmnist

Three kinds of cohort of K students (`--seeds`, one member per seed), each trained as
one vectorised program (kdjax.online), `--cohorts` cohorts of each:

  independent  K students, each on the labels alone (a plain seed sweep);
  dml          deep mutual learning (Zhang et al. 2018): each member minimises
               CE + weight · T² · KL(mean of the others' predictions, detached ‖ own);
  codistill    codistillation (Anil et al. 2018): the same, the others' predictions
               from copies of their weights refreshed every `refresh_steps` steps.

Within a cohort the members differ in their initialisation, dropout and augmentation
(their seeds) and see the same batches (`sweep.couple_data_seed=False`, which online
distillation needs); cohort c of every kind uses seeds c·K … c·K + K − 1 and data seed
c·K, so the three kinds see the same data and start from the same weights. The report
gives, per kind, the members' test accuracy (last epoch, and at the epoch chosen on each
member's validation accuracy), and the cohort's ensemble (the mean of its members'
softmax outputs), mean ± std over members and over cohorts; the kind whose members (and
whose ensembles) score best on validation is chosen on validation. Writes report.md,
report.json and curves.png; every member keeps a complete run directory
(`<kind>_c<c>/members/seed<s>`), usable as a teacher.

Presets (Adam 1e-3, batch 128, translations of up to 2 pixels, validation 10 % of the
training split):
  mnist          Hinton's 800-800 MLP on MNIST, 10 epochs, K = 3, 2 cohorts (59.8 min
                 on 2 CPU cores shared with other work).
  fashion_mnist  the same on Fashion-MNIST.
  cpu            a 256-256 MLP on 10,000 Fashion-MNIST training images, 10 epochs,
                 K = 3, 3 cohorts (3.4 min on 2 shared CPU cores).
"""

import os

import numpy as np
from absl import flags

from experiments import common
from kdjax import report
from kdjax.errors import ConfigError

COHORTS = flags.DEFINE_integer('cohorts', 0, "Cohorts of each kind (0: the preset's).")

PRESETS = {
    'mnist': dict(recipe='adam', dataset='mnist', epochs=10, seeds=3, cohorts=2,
                  hidden=(800, 800), refresh_steps=200, weight=1.0, temperature=1.0),
    'fashion_mnist': dict(recipe='adam', dataset='fashion_mnist', epochs=10, seeds=3,
                          cohorts=2, hidden=(800, 800), refresh_steps=200, weight=1.0,
                          temperature=1.0),
    'cpu': dict(recipe='adam', dataset='fashion_mnist', epochs=10, seeds=3, cohorts=3,
                train_examples=10000, hidden=(256, 256), refresh_steps=50, weight=1.0,
                temperature=1.0),
}

KINDS = ('independent', 'dml', 'codistill')
LABELS = {'independent': 'K independent students (labels alone)',
          'dml': 'DML cohort (Zhang et al. 2018)',
          'codistill': 'codistilled cohort (Anil et al. 2018)'}


def _changes(kind: str, preset: dict) -> dict:
  """The config fields of a cohort of `kind` (beyond the seeds)."""
  changes = {'sweep.couple_data_seed': False, 'sweep.mode': 'vmap'}
  if kind != 'independent':
    changes.update({'online.kind': kind, 'online.weight': float(preset['weight']),
                    'online.temperature': float(preset['temperature']),
                    'online.refresh_steps': int(preset['refresh_steps'])})
  return changes


def ensemble(rows: list[dict], labels: dict) -> dict:
  """Accuracy of the mean of the members' softmax outputs, per split in `labels`."""
  out = {}
  for split, split_labels in labels.items():
    probs = []
    for row in rows:
      with np.load(os.path.join(row['workdir'], 'logits.npz')) as logits:
        split_logits = logits[split].astype(np.float64)
      if len(split_logits) != len(split_labels):
        raise ConfigError(f'{row["workdir"]}: {len(split_logits)} {split} logits for '
                          f'{len(split_labels)} labels')
      shifted = np.exp(split_logits - split_logits.max(-1, keepdims=True))
      probs.append(shifted / shifted.sum(-1, keepdims=True))
    out[f'{split}_accuracy'] = float(np.mean(np.mean(probs, 0).argmax(-1) == split_labels))
  return out


def _labels(stages: common.Stages) -> dict:
  from kdjax import data as data_lib
  dataset = data_lib.load(stages.setup.dataset, data_dir=stages.setup.data_dir or None,
                          validation_fraction=stages.setup.validation_fraction,
                          validation_seed=common.VALIDATION_SEED)
  return {'validation': dataset.validation.labels, 'test': dataset.test.labels}


def _train(stages: common.Stages, preset: dict, cohorts: int) -> dict:
  """Every cohort of every kind: {kind: [member rows of cohort c, ...]}."""
  k = stages.setup.seeds
  if k < 2:
    raise ConfigError(f'--seeds={k}: a cohort needs at least two members')
  stages.setup.model_options = dict(stages.setup.model_options,
                                    mlp={'hidden': tuple(preset['hidden'])})
  runs = {kind: [] for kind in KINDS}
  for c in range(cohorts):
    for kind in KINDS:
      result = stages.alone(f'{kind}_c{c}', 'mlp', seed=c * k,
                            changes=_changes(kind, preset))
      runs[kind].append(common.members(result))
  return runs


def _mean_std(values) -> str:
  values = [100 * v for v in values]
  if len(values) == 1:
    return f'{values[0]:.2f}%'
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}%'


def body(stages: common.Stages, preset: dict) -> str:
  if COHORTS.value < 0:
    raise ConfigError(f'--cohorts={COHORTS.value} must be >= 0')
  cohorts = COHORTS.value or (1 if stages.setup.quick else preset['cohorts'])
  if stages.setup.quick:  # a few steps in all: the copies are still refreshed in them
    preset = dict(preset, refresh_steps=min(preset['refresh_steps'], 2))
  runs = _train(stages, preset, cohorts)
  labels = _labels(stages)
  ensembles = {kind: [ensemble(rows, labels) for rows in runs[kind]] for kind in KINDS}
  flat = {kind: [row for rows in runs[kind] for row in rows] for kind in KINDS}
  base = np.mean([r['test_accuracy'] for r in flat['independent']])
  table, report_rows, data, curves = [], [], {'kinds': {}}, {}
  for kind in KINDS:
    members, cohort_ensembles = flat[kind], ensembles[kind]
    gain = 100 * (np.mean([r['test_accuracy'] for r in members]) - base)
    table.append([LABELS[kind], common.accuracy_text(members, 'validation_accuracy'),
                  common.accuracy_text(members),
                  common.accuracy_text(members, 'test_accuracy_at_best_validation'),
                  '' if kind == 'independent' else f'{gain:+.2f}',
                  _mean_std([e['validation_accuracy'] for e in cohort_ensembles]),
                  _mean_std([e['test_accuracy'] for e in cohort_ensembles]),
                  f'`{kind}_c*`'])
    report_rows.append(common.row(f'{LABELS[kind]}: mlp members', members, stage=f'{kind}_c*',
                                  online=None if kind == 'independent' else kind))
    data['kinds'][kind] = {
        'members_test': [r['test_accuracy'] for r in members],
        'members_validation': [r['validation_accuracy'] for r in members],
        'members_test_at_best_validation': [r['test_accuracy_at_best_validation']
                                            for r in members],
        'ensembles': cohort_ensembles}
    curves[LABELS[kind]] = members
  _, member_choice, _ = common.select('the kind of cohort (its members)',
                                      {(kind,): flat[kind] for kind in KINDS}, ('kind',))
  _, ensemble_choice, _ = common.select(
      'the kind of cohort (its ensembles)',
      {(kind,): ensembles[kind] for kind in KINDS}, ('kind',))
  common.plot_curves(os.path.join(stages.workdir, 'curves.png'), curves,
                     f'online distillation on {stages.setup.dataset} (mean of members)')
  hidden = '-'.join(str(h) for h in preset['hidden'])
  setting = (f'{stages.setup.seeds} members per cohort, {cohorts} cohort(s) per kind; '
             f'online weight {preset["weight"]:g}, temperature {preset["temperature"]:g}, '
             f'codistillation refresh every {preset["refresh_steps"]} steps')
  return common.write_report(
      stages, title=f'Online distillation of {hidden} MLPs, preset {preset["name"]}',
      command=common.command_line(),
      sections=[(f'Cohorts of {hidden} MLPs ({setting})',
                 ['cohort', 'members: validation', 'members: test (last epoch)',
                  'members: test at the epoch chosen on validation',
                  'members: gain over independent (points)', 'ensemble: validation',
                  'ensemble: test', 'sub-workdirs'], table)],
      data=dict(data, cohorts=cohorts, members_per_cohort=stages.setup.seeds,
                hidden=list(preset['hidden']), weight=preset['weight'],
                temperature=preset['temperature'], refresh_steps=preset['refresh_steps']),
      rows=report_rows, selections=[member_choice, ensemble_choice],
      notes='Members: mean ± std over every member of every cohort of the kind; ensembles: '
      'mean ± std over the cohorts (the ensemble of a cohort is the mean of its members\' '
      'softmax outputs at T = 1). The members of a cohort see the same batches; the three '
      'kinds share seeds and data order cohort by cohort.\nFigure: `curves.png`.\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
