r"""Self-distillation (born-again networks): generation k+1 is taught by generation k.

  python -m experiments.self_kd --preset=seed002 --workdir=runs/self_kd_seed002
  python -m experiments.self_kd --preset=cpu --dataset=fashion_mnist --workdir=runs/self_kd_fmnist

Teacher and student share the architecture, the recipe and the data; only
the soft targets differ (Furlanello et al. 2018). Generation 0 is trained on
the labels (one run per seed, vectorised); for each seed s, generation k+1
of chain s is distilled from generation k of chain s, for `--generations`
generations. Each generation has a seed of its own (chain seed + 1000·k) for
its initialisation, dropout, augmentation and data order; `--same_init` (an
ablation, labelled so) keeps the chain's seed, as its teacher had. Stages:
`gen0`, then `gen<k>_seed<s>` (`gen<k>_seed<s>_same_init`). Writes
report.md, report.json and curves.png.

Presets:
  seed002  ResNet-18 on CIFAR-10 (the seed reports +1.0 and +2.98 points
           for its small and large models after one round).
  cpu      LightNN on 10,000 Fashion-MNIST training images, 2 generations
           after the first, 3 seeds.
Seed 000's "be your own teacher" (shallow classifiers inside one ResNet-50)
is a different method and is not what this launcher runs.
"""

from absl import flags

from experiments import common
from kdjax.errors import ConfigError

GENERATIONS = flags.DEFINE_integer('generations', 0,
                                   "Distilled generations after gen0 (0: the preset's).")
SAME_INIT = flags.DEFINE_bool(
    'same_init', False, "Ablation: generation k+1 reuses its teacher's seed (initialisation, "
    'dropout, augmentation and data order) instead of a seed of its own.')

# Generation k of chain s trains with seed s + GENERATION_SEED_STRIDE · k.
GENERATION_SEED_STRIDE = 1000

PRESETS = {
    'seed002': dict(dataset='cifar10', epochs=200, model='resnet18', generations=1,
                    reference={1: '+1.0 / +2.98 points (seed 002, small / large model)'}),
    'cpu': dict(recipe='adam', dataset='fashion_mnist',
                epochs=6, seeds=3, train_examples=10000,
                model='lightnn', generations=2, reference={}),
}


def generation_seed(chain: int, generation: int, same_init: bool) -> int:
  """The seed of generation `generation` of chain `chain` (also its data seed).

  Each generation gets its own initialisation, dropout, augmentation and data
  order, so what a student shares with its teacher is the soft targets alone;
  `same_init` (an ablation) keeps the chain's seed for every generation.
  """
  return chain if same_init else chain + GENERATION_SEED_STRIDE * generation


def body(stages: common.Stages, preset: dict) -> str:
  if GENERATIONS.value < 0:
    raise ConfigError(f'--generations={GENERATIONS.value} must be >= 0')
  generations = GENERATIONS.value or preset['generations']
  same_init = preset.get('same_init', SAME_INIT.value)
  seeds = stages.setup.seeds
  model = preset['model']
  gen0 = common.members(stages.alone('gen0', model))
  chains = [[row] for row in gen0]  # chains[s][k]: generation k of seed s
  suffix = '_same_init' if same_init else ''
  for k in range(1, generations + 1):
    for s in range(seeds):
      teacher = chains[s][k - 1]['workdir']
      stage = stages.distill(f'gen{k}_seed{s}{suffix}', model, teacher,
                             temperatures=(common.TEMPERATURE.value,),
                             alphas=(common.ALPHA.value,),
                             seeds=1, seed=generation_seed(s, k, same_init))
      chains[s].append(common.members(stage)[0])
  base = common.mean_accuracy(gen0)
  setting = f'T={common.TEMPERATURE.value:g}, alpha={common.ALPHA.value:g}'
  seeding = ("same seed as its teacher (ablation: --same_init)" if same_init else
             f'own seed: chain seed + {GENERATION_SEED_STRIDE}·k')
  rows, data, curves, report_rows = [], {'generations': []}, {}, []
  for k in range(generations + 1):
    runs = [chain[k] for chain in chains]
    gain = 100 * (common.mean_accuracy(runs) - base)
    label = (f'{model} generation 0 alone' if k == 0 else
             f'{model} generation {k} taught by generation {k - 1}, {setting}')
    report_rows.append(common.row(label, runs, generation=k, same_init=same_init and k > 0,
                                  stage='gen0' if k == 0 else f'gen{k}_seed*{suffix}'))
    rows.append([f'generation {k}' + (' (labels only)' if k == 0 else
                                      f' (taught by k-1; {seeding})'),
                 common.accuracy_text(runs), '' if k == 0 else f'{gain:+.2f}',
                 preset['reference'].get(k, ''),
                 '`gen0`' if k == 0 else f'`gen{k}_seed*{suffix}`'])
    data['generations'].append([r['test_accuracy'] for r in runs])
    curves[f'generation {k}'] = runs
  common.plot_curves(f'{stages.workdir}/curves.png', curves,
                     f'born-again {model} on {stages.setup.dataset}')
  return common.write_report(
      stages, title=f'Self-distillation of {model}, preset {preset["name"]}'
      + (' (ablation: same init)' if same_init else ''),
      command=common.command_line(),
      sections=[(f'{model}: each generation taught by the one before ({setting}; '
                 f'each generation: {seeding})',
                 ['generation', 'test accuracy', 'gain over gen 0 (points)', 'seed reports',
                  'sub-workdir'], rows)],
      data=dict(data, temperature=common.TEMPERATURE.value, alpha=common.ALPHA.value,
                same_init=same_init),
      rows=report_rows, notes='Nothing is chosen: every generation is reported.\n'
      'Figure: `curves.png`.\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='seed002')
