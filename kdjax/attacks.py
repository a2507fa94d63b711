"""Adversarial attacks as pure, batched JAX functions.

Every attack takes `logits_fn(images) -> logits`: images in the model's pixel
space [0, 1] (NHWC, float32), normalisation inside the call, eval mode, so
each example's logits depend on that example alone. `model_logits_fn` builds
one from a kdjax model, its variables and its dataset's mean/std.

Labels default to the model's own predictions (attack what it says, not what
it should say). Untargeted attacks try to change the prediction away from
`labels`; with `targeted=True`, `labels` are the targets to reach. All
results are clipped to the data range [0, 1].

The attacks:

* `fgsm`: one step of size eps along the sign of the loss gradient (L∞) or
  along the normalised gradient (L2). Goodfellow et al. 2015.
* `pgd`: projected gradient descent, `steps` steps of `step_size`, an
  optional random start inside the ball, projected onto the eps-ball and the
  data range after each step. Madry et al. 2018.
* The loss an attack follows: 'ce', the cross-entropy through a stable
  log-softmax (today's default, foolbox's); 'softmax_ce', −log of the softmax
  probability computed from the probabilities, as the attacks of Papernot et
  al. 2016 did: once the softmax saturates (probability exactly 1 in
  float32, as it does for the large logits of a net distilled at high T)
  its gradient is exactly zero and a gradient attack stands still;
  'margin', the logit margin max_{j≠y} z_j − z_y (Carlini & Wagner's f6),
  whose gradient never vanishes: why defensive distillation's apparent
  robustness disappears (Carlini & Wagner 2016).
* `carlini_wagner_l2`: C&W's L2 attack: x' = (tanh(w) + 1) / 2, Adam on
  ||x' − x||² + c·f(x'), a binary search over c per example, the smallest
  successful perturbation kept.
* `jsma`: Papernot et al.'s Jacobian-based saliency map attack (targeted):
  each iteration raises the pair of features whose saliency (gain for the
  target times loss for the other classes) is largest, until the target is
  predicted or `gamma` of the features have been changed.

`measure` summarises an attack: success rate and the L0/L2/L∞ sizes of the
perturbations of successful examples.
"""

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

LogitsFn = Callable[[jax.Array], jax.Array]
NORMS = ('linf', 'l2')
LOSSES = ('ce', 'softmax_ce', 'margin')


def model_logits_fn(model, variables, mean, std) -> LogitsFn:
  """`images in [0, 1] -> logits` for a kdjax model in eval mode."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)

  def logits_fn(images):
    return model.apply(variables, (images - mean) / std, train=False).astype(jnp.float32)

  return logits_fn


def other_class(key: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """A uniformly drawn class other than each label: a targeted attack's target."""
  return (labels + 1 + jax.random.randint(key, labels.shape, 0, num_classes - 1)) % num_classes


def predictions(logits_fn: LogitsFn, images: jax.Array) -> jax.Array:
  return jnp.argmax(logits_fn(images), axis=-1)


def _margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """max_{j≠y} z_j − z_y per example: > 0 exactly when the prediction is not y."""
  own = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return jnp.max(others, axis=-1) - own


def attack_loss(logits: jax.Array, labels: jax.Array, *, loss: str, targeted: bool) -> jax.Array:
  """Per-example loss the attacker ascends (untargeted) or whose target it approaches.

  'ce' / 'softmax_ce': the cross-entropy of `labels` through log-softmax /
  from the probabilities (ascended untargeted; its negative for a target). 'margin': the logit margin against `labels`
  (negated for a target, so ascending it raises the target's logit above the rest).
  """
  if loss == 'ce':
    value = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
  elif loss == 'softmax_ce':
    probability = jnp.take_along_axis(jax.nn.softmax(logits), labels[:, None], axis=-1)[:, 0]
    # A probability that underflowed to 0 has no gradient (as a saturated one):
    # −log is taken of at least the smallest normal float, never of 0.
    value = -jnp.log(jnp.maximum(probability, jnp.finfo(probability.dtype).tiny))
  elif loss == 'margin':
    value = _margin(logits, labels)
  else:
    raise ValueError(f'loss={loss!r} must be one of {LOSSES}')
  return -value if targeted else value


def _gradient(logits_fn, images, labels, loss, targeted):
  def total(x):
    return jnp.sum(attack_loss(logits_fn(x), labels, loss=loss, targeted=targeted))
  return jax.grad(total)(images)


def _flat_norm(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=-1))


def _per_example(v: jax.Array, x: jax.Array) -> jax.Array:
  return v.reshape((-1,) + (1,) * (x.ndim - 1))


def _direction(grad: jax.Array, norm: str) -> jax.Array:
  """The steepest-ascent direction of unit size under `norm`."""
  if norm == 'linf':
    return jnp.sign(grad)
  if norm == 'l2':
    return grad / _per_example(jnp.maximum(_flat_norm(grad), 1e-12), grad)
  raise ValueError(f'norm={norm!r} must be one of {NORMS}')


def _project(delta: jax.Array, eps: float, norm: str) -> jax.Array:
  if norm == 'linf':
    return jnp.clip(delta, -eps, eps)
  scale = jnp.minimum(1.0, eps / jnp.maximum(_flat_norm(delta), 1e-12))
  return delta * _per_example(scale, delta)


def _labels_or_predictions(logits_fn, images, labels):
  return predictions(logits_fn, images) if labels is None else labels


@functools.partial(jax.jit, static_argnames=('logits_fn', 'norm', 'loss', 'targeted'))
def fgsm(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array | None = None, *,
         eps: float, norm: str = 'linf', loss: str = 'ce', targeted: bool = False) -> jax.Array:
  """The fast gradient (sign) method: x + eps · direction(∇ loss), clipped to [0, 1]."""
  labels = _labels_or_predictions(logits_fn, images, labels)
  grad = _gradient(logits_fn, images, labels, loss, targeted)
  return jnp.clip(images + eps * _direction(grad, norm), 0.0, 1.0)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'steps', 'norm', 'loss', 'targeted',
                                             'random_start'))
def pgd(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array | None = None,
        key: jax.Array | None = None, *, eps: float, steps: int = 40,
        step_size: float | None = None, norm: str = 'linf', loss: str = 'ce',
        targeted: bool = False, random_start: bool = True) -> jax.Array:
  """Projected gradient descent inside the `norm` ball of radius `eps` and [0, 1].

  `step_size` defaults to 2.5 · eps / steps (Madry et al.); the random start
  (uniform in the L∞ box, or uniform in the L2 ball) needs `key`. The same
  key gives the same result.
  """
  labels = _labels_or_predictions(logits_fn, images, labels)
  step_size = 2.5 * eps / steps if step_size is None else step_size
  delta = jnp.zeros_like(images)
  if random_start:
    if key is None:
      raise ValueError('pgd with random_start needs a key')
    if norm == 'linf':
      delta = jax.random.uniform(key, images.shape, minval=-eps, maxval=eps)
    else:
      direction_key, radius_key = jax.random.split(key)
      direction = jax.random.normal(direction_key, images.shape)
      direction = direction / _per_example(_flat_norm(direction), images)
      dims = images[0].size
      radius = eps * jax.random.uniform(radius_key, (images.shape[0],)) ** (1.0 / dims)
      delta = direction * _per_example(radius, images)
  x = jnp.clip(images + delta, 0.0, 1.0)

  def body(_, x):
    grad = _gradient(logits_fn, x, labels, loss, targeted)
    x = x + step_size * _direction(grad, norm)
    return jnp.clip(images + _project(x - images, eps, norm), 0.0, 1.0)

  return jax.lax.fori_loop(0, steps, body, x)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'steps', 'binary_steps', 'targeted'))
def carlini_wagner_l2(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array | None = None,
                      *, steps: int = 100, binary_steps: int = 5, learning_rate: float = 0.01,
                      initial_c: float = 1e-2, confidence: float = 0.0,
                      targeted: bool = False) -> jax.Array:
  """Carlini & Wagner's L2 attack; examples it cannot move come back unchanged.

  For each of `binary_steps` values of c per example (starting at
  `initial_c`, ×10 until a success, then bisected), `steps` Adam steps on
  ||x' − x||² + c · max(margin, −confidence) in tanh space; the smallest
  successful x' over all c is returned.
  """
  labels = _labels_or_predictions(logits_fn, images, labels)
  batch = images.shape[0]
  sign = 1.0 if targeted else -1.0  # untargeted: push the label's margin up

  def objective(w, c):
    adv = (jnp.tanh(w) + 1) / 2
    margin = sign * _margin(logits_fn(adv), labels)  # ≤ 0 once the attack succeeds
    f = jnp.maximum(margin, -confidence)
    distance = jnp.sum(jnp.square(adv - images).reshape(batch, -1), axis=-1)
    return jnp.sum(distance + c * f), (adv, margin, distance)

  w0 = jnp.arctanh(jnp.clip(images * 2 - 1, -1 + 1e-6, 1 - 1e-6))

  def search(carry, _):
    c, lower, upper, best, best_distance = carry

    def adam(state, t):
      w, m, v = state
      grad = jax.grad(lambda w: objective(w, c)[0])(w)
      m = 0.9 * m + 0.1 * grad
      v = 0.999 * v + 0.001 * jnp.square(grad)
      m_hat, v_hat = m / (1 - 0.9 ** (t + 1)), v / (1 - 0.999 ** (t + 1))
      w = w - learning_rate * m_hat / (jnp.sqrt(v_hat) + 1e-8)
      _, (adv, margin, distance) = objective(w, c)
      return (w, m, v), (adv, margin, distance)

    zeros = jnp.zeros_like(w0)
    _, (advs, margins, distances) = jax.lax.scan(adam, (w0, zeros, zeros),
                                                 jnp.arange(steps, dtype=jnp.float32))
    success = margins < 0  # [steps, B]
    masked = jnp.where(success, distances, jnp.inf)
    step = jnp.argmin(masked, axis=0)
    found = jnp.min(masked, axis=0)
    candidate = advs[step, jnp.arange(batch)]
    better = found < best_distance
    best = jnp.where(_per_example(better, images), candidate, best)
    best_distance = jnp.minimum(found, best_distance)
    succeeded = jnp.isfinite(found)
    upper = jnp.where(succeeded, jnp.minimum(upper, c), upper)
    lower = jnp.where(succeeded, lower, jnp.maximum(lower, c))
    c = jnp.where(upper < 1e9, (lower + upper) / 2, c * 10)
    return (c, lower, upper, best, best_distance), None

  start = (jnp.full((batch,), initial_c), jnp.zeros(batch), jnp.full((batch,), 1e10),
           images, jnp.full((batch,), jnp.inf))
  (_, _, _, best, _), _ = jax.lax.scan(search, start, None, length=binary_steps)
  return best


JSMA_OUTPUTS = ('logits', 'probabilities')


@functools.partial(jax.jit, static_argnames=('logits_fn', 'gamma', 'theta', 'output'))
def jsma(logits_fn: LogitsFn, images: jax.Array, targets: jax.Array, *, theta: float = 1.0,
         gamma: float = 0.145, output: str = 'logits') -> jax.Array:
  """Papernot et al.'s saliency-map attack towards `targets`, two features at a time.

  `output`: whose forward derivative guides the search, the logits z or the
  softmax probabilities F (Papernot et al. 2016's attack on defensive
  distillation). On the probabilities Σ_j F_j = 1, so β = −α and the pair
  with the largest α wins; where the softmax saturates every derivative is
  0 in float32 and the attack stops where it is.

  Features (pixels × channels) still movable in the direction of `theta`
  form the search domain; each iteration picks the pair (p, q) maximising
  α·|β| with α = ∂(z_t)/∂x_p + ∂(z_t)/∂x_q > 0 and β (the same sum over the
  other classes) < 0, moves both by `theta` (clipped to [0, 1]) and removes
  them from the domain. An example stops once its prediction is the target;
  at most ⌊gamma · features / 2⌋ iterations, so at most that many pairs
  change (`gamma` = 0.145: Papernot's 14.5 % budget on MNIST).
  """
  if output not in JSMA_OUTPUTS:
    raise ValueError(f'output={output!r} must be one of {JSMA_OUTPUTS}')
  batch = images.shape[0]
  shape = images.shape
  features = images[0].size
  iterations = int(gamma * features) // 2
  guide = (lambda v: jax.nn.softmax(logits_fn(v))) if output == 'probabilities' else logits_fn

  def gradients(x):
    """∂z_t/∂x and Σ_{j≠t} ∂z_j/∂x per example: two pullbacks, not one per class."""
    logits, pullback = jax.vjp(guide, x.reshape(shape))
    target_hot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    target_grad, all_grad = jax.vmap(lambda e: pullback(e)[0])(
        jnp.stack([target_hot, jnp.ones_like(logits)]))
    target_grad = target_grad.reshape(batch, features)
    return logits, target_grad, all_grad.reshape(batch, features) - target_grad

  movable = (images.reshape(batch, features) < 1.0) if theta > 0 else (
      images.reshape(batch, features) > 0.0)
  not_same = ~jnp.eye(features, dtype=bool)

  def step(carry):
    x, domain, i, _ = carry
    logits, target_grad, other_grad = gradients(x)
    active = jnp.argmax(logits, -1) != targets
    sign = 1.0 if theta > 0 else -1.0  # decreasing features: the signs flip
    # A feature outside the domain gets α = −∞, so no pair holding it passes α > 0.
    a = jnp.where(domain, sign * target_grad, -jnp.inf)
    b = sign * other_grad
    alpha = a[:, :, None] + a[:, None, :]
    beta = b[:, :, None] + b[:, None, :]
    score = jnp.where((alpha > 0) & (beta < 0) & not_same, -alpha * beta, -1.0)
    flat = score.reshape(batch, -1)
    best = jnp.argmax(flat, axis=-1)
    found = jnp.take_along_axis(flat, best[:, None], axis=-1)[:, 0] > 0
    p, q = best // features, best % features
    change = (active & found)[:, None] & (
        jax.nn.one_hot(p, features, dtype=bool) | jax.nn.one_hot(q, features, dtype=bool))
    x = jnp.where(change, jnp.clip(x + theta, 0.0, 1.0), x)
    return x, domain & ~change, i + 1, jnp.any(change)

  def keep_going(carry):
    _, _, i, moved = carry
    return (i < iterations) & moved  # stop once every example is done or stuck

  x, _, _, _ = jax.lax.while_loop(
      keep_going, step, (images.reshape(batch, features), movable, 0, jnp.array(True)))
  return x.reshape(shape)


def measure(logits_fn: LogitsFn | None, images: jax.Array, adversarial: jax.Array,
            labels: jax.Array, *, targeted: bool = False,
            predicted: jax.Array | None = None) -> dict:
  """Success rate and perturbation sizes of an attack on a batch.

  Untargeted success: the prediction on the adversarial example differs
  from `labels`; targeted: it equals them. An example with a non-finite
  feature is never a success. L0 counts changed features
  (pixels × channels), L2 and L∞ are over all features; sizes are means
  over successful examples (None when none succeeded). `predicted` (the
  model's predictions on `adversarial`, when already computed) spares the
  model call.
  """
  if predicted is None:
    predicted = predictions(logits_fn, adversarial)
  # A summary on the host, in NumPy: no program compiled per batch size.
  predicted, labels = np.asarray(predicted), np.asarray(labels)
  images = np.asarray(images, np.float32)
  adversarial = np.asarray(adversarial, np.float32)
  success = (predicted == labels) if targeted else (predicted != labels)
  finite = np.all(np.isfinite(adversarial.reshape(images.shape[0], -1)), axis=-1)
  success = success & finite
  delta = (adversarial - images).reshape(images.shape[0], -1)
  sizes = {'l0': np.sum(np.abs(delta) > 1e-6, axis=-1).astype(np.float32),
           'l2': np.sqrt(np.sum(np.square(delta), axis=-1)),
           'linf': np.max(np.abs(delta), axis=-1)}
  count = int(np.sum(success))
  out = {'examples': int(images.shape[0]), 'successes': count,
         'success_rate': float(count / images.shape[0])}
  for name, size in sizes.items():
    out[f'mean_{name}'] = float(np.sum(np.where(success, size, 0)) / count) if count else None
  return out


def combine(measured: list[dict]) -> dict:
  """`measure` results of several batches as one: counts summed, sizes re-averaged."""
  examples = sum(m['examples'] for m in measured)
  successes = sum(m['successes'] for m in measured)
  out = {'examples': examples, 'successes': successes,
         'success_rate': successes / examples if examples else None}
  for name in ('l0', 'l2', 'linf'):
    total = sum(m[f'mean_{name}'] * m['successes'] for m in measured if m['successes'])
    out[f'mean_{name}'] = total / successes if successes else None
  return out
