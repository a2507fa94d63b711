r"""Self-distillation (born-again networks): generation k+1 is taught by generation k.

  python -m experiments.self_kd --preset=seed002 --workdir=runs/self_kd_seed002
  python -m experiments.self_kd --preset=cpu --dataset=fashion_mnist --workdir=runs/self_kd_fmnist

Teacher and student share the architecture, the recipe and the data; only
the soft targets differ (Furlanello et al. 2018). Generation 0 is trained on
the labels (one run per seed, vectorised); for each seed s, generation k+1
of chain s is distilled from generation k of chain s, for `--generations`
generations. Stages: `gen0`, then `gen<k>_seed<s>`. Writes report.md,
report.json and curves.png.

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

PRESETS = {
    'seed002': dict(dataset='cifar10', epochs=200, model='resnet18', generations=1,
                    reference={1: '+1.0 / +2.98 points (seed 002, small / large model)'}),
    'cpu': dict(recipe='adam', dataset='fashion_mnist',
                epochs=6, seeds=3, train_examples=10000,
                model='lightnn', generations=2, reference={}),
}


def body(stages: common.Stages, preset: dict) -> str:
  if GENERATIONS.value < 0:
    raise ConfigError(f'--generations={GENERATIONS.value} must be >= 0')
  generations = GENERATIONS.value or preset['generations']
  seeds = stages.setup.seeds
  model = preset['model']
  gen0 = common.members(stages.alone('gen0', model))
  chains = [[row] for row in gen0]  # chains[s][k]: generation k of seed s
  for k in range(1, generations + 1):
    for s in range(seeds):
      teacher = chains[s][k - 1]['workdir']
      stage = stages.distill(f'gen{k}_seed{s}', model, teacher,
                             temperatures=(common.TEMPERATURE.value,),
                             alphas=(common.ALPHA.value,),
                             seeds=1, seed=s)
      chains[s].append(common.members(stage)[0])
  base = common.mean_accuracy(gen0)
  rows, data, curves = [], {'generations': []}, {}
  for k in range(generations + 1):
    runs = [chain[k] for chain in chains]
    gain = 100 * (common.mean_accuracy(runs) - base)
    rows.append([f'generation {k}' + (' (labels only)' if k == 0 else ' (taught by k-1)'),
                 common.accuracy_text(runs), '' if k == 0 else f'{gain:+.2f}',
                 preset['reference'].get(k, ''),
                 '`gen0`' if k == 0 else f'`gen{k}_seed*`'])
    data['generations'].append([r['test_accuracy'] for r in runs])
    curves[f'generation {k}'] = runs
  common.plot_curves(f'{stages.workdir}/curves.png', curves,
                     f'born-again {model} on {stages.setup.dataset}')
  return common.write_report(
      stages, title=f'Self-distillation of {model}, preset {preset["name"]}',
      command=common.command_line(),
      sections=[(f'{model}: each generation taught by the one before '
                 f'(T={common.TEMPERATURE.value:g}, alpha={common.ALPHA.value:g})',
                 ['generation', 'test accuracy', 'gain over gen 0 (points)', 'seed reports',
                  'sub-workdir'], rows)],
      data=dict(data, temperature=common.TEMPERATURE.value, alpha=common.ALPHA.value),
      notes='Figure: `curves.png`.\n')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='seed002')
