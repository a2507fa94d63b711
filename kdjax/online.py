"""Online distillation: a cohort of students that teach each other in one program.

The cohort is a vectorised seed sweep (`config.sweep.seed`, `sweep.mode='vmap'`): its
members sit on the stacked member axis of one compiled step (`MEMBER_AXIS`), so a
member's loss can gather the other members' predictions on the same batch. Each member
minimises

    CE(own logits, labels) + weight · T² · KL(p̄ ‖ softmax(own logits / T)),
    p̄ = mean over the other K − 1 members j of softmax(z_j / T), detached,

with weight `config.online.weight` and T `config.online.temperature`:

  'dml'        (Zhang et al. 2018, deep mutual learning): z_j are the other members'
               logits of this very step (train mode, the same forward pass that trains
               them), detached.
  'codistill'  (Anil et al. 2018): z_j come from copies of the members' parameters (and
               BatchNorm statistics) refreshed every `config.online.refresh_steps` steps,
               run in eval mode. The copies live in the train state
               (`objective_state[STALE]`): saved in each member's checkpoint, outside the
               optimizer and outside `jax.grad`. Stale predictions are what lets the
               members of the paper live on different machines.

Members must see the same examples in each step (`sweep.couple_data_seed=False`); each
draws its own augmentation and dropout from its seed, as separately trained networks do.
Every member keeps a complete run directory of its own, usable as a teacher.
"""

import jax
import jax.numpy as jnp

from kdjax import config as config_lib
from kdjax import losses
from kdjax.objective_registry import MEMBER_AXIS, Objective, TASK

KINDS = ('dml', 'codistill')
# The key of `TrainState.objective_state` that holds a codistilled member's stale copy.
STALE = 'online_stale'


def check_config(c) -> None:
  """Raises ConfigError (one line, naming the field) for an online cohort that cannot run."""
  kind = c.online.kind
  if kind is None:
    return
  fail = config_lib.fail
  if kind not in KINDS:
    fail('online.kind', kind, f'unknown; known: {", ".join(KINDS)} (or None)')
  if isinstance(c.online.weight, bool) or not isinstance(c.online.weight, (int, float)) or (
      not c.online.weight >= 0):
    fail('online.weight', c.online.weight, 'must be a number >= 0')
  config_lib.check_positive(c, 'online.temperature')
  config_lib.check_positive(c, 'online.refresh_steps', integer=True)
  if len(c.sweep.seed) < 2:
    fail('sweep.seed', tuple(c.sweep.seed), f"online.kind='{kind}' trains a cohort: give "
         'at least two seeds, one per member')
  for axis in config_lib.SWEEP_AXES:
    if axis != 'seed' and len(c.sweep[axis]):
      fail(f'sweep.{axis}', tuple(c.sweep[axis]), 'an online cohort sweeps seeds only')
  if config_lib.sweep_mode(c) != 'vmap':
    fail('sweep.mode', c.sweep.mode, "an online cohort trains as one program: set "
         "sweep.mode='vmap'")
  if c.sweep.couple_data_seed:
    fail('sweep.couple_data_seed', True, 'the members of an online cohort must see the same '
         'batches: set it to False')
  if c.teacher.workdir:
    fail('teacher.workdir', c.teacher.workdir, 'an online cohort teaches itself; no teacher')
  if c.distill.objective != 'logit_kd' or c.method.name:
    fail('online.kind', kind, 'replaces the objective: leave distill.objective='
         "'logit_kd' and method.name=''")
  if c.optimizer.name == 'dot':
    fail('optimizer.name', 'dot', 'is not part of an online cohort')


def others_log_probs(logits, member, temperature):
  """log p̄ where p̄ is the mean of softmax(logits[j] / T) over j ≠ `member`.

  Args:
    logits: [K, B, C] every member's logits, K >= 2.
    member: the index (may be traced) of the member left out.
    temperature: T > 0.

  Returns:
    [B, C] log-probabilities, computed in log space.
  """
  count = logits.shape[0]
  log_probs = jax.nn.log_softmax(logits / temperature, axis=-1)
  others = (jnp.arange(count) != member)[:, None, None]
  return (jax.nn.logsumexp(jnp.where(others, log_probs, -jnp.inf), axis=0)
          - jnp.log(count - 1.0))


def cohort_loss(own_logits, source_logits, labels, *, weight, temperature,
                axis_name: str = MEMBER_AXIS):
  """One member's online-distillation loss, called under a vmap over `axis_name`.

      CE(own, labels) + weight · T² · mean_b KL(p̄_b ‖ softmax(own_b / T))

  p̄ is the mean of the other members' softmax(source / T), gathered over `axis_name`
  and detached (no gradient reaches the other members through it).

  Args:
    own_logits: [B, C] this member's logits (trained).
    source_logits: [B, C] this member's contribution to the others' targets: its own
      logits (DML) or its stale copy's (codistillation).
    labels: [B] integer labels.
    weight: the soft term's weight.
    temperature: T > 0.

  Returns:
    (loss, metrics): metrics hold the task term and `online_kl` (the KL term, T² times).
  """
  gathered = jax.lax.all_gather(jax.lax.stop_gradient(source_logits), axis_name)
  member = jax.lax.axis_index(axis_name)
  # T · log p̄ as logits: softmax(T · log p̄ / T) = p̄, so the kl soft loss compares to p̄.
  target_logits = temperature * others_log_probs(gathered, member, temperature)
  soft = jnp.mean(losses.soft_target_loss(own_logits, target_logits, temperature=temperature,
                                          kind='kl'))
  hard = jnp.mean(losses.cross_entropy(own_logits, labels))
  # 'term/…': each named term's value, as kdjax.terms.describe names them.
  return hard + weight * soft, {TASK: hard, 'online_kl': soft, 'term/ce': hard,
                                'term/online': soft}


def objective(config, model, image_shape) -> Objective:
  """The cohort's objective (`config.online`); a codistilled member owns a stale copy."""
  kind = config.online.kind
  weight, temperature = float(config.online.weight), float(config.online.temperature)

  def loss(student, teacher, labels, hparams, own_params):
    del hparams, own_params
    source = student['logits'] if kind == 'dml' else teacher['logits']
    return cohort_loss(student['logits'], source, labels, weight=weight,
                       temperature=temperature)

  def init_with(rng, student, teacher):
    del student, teacher
    shapes = jax.eval_shape(lambda: model.init(
        {'params': rng, 'dropout': rng}, jnp.zeros((1, *image_shape), jnp.float32),
        train=False))
    # Filled from the member's own variables at step 0 (`codistill_step`).
    return {}, {STALE: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), dict(shapes))}

  return Objective(name=f'online_{kind}', loss=loss,
                   init_with=init_with if kind == 'codistill' else None)


def codistill_step(train_step, model, refresh_steps: int):
  """The train step of a codistilled member: refresh the stale copy every `refresh_steps`
  steps (at steps 0, R, 2R, … before that step's update), run it in eval mode on the
  step's images and hand its logits to the objective as the 'teacher'."""
  parts = train_step.parts

  def step(state, batch, teacher_variables, hparams):
    del teacher_variables
    current = {'params': state.params, **state.model_state}
    refresh = state.step % refresh_steps == 0
    stale = jax.tree.map(lambda new, old: jnp.where(refresh, new, old), current,
                         state.objective_state[STALE])
    state = state.replace(objective_state=dict(state.objective_state, **{STALE: stale}))
    images = parts.inputs(state.rng, state.step, batch)
    return parts.update(state, batch, images, {'logits': model.apply(stale, images,
                                                                      train=False)}, hparams)

  return step


def objective_of(config, base: Objective, model, image_shape) -> Objective:
  """`base`, or the cohort's objective when `config.online.kind` is set."""
  return base if config.online.kind is None else objective(config, model, image_shape)


def step_of(config, train_step, model):
  """`train_step`, or the codistilled member's step."""
  if config.online.kind != 'codistill':
    return train_step
  return codistill_step(train_step, model, int(config.online.refresh_steps))
