r"""Be Your Own Teacher (Zhang et al., ICCV 2019): a ResNet trained plainly and with BYOT.

  python -m experiments.byot --preset=seed000 --workdir=runs/byot_seed000
  python -m experiments.byot --preset=paper --workdir=runs/byot_paper
  python -m experiments.byot --preset=cpu --dataset=fashion_mnist --seeds=3 \
      --workdir=runs/byot_fmnist

Two stages, each one run per seed: `plain` (the base ResNet on the labels)
and `byot` (the same ResNet with a shallow exit after each chosen stage,
`model.name='multi_exit'`, trained with `distill.objective='byot'`: every
shallow exit learns from the labels, the deepest exit's soft targets at
T = 3 and its feature map; kdjax.byot). The report gives, per exit, its
parameters and forward FLOPs up to it and its test accuracy (last epoch,
mean ± std over seeds), the ensemble of all exits, the deepest exit at the
epoch chosen on validation, and anytime inference (stop at the first exit
whose max softmax probability exceeds a threshold): accuracy against mean
FLOPs per example over a sweep of thresholds (`anytime.png`), with one
threshold chosen on validation. The paper's and seed 000's numbers stand
beside ours. Writes report.md, report.json, anytime.png and curves.png.

Presets:
  seed000  ResNet-50 (CIFAR stem, bottleneck blocks) on CIFAR-10, what seed
           000 trained ("ResNet50 Self-Distilled on Cifar10 0.9052, Baseline
           0.875"; CIFAR-10, not the CIFAR-100 of the issue's wording). The
           seed gives no recipe; this is the CIFAR recipe of a public BYOT
           PyTorch implementation, luanyunteng/pytorch-be-your-own-teacher
           (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 128, 200 epochs,
           /10 at epochs 75, 130 and 180).
  paper    ResNet-18 on CIFAR-100 with the same recipe, the paper's setting
           (exits 67.85 / 74.57 / 78.23 / 78.64 %).
  cpu      A ResNet-8 (He's CIFAR layout, widths 16/32/64, 3 stages, exits
           after stages 1 and 2) on 5,000 real Fashion-MNIST (or MNIST)
           training images, 3 epochs of Adam 1e-3, 3 seeds. Sized for 2 CPU
           cores: one epoch of one seed took 86 s (plain) and 122 s (BYOT) of
           wall time, compiling and evaluating included, on a 2-core machine
           at load 6.5; about 17 min for the preset at that load.
"""

import os

import numpy as np

from experiments import common
from kdjax import report

PRESETS = {
    'seed000': dict(recipe='byot', dataset='cifar10', epochs=200, seeds=1, base='resnet50',
                    exits=(1, 2, 3),
                    reference={'source': 'seed 000 (CIFAR-10, one run, exit not stated)',
                               'plain': 87.5, 'byot': 90.52}),
    'paper': dict(recipe='byot', dataset='cifar100', epochs=200, seeds=1, base='resnet18',
                  exits=(1, 2, 3),
                  reference={'source': 'Zhang et al. 2019 (CIFAR-100 ResNet-18)',
                             'exits': (67.85, 74.57, 78.23, 78.64)}),
    'cpu': dict(recipe='adam', dataset='fashion_mnist', epochs=3, seeds=3, train_examples=5000,
                base='resnet8', exits=(1, 2), reference={}),
}

# A threshold is chosen on validation: the cheapest (fewest mean FLOPs) whose
# validation accuracy is within this many points of the deepest exit's.
TOLERANCE_POINTS = 0.5


def _model_options(preset: dict) -> dict:
  return {'multi_exit': {'base': preset['base'], 'exits': tuple(preset['exits'])}}


def _results(run: dict) -> dict:
  return report.read_json(os.path.join(run['workdir'], 'results.json'))


def _mean_std(values) -> str:
  values = [100 * v for v in values]
  if len(values) == 1:
    return f'{values[0]:.2f}%'
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}%'


def _anytime_table(byot: list[dict], exits: list[dict]) -> tuple[list, dict, dict]:
  """Rows of the threshold sweep (mean over seeds), the choice made on validation, the curve."""
  evaluations = [r['exit_evaluation'] for r in byot]
  thresholds = [p['threshold'] for p in evaluations[0]['test']['anytime']]

  def mean(split, index, field):
    return float(np.mean([e[split]['anytime'][index][field] for e in evaluations]))

  deepest_validation = float(np.mean([e['validation']['exit_accuracy']['deepest']
                                      for e in evaluations]))
  candidates = [i for i in range(len(thresholds)) if 100 * mean('validation', i, 'accuracy')
                >= 100 * deepest_validation - TOLERANCE_POINTS]
  chosen = min(candidates, key=lambda i: (mean('validation', i, 'flops'), -thresholds[i]))
  rows, curve = [], {'threshold': [], 'test_accuracy': [], 'mflops': []}
  for i, threshold in enumerate(thresholds):
    fractions = np.mean([e['test']['anytime'][i]['exit_fractions'] for e in evaluations], axis=0)
    rows.append([f'{threshold:g}' + (' (chosen on validation)' if i == chosen else ''),
                 f'{100 * mean("validation", i, "accuracy"):.2f}%',
                 _mean_std([e['test']['anytime'][i]['accuracy'] for e in evaluations]),
                 f'{mean("test", i, "flops") / 1e6:.2f}',
                 ' / '.join(f'{100 * f:.0f}' for f in fractions)])
    curve['threshold'].append(threshold)
    curve['test_accuracy'].append(mean('test', i, 'accuracy'))
    curve['mflops'].append(mean('test', i, 'flops') / 1e6)
  choice = {'what': 'anytime threshold', 'chosen': {'threshold': thresholds[chosen]},
            'selected_on': 'validation', 'rule': f'fewest mean FLOPs with validation accuracy '
            f'within {TOLERANCE_POINTS} points of the deepest exit',
            'validation_accuracy': mean('validation', chosen, 'accuracy'),
            'test_accuracy': mean('test', chosen, 'accuracy'),
            'mflops': mean('test', chosen, 'flops') / 1e6,
            'deepest_mflops': exits[-1]['flops'] / 1e6}
  return rows, choice, curve


def _plot(path: str, curve: dict, exits: list[dict], byot: list[dict], plain_point, title: str):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4))
  ax.plot(curve['mflops'], [100 * a for a in curve['test_accuracy']], marker='.',
          label='BYOT anytime (threshold sweep)')
  accuracy = [np.mean([r['exit_evaluation']['test']['exit_accuracy'][e['name']] for r in byot])
              for e in exits]
  ax.plot([e['flops'] / 1e6 for e in exits], [100 * a for a in accuracy], 's',
          label='BYOT exits alone')
  ax.plot([plain_point[0] / 1e6], [100 * plain_point[1]], '^', label='plain network')
  ax.set_xlabel('mean forward MFLOPs per example (XLA count)')
  common.save_figure(fig, ax, path, title)


def body(stages: common.Stages, preset: dict) -> str:
  base, exits_at = preset['base'], tuple(preset['exits'])
  stages.setup.model_options = dict(stages.setup.model_options, **_model_options(preset))
  plain_stage = stages.alone('plain', base)
  byot_stage = stages.alone('byot', 'multi_exit', changes={'distill.objective': 'byot'})
  plain, byot = common.members(plain_stage), common.members(byot_stage)
  plain_results = [_results(r) for r in plain]
  byot_results = [_results(r) for r in byot]
  exits = byot_results[0]['exits']
  b = byot_results[0]['config']['byot']
  setting = (f'BYOT: soft weight {b["alpha"]:g}, temperature {b["temperature"]:g}, '
             f'feature weight {b["feature_weight"]:g}, T² {"on" if b["t_squared"] else "off"}')
  reference = preset['reference']
  ref_exits = reference.get('exits', ())
  rows = [[f'{base} plain', f'{plain_results[0]["params"]:,}',
           f'{plain_results[0]["flops_per_example"] / 1e6:.2f}',
           common.accuracy_text(plain, 'validation_accuracy'), common.accuracy_text(plain),
           common.accuracy_text(plain, 'test_accuracy_at_best_validation'),
           f'{reference["plain"]:.2f}%' if 'plain' in reference else '']]
  for i, e in enumerate(exits):
    name = e['name']
    test = [r['exit_evaluation']['test']['exit_accuracy'][name] for r in byot_results]
    validation = [r['exit_evaluation']['validation']['exit_accuracy'][name]
                  for r in byot_results]
    at_best = (common.accuracy_text(byot, 'test_accuracy_at_best_validation')
               if name == 'deepest' else '')
    ref = f'{ref_exits[i]:.2f}%' if i < len(ref_exits) and len(ref_exits) == len(exits) else ''
    if name == 'deepest' and 'byot' in reference:
      ref = f'{reference["byot"]:.2f}%'
    rows.append([f'BYOT {name}' + (f' (stage {name[4:]})' if name != 'deepest' else ''),
                 f'{e["params"]:,}', f'{e["flops"] / 1e6:.2f}', _mean_std(validation),
                 _mean_std(test), at_best, ref])
  rows.append(['BYOT ensemble of all exits (mean softmax)', f'{byot_results[0]["params"]:,}',
               f'{exits[-1]["flops"] / 1e6:.2f}',
               _mean_std([r['exit_evaluation']['validation']['ensemble_accuracy']
                          for r in byot_results]),
               _mean_std([r['exit_evaluation']['test']['ensemble_accuracy']
                          for r in byot_results]), '', ''])
  anytime_rows, choice, curve = _anytime_table(byot_results, exits)
  plain_point = (plain_results[0]['flops_per_example'],
                 float(np.mean([r['test_accuracy'] for r in plain_results])))
  _plot(os.path.join(stages.workdir, 'anytime.png'), curve, exits, byot_results, plain_point,
        f'{base} on {stages.setup.dataset}: accuracy against cost')
  common.plot_curves(os.path.join(stages.workdir, 'curves.png'),
                     {f'{base} plain': plain, 'multi_exit BYOT (deepest exit)': byot},
                     f'{base} on {stages.setup.dataset}')
  report_rows = [
      common.row(f'{base} alone', plain, stage='plain'),
      common.row(f'multi_exit ({base}, exits after stages {", ".join(map(str, exits_at))}) '
                 f'trained with {setting}', byot, stage='byot'),
  ]
  header = ['network / exit', 'parameters (up to the exit)', 'MFLOPs (up to the exit)',
            'validation accuracy', 'test accuracy (last epoch)',
            'test accuracy at the epoch chosen on validation',
            f'reported ({reference["source"]})' if reference else 'reported']
  data = {'exits': exits, 'anytime': curve, 'anytime_choice': choice, 'reference': reference,
          'per_exit_test_accuracy': {e['name']: [r['exit_evaluation']['test']['exit_accuracy'][
              e['name']] for r in byot_results] for e in exits},
          'plain_test_accuracy': [r['test_accuracy'] for r in plain_results],
          'ensemble_test_accuracy': [r['exit_evaluation']['test']['ensemble_accuracy']
                                     for r in byot_results]}
  notes = ('Per-exit, ensemble and anytime numbers are the last epoch\'s; the epoch chosen on '
           'validation applies to the deepest exit (the network\'s own head). MFLOPs are XLA\'s '
           'count per example (a multiply-add counts 2); an exit\'s count covers the stages up '
           'to it and every shallow head on the way (an anytime cascade). The anytime threshold '
           f'is chosen on validation ({choice["rule"]}); the test column only reports it.\n'
           'Figures: `anytime.png` (test accuracy against mean MFLOPs), `curves.png`.\n')
  return common.write_report(
      stages, title=f'Be Your Own Teacher: {base}, preset {preset["name"]}',
      command=common.command_line(),
      sections=[(f'{base} plain and with BYOT exits ({setting})', header, rows),
                ('Anytime inference: stop at the first exit whose max probability exceeds the '
                 'threshold (mean over seeds)',
                 ['threshold', 'validation accuracy', 'test accuracy', 'mean MFLOPs',
                  'share of test examples per exit (%)'], anytime_rows)],
      data=data, rows=report_rows, selections=[choice], notes=notes)


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='cpu')
