r"""Defensive distillation (Papernot et al. 2016) under attack, both sides of the story.

  python -m experiments.defensive_distillation --workdir=runs/defensive_mnist
  python -m experiments.defensive_distillation --preset=cifar10 --workdir=runs/defensive_cifar
  python -m experiments.defensive_distillation --quick --workdir=/tmp/ddq

For every T of the preset: a teacher trained with its softmax at temperature T
(`config.train_temperature`, `distill.objective='defensive'`; at T = 1 it is
the undefended network) and a student of the same architecture trained on
the teacher's soft labels at the same T (alpha = 1, no T² factor, as in the
paper). Every network is deployed at T = 1: evaluation and attacks see its
raw logits. Stages `teacher_T<T>` and `distilled_T<T>`.

Then the first `attack_examples` test images (those each network classifies
correctly are attacked, with their true labels) meet every attack of
kdjax.attacks: FGSM and PGD on the softmax probability (Papernot's
attacks), PGD on the log-softmax cross-entropy, PGD on the logit margin
(Carlini & Wagner's loss), C&W L2, and JSMA guided by the softmax
probabilities (Papernot's) and by the logits (targeted, a random other
class, the same for both, 14.5 % feature budget). Writes report.md/json with clean accuracy, attack
success and mean perturbation (L0/L2/L∞) per attack and T, success against
eps, the growth of the logits with T, transferability (examples crafted on
the undefended net against the most defended one, and the reverse), and
which attacks the defence stops; figures `success_vs_eps.png`,
`logit_norms.png`.

Presets (seed 001's recipe: SGD 0.01, momentum 0.9, Nesterov, weight decay
1e-6, batch 128, no augmentation; T ∈ {1, 2, 5, 10, 20, 40, 100}):
  mnist    papernot_mnist on MNIST, sized to finish in 45 minutes on 2 CPU
           cores: T in {1, 100}, 3 epochs (Papernot: 50), PGD 20 steps,
           C&W 4 x 50 Adam steps at learning rate 0.1 (Carlini & Wagner: 9 x
           1,000 at 0.01; at 0.01, 50 steps succeed on 5 % of the undefended
           net's first 100 images, at 0.1 on 95 %) and JSMA on the first 100
           test images, the success-vs-eps curves on the first 100, every
           other attack on 1,000.
  cifar10  papernot_cifar on CIFAR-10, all seven T, 50 epochs, PGD 20 steps,
           C&W 5 x 100 steps, every attack on 1,000 images.
"""

import os

import numpy as np
from absl import flags

from experiments import common
from kdjax import report

ATTACK_EXAMPLES = flags.DEFINE_integer(
    'attack_examples', 0, "Test images attacked per network (0: the preset's).")

TEMPERATURES = (1.0, 2.0, 5.0, 10.0, 20.0, 40.0, 100.0)
# --quick: every attack and figure on 16 images, with few iterations.
QUICK_EXAMPLES, QUICK_JSMA_EXAMPLES, QUICK_STEPS, QUICK_JSMA_GAMMA = 16, 8, 3, 0.02
PRESETS = {
    'mnist': dict(recipe='papernot', dataset='mnist', model='papernot_mnist', epochs=3,
                  temperatures=(1.0, 100.0),
                  attack_examples=1000, eps=0.3, curve_eps=(0.05, 0.1, 0.2, 0.3),
                  curve_examples=100, pgd_steps=20,
                  cw_steps=50, cw_binary_steps=4, cw_learning_rate=0.1, cw_examples=100, jsma_gamma=0.145,
                  jsma_examples=100,
                  reference={'papernot': 'JSMA success 95.89 % (undefended) → 0.45 % (T = 100)',
                             'seed001': '65–70 % of examples defended at eps 0.1 (FGSM, PGD)'}),
    'cifar10': dict(recipe='papernot', dataset='cifar10', model='papernot_cifar', epochs=50,
                    temperatures=TEMPERATURES, attack_examples=1000, eps=8 / 255,
                    curve_eps=(2 / 255, 4 / 255, 8 / 255, 16 / 255), curve_examples=1000,
                    pgd_steps=20, cw_steps=100, cw_binary_steps=5, cw_learning_rate=0.01,
                    cw_examples=1000,
                    jsma_gamma=0.145, jsma_examples=100,
                    reference={'papernot': 'JSMA success 87.89 % (undefended) → 5.11 % (T = 100)',
                               'seed001': 'FGSM and PGD at eps 0.1'}),
}


def _variables(workdir: str):
  from kdjax.train import checkpoint  # pylint: disable=import-outside-toplevel
  results = report.read_json(os.path.join(workdir, 'results.json'))
  return checkpoint.restore_variables(workdir, results['final_checkpoint_epoch'])


class Attacker:
  """The preset's attacks, each compiled once for the architecture and a fixed batch.

  Every network of the experiment shares the architecture, so its variables
  are an argument of the compiled programs, not a constant inside them.
  """

  def __init__(self, model, dataset, preset: dict, quick: bool, batch: int):
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from kdjax import attacks  # pylint: disable=import-outside-toplevel
    mean = jnp.asarray(dataset.mean, jnp.float32)
    std = jnp.asarray(dataset.std, jnp.float32)

    def apply(variables, images):
      return model.apply(variables, (images - mean) / std, train=False).astype(jnp.float32)

    self.batch = batch
    self.logits = jax.jit(apply)
    self.predict = jax.jit(lambda v, x: jnp.argmax(apply(v, x), -1))
    eps, steps = preset['eps'], QUICK_STEPS if quick else preset['pgd_steps']
    cw = dict(steps=QUICK_STEPS if quick else preset['cw_steps'],
              binary_steps=1 if quick else preset['cw_binary_steps'],
              learning_rate=preset['cw_learning_rate'])
    gamma = QUICK_JSMA_GAMMA if quick else preset['jsma_gamma']
    num_classes = dataset.num_classes

    def jsma(output):
      def attack(f, x, y, key):
        targets = attacks.other_class(key, y, num_classes)  # the same key: the same targets
        return attacks.jsma(f, x, targets, gamma=gamma, output=output), targets
      return attack

    suite = {
        'FGSM (softmax)': lambda f, x, y, k: (
            attacks.fgsm(f, x, y, eps=eps, loss='softmax_ce'), y),
        'PGD (softmax)': lambda f, x, y, k: (
            attacks.pgd(f, x, y, k, eps=eps, steps=steps, loss='softmax_ce'), y),
        'PGD (log-softmax CE)': lambda f, x, y, k: (
            attacks.pgd(f, x, y, k, eps=eps, steps=steps, loss='ce'), y),
        'PGD (logit margin)': lambda f, x, y, k: (
            attacks.pgd(f, x, y, k, eps=eps, steps=steps, loss='margin'), y),
        'C&W L2': lambda f, x, y, k: (attacks.carlini_wagner_l2(f, x, y, **cw), y),
        'JSMA (softmax)': jsma('probabilities'),
        'JSMA (logits)': jsma('logits'),
    }
    self.targeted = {'JSMA (softmax)', 'JSMA (logits)'}
    self.suite = {name: jax.jit(lambda v, x, y, k, attack=attack: attack(
        lambda images: apply(v, images), x, y, k)) for name, attack in suite.items()}
    self.pgd_at = {loss: jax.jit(lambda v, x, y, k, e, loss=loss: (attacks.pgd(
        lambda images: apply(v, images), x, y, k, eps=e, steps=steps, loss=loss), y))
                   for loss in ('softmax_ce', 'margin')}

  def run(self, fn, variables, images, labels, *, targeted: bool = False, seed: int = 0,
          **kwargs) -> dict:
    """`fn` on the images `variables` classify correctly, batch by batch (the last padded)."""
    import jax  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    from kdjax import attacks  # pylint: disable=import-outside-toplevel
    # One compiled shape per attack and size asked for, whatever the network gets right.
    batch = min(self.batch, len(labels))
    correct = np.asarray(self.predict(variables, images) == labels)
    images, labels = images[correct], labels[correct]
    measured, crafted = [], []
    for start in range(0, len(labels), batch):
      x, y = images[start:start + batch], labels[start:start + batch]
      valid = len(y)
      pad = batch - valid
      if pad:  # one compiled shape: repeat the last example
        x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])
        y = jnp.concatenate([y, jnp.repeat(y[-1:], pad, axis=0)])
      adversarial, aims = fn(variables, x, y, jax.random.PRNGKey(seed + start), **kwargs)
      predicted = self.predict(variables, adversarial)[:valid]  # on the whole batch's shape
      adversarial, aims, x = adversarial[:valid], aims[:valid], x[:valid]
      crafted.append(np.asarray(adversarial))
      measured.append(attacks.measure(None, x, adversarial, aims, targeted=targeted,
                                      predicted=predicted))
    summary = attacks.combine(measured)
    return {'attacked': summary['examples'], **summary,
            'adversarial': (jnp.asarray(np.concatenate(crafted)) if crafted else images),
            'correct': correct}


def _rate(value) -> str:
  return '' if value is None else f'{100 * value:.1f}%'


def body(stages: common.Stages, preset: dict) -> str:
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  setup, quick = stages.setup, stages.setup.quick
  temperatures = tuple(preset['temperatures'])
  examples = ATTACK_EXAMPLES.value or (QUICK_EXAMPLES if quick else preset['attack_examples'])
  if quick:
    preset = dict(preset, curve_eps=tuple(preset['curve_eps'])[-2:])
  teachers, students = _train(stages, preset, temperatures)
  # The networks attacked: the undefended one (trained at T = 1) and each distilled one.
  networks = {'undefended': teachers[temperatures[0]][0]['workdir'],
              **{f'distilled T={t:g}': students[t][0]['workdir'] for t in temperatures}}
  from kdjax import data, models  # pylint: disable=import-outside-toplevel
  dataset = data.load(setup.dataset, data_dir=setup.data_dir or None)
  model = models.create(preset['model'], num_classes=dataset.num_classes)
  attacker = Attacker(model, dataset, preset, quick, batch=min(100, examples))
  images = jnp.asarray(dataset.test.images[:examples], jnp.float32) / 255.0
  labels = jnp.asarray(dataset.test.labels[:examples])
  jsma_limit = QUICK_JSMA_EXAMPLES if quick else preset['jsma_examples']
  limits = {'JSMA (softmax)': jsma_limit, 'JSMA (logits)': jsma_limit,
            'C&W L2': min(examples, QUICK_JSMA_EXAMPLES if quick else preset['cw_examples'])}
  results, logit_norms, variables = _attack(attacker, networks, images, labels, limits,
                                            examples)
  curve_limit = examples if quick else min(examples, preset['curve_examples'])
  curves = _success_vs_eps(attacker, variables, images[:curve_limit], labels[:curve_limit],
                           preset)
  transfer = _transfer(attacker, variables, results, labels, temperatures[-1])
  _plot(stages.workdir, curves, logit_norms, temperatures)
  table = []
  for name, workdir in networks.items():
    accuracy = report.read_json(os.path.join(workdir, 'results.json'))['test_accuracy']
    table.append([name, f'{100 * accuracy:.2f}%', f'{logit_norms[name]:.1f}',
                  *[_rate(results[name][a]['success_rate']) for a in attacker.suite]])
  sizes = [[name, attack, *[('' if results[name][attack][f'mean_{k}'] is None
                             else f'{results[name][attack][f"mean_{k}"]:.3g}')
                            for k in ('l0', 'l2', 'linf')]]
           for name in networks for attack in attacker.suite]
  verdict = _verdict(results, attacker.suite, networks)
  rows = [common.row(f'teacher {preset["model"]}', teachers[temperatures[0]],
                     stage=f'teacher_T{temperatures[0]:g}')]
  rows += [common.row(f'distilled {preset["model"]} taught by {preset["model"]}, T={t:g}, '
                      f'alpha=1', students[t], stage=f'distilled_T{t:g}') for t in temperatures]
  steps = QUICK_STEPS if quick else preset['pgd_steps']
  eps_text = f'eps {preset["eps"]:g} (L∞) for FGSM and PGD ({steps} steps)'
  notes = (f'{verdict}\n\nAttacked: the first {examples} test images each network classifies '
           f'correctly (C&W: the first {limits["C&W L2"]}, JSMA: the first {jsma_limit}, '
           f'success against eps: the first {curve_limit}); '
           f'{eps_text}; success = the prediction changes (JSMA: the random target is '
           'reached). Nothing is chosen, so no validation split is used for a choice.\n\n'
           f'Published: Papernot et al. 2016, {preset["reference"]["papernot"]}; seed 001, '
           f'{preset["reference"]["seed001"]}.\n')
  return common.write_report(
      stages, title=f'Defensive distillation under attack, preset {preset["name"]}',
      command=common.command_line(),
      sections=[('Clean accuracy, logit size and attack success (deployed at T = 1)',
                 ['network', 'test accuracy', 'mean ‖logits‖₂', *attacker.suite], table),
                ('Mean perturbation of successful attacks',
                 ['network', 'attack', 'L0', 'L2', 'L∞'], sizes),
                ('Transferability (crafted on one, tested on the other)',
                 ['crafted on', 'tested on', 'attack', 'success'], transfer)],
      data={'temperatures': list(temperatures), 'logit_norms': logit_norms,
            'attacks': {n: {a: {k: v for k, v in r.items() if k not in ('adversarial', 'correct')}
                            for a, r in per.items()} for n, per in results.items()},
            'success_vs_eps': curves, 'transfer': transfer, 'verdict': verdict,
            'attack_examples': examples},
      rows=rows, notes=notes, seeds=1)


def _train(stages: common.Stages, preset: dict, temperatures) -> tuple[dict, dict]:
  """Per temperature, a teacher trained at T and a network distilled from it at T: their
  member rows, by T."""
  plain = {'augment.max_shift': 0, 'augment.flip': False, 'distill.objective': 'defensive'}
  teachers, students = {}, {}
  for t in temperatures:
    teachers[t] = common.members(stages.alone(
        f'teacher_T{t:g}', preset['model'], seeds=1, changes=dict(plain, train_temperature=t)))
    students[t] = common.members(stages.distill(
        f'distilled_T{t:g}', preset['model'], stages.teacher_of(f'teacher_T{t:g}'),
        temperatures=(t,), alphas=(1.0,), seeds=1, changes=dict(plain, train_temperature=t)))
  return teachers, students


def _attack(attacker: Attacker, networks: dict, images, labels, limits: dict,
            examples: int) -> tuple[dict, dict, dict]:
  """Every attack of the suite on every network: (results, mean logit norms, variables),
  each by network name."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  results, logit_norms, variables = {}, {}, {}
  for name, workdir in networks.items():
    variables[name] = _variables(workdir)
    logit_norms[name] = float(jnp.mean(jnp.linalg.norm(
        attacker.logits(variables[name], images), axis=-1)))
    print(f'== attacks on {name} ==', flush=True)
    results[name] = {}
    for attack, fn in attacker.suite.items():
      limit = limits.get(attack, examples)
      results[name][attack] = attacker.run(fn, variables[name], images[:limit], labels[:limit],
                                           targeted=attack in attacker.targeted)
  return results, logit_norms, variables


def _success_vs_eps(attacker: Attacker, variables: dict, images, labels, preset: dict) -> dict:
  """Success of PGD on the softmax probability and on the logit margin at each eps."""
  out = {name: {loss: [attacker.run(attacker.pgd_at[loss], v, images, labels, seed=1,
                                    e=eps)['success_rate'] for eps in preset['curve_eps']]
                for loss in attacker.pgd_at}
         for name, v in variables.items()}
  return {'eps': list(preset['curve_eps']), 'success': out}


def _plot(workdir: str, curves: dict, logit_norms: dict, temperatures) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
  for ax, loss, title in zip(axes, ('softmax_ce', 'margin'),
                             ('PGD on the softmax probability', 'PGD on the logit margin')):
    for name, by_loss in curves['success'].items():
      ax.plot(curves['eps'], [100 * (v or 0) for v in by_loss[loss]], marker='o', label=name)
    ax.set(title=title, xlabel='eps (L∞)', ylabel='attack success (%)')
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'success_vs_eps.png'), dpi=120)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(5, 4))
  ax.plot(temperatures, [logit_norms[f'distilled T={t:g}'] for t in temperatures], marker='o')
  ax.set(xscale='log', xlabel='training temperature T', ylabel='mean ‖logits‖₂ at T = 1',
         title='Logits grow with T')
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(os.path.join(workdir, 'logit_norms.png'), dpi=120)
  plt.close(fig)


def _transfer(attacker: Attacker, variables: dict, results: dict, labels,
              most: float) -> list[list[str]]:
  """PGD-margin examples crafted on one network tested on the other, both ways."""
  defended = f'distilled T={most:g}'
  rows = []
  for source, target in (('undefended', defended), (defended, 'undefended')):
    crafted = results[source]['PGD (logit margin)']
    kept = labels[crafted['correct']]
    fooled = np.asarray(attacker.predict(variables[target], crafted['adversarial']) != kept)
    rows.append([source, target, 'PGD (logit margin)',
                 _rate(float(fooled.mean()) if len(kept) else None)])
  return rows


def _verdict(results: dict, suite: dict, networks: dict) -> str:
  """Which attacks the most defended network stops: success ≤ 10 % there, ≥ 50 % undefended."""
  most = list(networks)[-1]
  stopped, not_stopped = [], []
  for attack in suite:
    before, after = (results['undefended'][attack]['success_rate'],
                     results[most][attack]['success_rate'])
    if before is None or after is None:
      continue
    line = f'{attack} ({_rate(before)} → {_rate(after)})'
    (stopped if after <= 0.1 and before >= 0.5 else not_stopped).append(line)
  return (f'Against the {most} network, the defence stops: {", ".join(stopped) or "none"}. '
          f'It does not stop: {", ".join(not_stopped) or "none"}.')


if __name__ == '__main__':
  common.launch(PRESETS, body, default_preset='mnist')
