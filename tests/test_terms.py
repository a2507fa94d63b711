"""The loss algebra: named weighted terms, the shorthands they stand for, a term of a test's own."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import mnist_student
from kdjax import config as config_lib
from kdjax import models, objectives, terms
from kdjax.errors import ConfigError
from kdjax.train import loop

LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], np.float32)
TEACHER = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]], np.float32)
LABELS = np.array([0, 2], np.int32)


def _ce(logits, labels):
  """Cross-entropy by hand: log Σ exp z − z_y, averaged."""
  z = np.asarray(logits, np.float64)
  return float(np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(len(labels)), labels]))


def _kl_t2(student, teacher, t):
  """T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged, by hand."""
  def log_softmax(z):
    z = np.asarray(z, np.float64) / t
    return z - np.log(np.exp(z).sum(-1, keepdims=True))
  p, q = log_softmax(teacher), log_softmax(student)
  return float(t * t * np.mean((np.exp(p) * (p - q)).sum(-1)))


def _config(**changes):
  c = config_lib.default()
  return config_lib.override(c, changes)


def test_the_shorthands_name_their_terms_and_weights():
  cases = [
      ({}, 'loss = 1·ce'),
      ({'teacher.workdir': 't', 'distill.alpha': 0.9}, 'loss = 0.1·ce + 0.9·kd@T4'),
      ({'teacher.workdir': 't', 'distill.kind': 'mse_logits', 'distill.alpha': 0.5},
       'loss = 0.5·ce + 0.5·mse_logits'),
      ({'teacher.workdir': 't', 'distill.standardize': True, 'distill.temperature': 2.0},
       'loss = 0.1·ce + 0.9·kd@T2/std'),
      ({'teacher.workdir': 't', 'distill.alpha': 0.0, 'method.name': 'at'},
       'loss = 1·ce + 1000·at'),
      ({'teacher.workdir': 't', 'distill.alpha': 0.5, 'method.name': 'crd',
        'method.weight': 0.8}, 'loss = 0.5·ce + 0.5·kd@T4 + 0.8·crd'),
      ({'teacher.workdir': 't', 'distill.alpha': 0.9, 'method.name': 'ctkd'},
       'loss = 0.1·ce + 0.9·kd@T(learned)'),
      ({'teacher.workdir': 't', 'distill.alpha': 0.0, 'method.name': 'mlkd'},
       'loss = 0.1·ce(weak+strong) + 0.9·mlkd'),
      ({'distill.objective': 'defensive', 'train_temperature': 20.0}, 'loss = 1·ce@T20'),
      ({'distill.objective': 'defensive', 'train_temperature': 20.0, 'teacher.workdir': 't',
        'distill.alpha': 1.0, 'distill.temperature': 20.0},
       'loss = 0·ce@T20 + 1·soft_ce@T20'),
      ({'distill.objective': 'byot', 'byot.alpha': 0.1, 'byot.temperature': 3.0},
       'loss = 1·ce/deepest + 0.9·ce/shallow + 0.9·kd@T3/shallow + 0.000128·feature/shallow'),
      ({'online.kind': 'dml', 'online.weight': 0.5, 'online.temperature': 2.0},
       'loss = 1·ce + 0.5·dml@T2'),
      ({'distill.terms': ('0.3*ce', '0.7*kd'), 'teacher.workdir': 't'},
       'loss = 0.3·ce + 0.7·kd@T4'),
  ]
  for changes, text in cases:
    assert terms.text(terms.describe(_config(**changes))) == text, changes


def test_logit_kd_and_defensive_report_terms_that_sum_to_their_loss():
  hparams = {'temperature': 4.0, 'alpha': 0.7}
  student, teacher = {'logits': jnp.asarray(LOGITS)}, {'logits': jnp.asarray(TEACHER)}
  loss, metrics = objectives.logit_kd('kl').loss(student, teacher, LABELS, hparams, {})
  assert float(metrics['term/ce']) == pytest.approx(_ce(LOGITS, LABELS), rel=1e-6)
  assert float(metrics['term/kd']) == pytest.approx(_kl_t2(LOGITS, TEACHER, 4.0), rel=1e-5)
  assert float(loss) == pytest.approx(0.3 * _ce(LOGITS, LABELS)
                                      + 0.7 * _kl_t2(LOGITS, TEACHER, 4.0), rel=1e-5)
  loss, metrics = objectives.defensive(2.0).loss(student, teacher, LABELS, hparams, {})
  assert float(metrics['term/ce']) == pytest.approx(_ce(LOGITS / 2.0, LABELS), rel=1e-6)
  assert float(loss) == pytest.approx(
      0.3 * float(metrics['term/ce']) + 0.7 * float(metrics['term/kd']), rel=1e-6)


def test_composed_terms_sum_by_weight_and_ramp_in_over_their_warmup():
  config = _config(**{'distill.terms': ('0.25*ce', '0.75*kd'), 'teacher.workdir': 't'})
  built = terms.from_config(config)
  assert [(t.name, t.label, t.weight, t.reads) for t in built] == [
      ('ce', 'ce', 0.25, ('logits',)), ('kd', 'kd@T4', 0.75, ('logits', 'teacher'))]
  ramped = (built[0], dataclasses.replace(built[1], warmup_epochs=2.0))
  objective = terms.compose(ramped, steps_per_epoch=10)
  student, teacher = {'logits': jnp.asarray(LOGITS)}, {'logits': jnp.asarray(TEACHER)}
  ce, kd = _ce(LOGITS, LABELS), _kl_t2(LOGITS, TEACHER, 3.0)
  for step, factor in ((0, 0.0), (5, 0.25), (10, 0.5), (40, 1.0)):
    loss, metrics = objective.loss(student, teacher, LABELS,
                                   {'temperature': 3.0, 'step': step}, {})
    assert float(loss) == pytest.approx(0.25 * ce + 0.75 * factor * kd, rel=1e-5), step
    assert float(metrics['term/kd']) == pytest.approx(kd, rel=1e-5)
    # The label term, weighted, is the task term DOT's optimizer keeps apart.
    assert float(metrics[objectives.TASK]) == pytest.approx(0.25 * ce, rel=1e-6)
  # Without a teacher (a teacher-free evaluation) the teacher's terms are left out.
  loss, metrics = objective.loss(student, None, LABELS, {'temperature': 3.0}, {})
  assert float(loss) == pytest.approx(0.25 * ce, rel=1e-6) and 'term/kd' not in metrics


@pytest.mark.parametrize('changes, message', [
    ({'distill.terms': ('0.5*nope',)}, "unknown term 'nope'"),
    ({'distill.terms': ('half*ce',)}, "'half\\*ce' is not WEIGHT\\*NAME"),
    ({'distill.terms': ('ce', 'kd')}, "term 'kd' reads the teacher"),
    ({'distill.terms': ('ce', '2*ce')}, 'a term is named twice'),
    ({'distill.terms': ('ce',), 'method.name': 'at', 'teacher.workdir': 't'},
     'the terms replace distill.objective'),
    ({'distill.terms': ('ce', 'kd'), 'teacher.workdir': 't', 'sweep.alpha': (0.1, 0.5)},
     'config.sweep.alpha'),
    ({'distill.terms': ('ce', 'at'), 'teacher.workdir': 't'}, 'config.teacher.cache=.auto.'),
    ({'train_temperature': 5.0}, "or the term 'tempered_ce'"),
])
def test_bad_terms_are_refused_in_one_line_naming_the_field(changes, message):
  with pytest.raises(ConfigError, match=message) as raised:
    objectives.check_config(_config(**changes))
  assert '\n' not in str(raised.value)


# A term of the test's own: it pulls a learned centre towards the batch's mean logits,
# and counts its steps in its state.
@terms.register('test_centre', reads=('logits',))
def _test_centre(config) -> terms.Term:
  del config

  def init_with(rng, student, teacher):
    del rng, teacher
    return {'centre': jnp.zeros(student['logits'].shape[-1])}, {'steps': jnp.zeros((), jnp.int32)}

  def loss(student, teacher, labels, hparams, own_params):
    del teacher, labels
    centre, steps = own_params['centre'], hparams['objective_state']['steps']
    value = jnp.mean(jnp.sum(jnp.square(student['logits'] - centre), -1))
    return value, {'centre_steps': steps, 'centre_norm': jnp.linalg.norm(centre),
                   objectives.STATE: {'steps': steps + 1}}

  return terms.Term(label='centre', loss=loss, init_with=init_with)


def test_a_term_of_a_test_with_parameters_and_state_trains_through_the_loop(
    mnist_data_dir, tmp_path, capsys):
  c = mnist_student.get_config()
  c.data_dir, c.model.hidden, c.train_examples, c.batch_size = mnist_data_dir, (32,), 1024, 128
  c.num_epochs = 2
  c.distill.terms = ('ce', '0.01*test_centre')
  results = loop.train_and_evaluate(c, str(tmp_path / 'run'))
  assert results['loss'] == 'loss = 1·ce + 0.01·centre' and results['objective'] == 'terms'
  assert results['loss_terms'] == [
      {'name': 'ce', 'label': 'ce', 'weight': 1.0},
      {'name': 'test_centre', 'label': 'centre', 'weight': 0.01}]
  steps = results['steps_per_epoch']
  first, second = results['history']
  # The state counted every step: epoch means of 0 … S−1 and S … 2S−1.
  assert first['train_centre_steps'] == (steps - 1) / 2
  assert second['train_centre_steps'] == steps + (steps - 1) / 2
  assert first['train_centre_norm'] > 0  # its parameters were trained with the student
  for record in results['history']:
    assert record['train_loss'] == pytest.approx(
        record['train_term/ce'] + 0.01 * record['train_term/test_centre'], rel=1e-4)
  assert results['test_accuracy'] > 0.6  # 67.33% measured (2 epochs of 1,024 images)
  out = capsys.readouterr().out
  assert re.search(r'loss [\d.]+ = 1·ce [\d.]+ \+ 0\.01·centre [\d.]+', out), out


def _features(seed):
  rng = np.random.default_rng(seed)
  return {'stage1': jnp.float32(rng.normal(size=(2, 4, 4, 3))),
          'stage2': jnp.float32(rng.normal(size=(2, 2, 2, 5))),
          'pooled': jnp.float32(rng.normal(size=(2, 5)))}


@pytest.mark.parametrize('method, weight', [('at', 1000.0), ('fitnet', 100.0)])
def test_a_method_as_a_term_computes_what_its_shorthand_does(method, weight):
  """`('ce', 'W*method')` against `method.name=method`, `distill.alpha=0`: the same loss,
  the same term, on the same parts and state (fitnet's regressor under the term's name)."""
  common = {'teacher.workdir': 't', 'teacher.cache': False}
  shorthand = objectives.from_config(_config(**common, **{
      'method.name': method, 'method.weight': weight, 'distill.alpha': 0.0}))
  composed = objectives.from_config(_config(**common, **{
      'distill.terms': ('ce', f'{weight:g}*{method}')}))
  objectives.check_config(_config(**common, **{'distill.terms': ('ce', f'{weight:g}*{method}')}))
  student = {'logits': jnp.asarray(LOGITS), 'features': _features(0)}
  teacher = {'logits': jnp.asarray(TEACHER), 'features': _features(1)}
  shapes = lambda o: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), o)  # noqa: E731
  params, state = composed.init_parts(jax.random.PRNGKey(0), shapes(student), shapes(teacher))
  own = params.get(method, {})
  hparams = {'temperature': 4.0, 'alpha': 0.0, 'step': 0, 'objective_rng': jax.random.PRNGKey(2)}
  loss, metrics = composed.loss(student, teacher, LABELS,
                                dict(hparams, objective_state=state), params)
  if method == 'fitnet':
    assert set(params) == {'fitnet'} and set(state) == {'fitnet'}
    base_params = {'base': {}, 'method': own}
    want, want_metrics = shorthand.loss(student, teacher, LABELS,
                                        dict(hparams, objective_state=state['fitnet']),
                                        base_params)
  else:
    assert params == {} and state == {}
    want, want_metrics = shorthand.loss(student, teacher, LABELS, hparams, {})
  assert float(metrics[f'term/{method}']) == pytest.approx(float(want_metrics['method']),
                                                           rel=1e-6)
  assert float(metrics['term/ce']) == pytest.approx(_ce(LOGITS, LABELS), rel=1e-6)
  assert float(loss) == pytest.approx(float(want), rel=1e-6)


def test_byots_exit_terms_compose_to_its_loss():
  """BYOT's four per-exit terms, weighted as the shorthand describes them, sum to the
  `byot` objective's loss and report the same values."""
  options = dict(base='cifar_resnet', blocks=(1, 1, 1), widths=(4, 4, 8, 8), exits=(1, 2))
  model = models.create('multi_exit', num_classes=3, **options)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 8, 1)), jnp.float32)
  variables = model.init(jax.random.PRNGKey(0), images, train=False)
  logits, features = model.apply(variables, images, train=False, return_features=True)
  config = _config(**{'distill.objective': 'byot', 'byot.alpha': 0.1, 'byot.temperature': 3.0})
  config.model = config_lib.ml_collections.ConfigDict({'name': 'multi_exit', **options})
  described = terms.describe(config)
  weights = [repr(t['weight']) for t in described]
  specs = (f'{weights[0]}*exit_ce_deepest', f'{weights[1]}*exit_ce_shallow',
           f'{weights[2]}*exit_kd', f'{weights[3]}*exit_feature')
  composed_config = _config(**{'distill.terms': specs, 'byot.temperature': 3.0})
  composed_config.model = config.model
  objectives.check_config(composed_config)
  student, hparams = {'logits': logits, 'features': features}, {'temperature': 4.0}
  want, want_metrics = objectives.from_config(config).loss(student, None, LABELS, hparams, {})
  got, metrics = objectives.from_config(composed_config).loss(student, None, LABELS, hparams, {})
  assert float(got) == pytest.approx(float(want), rel=1e-6)
  for name, part in (('ce/deepest', 'exit_ce_deepest'), ('ce/shallow', 'exit_ce_shallow'),
                     ('kd/shallow', 'exit_kd'), ('feature/shallow', 'exit_feature')):
    assert float(metrics[f'term/{part}']) == pytest.approx(
        float(want_metrics[f'term/{name}']), rel=1e-6)
  assert terms.text(terms.describe(composed_config)) == (
      'loss = 1·ce/deepest + 0.9·ce/shallow + 0.9·kd@T3/shallow + 0.000128·feature/shallow')
