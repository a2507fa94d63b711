"""Attacks (kdjax/attacks.py) on a small undefended MNIST network trained here."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import attacks, data, models
from kdjax import checks
from kdjax import config as config_lib
from kdjax.train import checkpoint, loop

EXAMPLES = 200


@pytest.fixture(scope='module')
def mnist_model(mnist_data_dir, tmp_path_factory):
  """(logits_fn, images in [0, 1], labels, workdir): an MLP of about 94 % on real MNIST."""
  workdir = str(tmp_path_factory.mktemp('attacked') / 'run')
  config = config_lib.override(config_lib.default(), {
      'data_dir': mnist_data_dir, 'model.hidden': (128,),
      'augment.max_shift': 0, 'train_examples': 20_000,
      'num_epochs': 2})
  results = loop.train_and_evaluate(config, workdir)
  assert results['test_accuracy'] > 0.93
  model = models.from_config(config.model, num_classes=10)
  variables = checkpoint.restore_variables(workdir, results['final_checkpoint_epoch'])
  dataset = data.load('mnist', data_dir=mnist_data_dir)
  logits_fn = attacks.model_logits_fn(model, variables, dataset.mean, dataset.std)
  images = jnp.asarray(dataset.test.images[:EXAMPLES], jnp.float32) / 255.0
  labels = jnp.asarray(dataset.test.labels[:EXAMPLES])
  return logits_fn, images, labels, workdir


def test_fgsm_moves_every_feature_by_exactly_eps(mnist_model):
  logits_fn, images, labels, _ = mnist_model
  inside = 0.3 + 0.4 * images  # away from the range's ends: nothing is clipped
  eps = 0.1
  adversarial = attacks.fgsm(logits_fn, inside, labels, eps=eps)
  np.testing.assert_allclose(np.abs(np.asarray(adversarial - inside)), eps, rtol=1e-5)
  l2 = attacks.fgsm(logits_fn, inside, labels, eps=1.5, norm='l2')
  norms = np.sqrt(np.sum(np.square(np.asarray(l2 - inside)).reshape(EXAMPLES, -1), -1))
  np.testing.assert_allclose(norms, 1.5, rtol=1e-4)
  # On real images the step is clipped to [0, 1] and still raises the loss.
  real = attacks.fgsm(logits_fn, images, labels, eps=eps)
  assert float(real.min()) >= 0 and float(real.max()) <= 1
  loss = lambda x: float(jnp.mean(attacks.attack_loss(logits_fn(x), labels, loss='ce',
                                                       targeted=False)))
  assert loss(real) > loss(images) + 1.0


@pytest.mark.parametrize('norm, eps', [('linf', 0.1), ('l2', 1.0)])
def test_pgd_stays_in_the_ball_and_the_data_range(mnist_model, norm, eps):
  logits_fn, images, labels, _ = mnist_model
  adversarial = np.asarray(attacks.pgd(logits_fn, images, labels, jax.random.PRNGKey(0),
                                       eps=eps, steps=10, norm=norm))
  delta = (adversarial - np.asarray(images)).reshape(EXAMPLES, -1)
  size = np.abs(delta).max(-1) if norm == 'linf' else np.sqrt(np.square(delta).sum(-1))
  assert size.max() <= eps * (1 + 1e-5) and adversarial.min() >= 0 and adversarial.max() <= 1
  assert size.mean() > 0.5 * eps  # it moved


def test_pgd_at_eps_03_breaks_an_undefended_network(mnist_model):
  logits_fn, images, labels, _ = mnist_model
  adversarial = attacks.pgd(logits_fn, images, labels, jax.random.PRNGKey(1), eps=0.3, steps=20)
  result = attacks.measure(logits_fn, images, adversarial, labels)
  assert result['success_rate'] > 0.9, result
  assert result['mean_linf'] <= 0.3 + 1e-6


def test_attacks_are_deterministic_for_a_key(mnist_model):
  logits_fn, images, labels, _ = mnist_model
  run = lambda seed: np.asarray(attacks.pgd(logits_fn, images[:20], labels[:20],
                                            jax.random.PRNGKey(seed), eps=0.1, steps=5))
  assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))


def test_margin_attack_survives_a_saturated_softmax(mnist_model):
  """Carlini & Wagner's point in miniature: logits × 100 saturate the softmax, the
  gradient of its probability is exactly zero and FGSM on it (Papernot's
  attack) stands still; the logit margin's gradient does not vanish."""
  logits_fn, images, labels, _ = mnist_model
  saturated = lambda x: 100.0 * logits_fn(x)
  correct = np.asarray(attacks.predictions(saturated, images) == labels)
  images, labels = images[correct], labels[correct]
  fgsm = attacks.fgsm(saturated, images, labels, eps=0.2, loss='softmax_ce')
  plain = attacks.measure(saturated, images, fgsm, labels)
  margin = attacks.fgsm(saturated, images, labels, eps=0.2, loss='margin')
  by_margin = attacks.measure(saturated, images, margin, labels)
  assert plain['success_rate'] < 0.1 < 0.5 < by_margin['success_rate'], (plain, by_margin)
  pgd = attacks.pgd(saturated, images, labels, jax.random.PRNGKey(0), eps=0.2, steps=20,
                    loss='margin')
  assert attacks.measure(saturated, images, pgd, labels)['success_rate'] > 0.9


def test_carlini_wagner_finds_small_l2_perturbations(mnist_model):
  logits_fn, images, labels, _ = mnist_model
  images, labels = images[:50], labels[:50]
  adversarial = attacks.carlini_wagner_l2(logits_fn, images, labels, steps=50, binary_steps=4,
                                          learning_rate=0.05, initial_c=1.0)
  result = attacks.measure(logits_fn, images, adversarial, labels)
  assert result['success_rate'] > 0.9, result
  # Smaller than the L2 size of a successful eps = 0.3 L∞ PGD step (~5 on MNIST).
  assert result['mean_l2'] < 2.5, result
  assert float(adversarial.min()) >= 0 and float(adversarial.max()) <= 1


@pytest.mark.slow  # seconds of compiling: in `make test-all`
def test_jsma_stays_within_its_feature_budget(mnist_model):
  logits_fn, images, labels, _ = mnist_model
  images, labels = images[:20], labels[:20]
  targets = (labels + 1) % 10
  gamma = 0.1
  adversarial = attacks.jsma(logits_fn, images, targets, gamma=gamma)
  result = attacks.measure(logits_fn, images, adversarial, targets, targeted=True)
  changed = np.sum(np.abs(np.asarray(adversarial - images)).reshape(20, -1) > 1e-6, -1)
  budget = 2 * (int(gamma * 784) // 2)
  assert changed.max() <= budget, changed
  assert result['success_rate'] > 0.5, result
  assert np.all(np.asarray(adversarial) >= np.asarray(images))  # theta = +1 only raises


@pytest.mark.slow  # seconds of compiling: in `make test-all`
def test_jsma_on_the_probabilities_stops_where_the_softmax_saturates(mnist_model):
  """Papernot's JSMA follows the softmax's derivative: it works on the plain
  network, stands still on logits x 100 (every derivative is 0 in float32),
  and the same search on the logits is not fooled by the scale."""
  logits_fn, images, labels, _ = mnist_model
  images, labels = images[:20], labels[:20]
  targets = (labels + 1) % 10
  saturated = lambda x: 100.0 * logits_fn(x)

  def success(fn, output):
    adversarial = attacks.jsma(fn, images, targets, gamma=0.1, output=output)
    return attacks.measure(fn, images, adversarial, targets, targeted=True)

  assert success(logits_fn, 'probabilities')['success_rate'] > 0.5
  stuck = success(saturated, 'probabilities')
  assert stuck['success_rate'] <= 0.1, stuck
  assert success(saturated, 'logits')['success_rate'] > 0.5
  with pytest.raises(ValueError, match='output'):
    attacks.jsma(logits_fn, images, targets, output='features')


def test_pgd_on_a_saturated_softmax_stays_finite(mnist_model):
  """−log of a probability that underflowed to 0 has no gradient, not a NaN one."""
  logits_fn, images, labels, _ = mnist_model
  saturated = lambda x: 1000.0 * logits_fn(x)
  # Labels the network is sure are wrong: their probability is exactly 0.
  wrong = (attacks.predictions(saturated, images[:20]) + 1) % 10
  adversarial = attacks.pgd(saturated, images[:20], wrong, jax.random.PRNGKey(0),
                            eps=0.3, steps=10, loss='softmax_ce')
  assert np.all(np.isfinite(np.asarray(adversarial)))
  nan = jnp.full_like(images[:2], jnp.nan)
  assert attacks.measure(logits_fn, images[:2], nan, labels[:2])['successes'] == 0


def test_attacks_agree_with_foolbox(mnist_model):
  """foolbox 3.3.4 (a test-only dependency) on the same network and images: FGSM and
  the L2 fast gradient within 1e-2 of its unit step (median 1e-4: float32
  gradients summed in another order), PGD without random start (the same
  iteration: sign step, projection, clipping) to 1e-6 per feature.

  Where a feature's gradient is within float32 rounding of zero, its sign can
  come out either way in two implementations of the cross-entropy: such
  features (2 of 39,200 here) may differ by the whole step, and only those.
  """
  foolbox = pytest.importorskip('foolbox')
  logits_fn, images, labels, _ = mnist_model
  images, labels = images[:50], labels[:50]
  model = foolbox.JAXModel(logits_fn, bounds=(0, 1))
  _, theirs, _ = foolbox.attacks.FGSM()(model, images, labels, epsilons=0.1)
  ours = attacks.fgsm(logits_fn, images, labels, eps=0.1)
  differ = np.abs(np.asarray(ours) - np.asarray(theirs)) > 1e-6
  gradient = np.abs(np.asarray(jax.grad(lambda x: jnp.sum(attacks.attack_loss(
      logits_fn(x), labels, loss='ce', targeted=False)))(images)))
  assert differ.mean() < 1e-3 and np.all(gradient[differ] < 1e-6 * gradient.max())
  _, theirs, _ = foolbox.attacks.L2FastGradientAttack()(model, images, labels, epsilons=1.0)
  ours = attacks.fgsm(logits_fn, images, labels, eps=1.0, norm='l2')
  gap = np.sqrt(np.sum(np.square(np.asarray(ours) - np.asarray(theirs)).reshape(50, -1), -1))
  # Of a step of L2 size 1; the largest gaps are on confidently classified
  # images, whose tiny cross-entropy gradients carry the largest relative rounding.
  assert np.median(gap) < 1e-4 and gap.max() < 1e-2, gap
  _, theirs, success = foolbox.attacks.LinfPGD(steps=10, rel_stepsize=0.1, random_start=False)(
      model, images, labels, epsilons=0.1)
  ours = attacks.pgd(logits_fn, images, labels, eps=0.1, steps=10, step_size=0.01,
                     random_start=False)
  assert np.mean(np.abs(np.asarray(ours) - np.asarray(theirs)) > 1e-6) < 1e-3
  assert attacks.measure(logits_fn, images, ours, labels)['success_rate'] == pytest.approx(
      float(np.mean(np.asarray(success))))


@pytest.mark.slow  # the evaluate command end to end, in a process of its own
def test_evaluate_command_attacks_any_finished_run(mnist_model, mnist_data_dir, capsys):
  from kdjax import evaluate
  workdir = mnist_model[3]
  assert evaluate.main([f'--workdir={workdir}', f'--data_dir={mnist_data_dir}', '--attack=pgd',
                        '--eps=0.3', '--steps=10', '--examples=100']) == 0
  assert 'test[:100] under pgd eps=0.3: success ' in capsys.readouterr().out
  entry = evaluate.attack_run(workdir, attack='jsma', eps=0.0, examples=20, batch_size=20,
                              data_dir=mnist_data_dir, gamma=0.05)
  with open(f'{workdir}/robustness.json') as f:
    recorded = json.load(f)
  assert set(recorded) == {'pgd eps=0.3', 'jsma eps=0'}
  assert recorded['pgd eps=0.3']['success_rate'] > 0.9 and recorded['pgd eps=0.3']['mean_linf'] <= 0.3 + 1e-6
  assert entry['mean_l0'] <= 2 * (int(0.05 * 784) // 2)  # JSMA's feature budget
  assert evaluate.main([f'--workdir={workdir}', '--attack=pgd', '--eps=-1']) == 2
  assert capsys.readouterr().err == 'error: --eps=-1.0 must be > 0\n'


def test_combine_weights_sizes_by_successes():
  batches = [{'examples': 4, 'successes': 1, 'mean_l0': 10.0, 'mean_l2': 1.0, 'mean_linf': 0.1},
             {'examples': 6, 'successes': 3, 'mean_l0': 2.0, 'mean_l2': 3.0, 'mean_linf': 0.3},
             {'examples': 2, 'successes': 0, 'mean_l0': None, 'mean_l2': None,
              'mean_linf': None}]
  combined = attacks.combine(batches)
  assert combined['examples'] == 12 and combined['successes'] == 4
  assert combined['success_rate'] == pytest.approx(4 / 12)
  assert combined['mean_l0'] == pytest.approx((10 + 3 * 2) / 4)
  assert combined['mean_l2'] == pytest.approx((1 + 3 * 3) / 4)
  assert combined['mean_linf'] == pytest.approx((0.1 + 0.9) / 4)
  assert attacks.combine([])['mean_l2'] is None


def test_defensive_objective_by_hand():
  """Papernot's losses: CE of softmax(z / T) for the teacher; for the student the
  teacher's softmax(t / T) against softmax(s / T), without a T² factor."""
  from kdjax import objectives
  from kdjax.errors import ConfigError
  logits = jnp.array([[2.0, 0.0, -2.0]])
  teacher = jnp.array([[0.0, 4.0, 0.0]])
  labels = jnp.array([0])
  objective = objectives.defensive(train_temperature=2.0)
  alone, _ = objective.loss({'logits': logits}, None, labels, {}, None)
  z = np.array([1.0, 0.0, -1.0])  # logits / T
  assert float(alone) == pytest.approx(-(z[0] - np.log(np.exp(z).sum())), rel=1e-6)
  hp = {'temperature': 2.0, 'alpha': 1.0}
  soft, _ = objective.loss({'logits': logits}, {'logits': teacher}, labels, hp, None)
  p = np.exp([0.0, 2.0, 0.0]) / np.exp([0.0, 2.0, 0.0]).sum()
  log_q = z - np.log(np.exp(z).sum())
  assert float(soft) == pytest.approx(-(p * log_q).sum(), rel=1e-6)
  mixed, _ = objective.loss({'logits': logits}, {'logits': teacher}, labels,
                            {'temperature': 2.0, 'alpha': 0.25}, None)
  assert float(mixed) == pytest.approx(0.25 * float(soft) + 0.75 * float(alone), rel=1e-6)
  config = config_lib.default()
  config.train_temperature = 10.0
  with pytest.raises(ConfigError, match="only with distill.objective='defensive'"):
    checks.validate(config)
  config.distill.objective = 'defensive'
  checks.validate(config)
