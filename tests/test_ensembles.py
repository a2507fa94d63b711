"""Ensemble teachers (kdjax.train.teacher): the combination by hand, K identical teachers
equal to one, per-teacher weights, the results.json section and the refusals."""

import hashlib
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from experiments import ensembles_report
from kdjax import config as config_lib
from kdjax import data, losses, report
from kdjax.errors import KDError
from kdjax.train import feed as feed_lib
from kdjax.train import loop
from kdjax.train import step as step_lib
from kdjax.train import teacher as teacher_lib


def _config(data_dir, **changes):
  """A 16-unit MLP, 1 epoch on 512 MNIST examples with a validation split."""
  c = config_lib.default()
  c.data_dir, c.model.hidden, c.train_examples = data_dir, (16,), 512
  c.batch_size, c.num_epochs, c.validation_fraction = 64, 1, 0.05
  c.summary_writer = 'none'
  return config_lib.override(c, changes)


@pytest.fixture(scope='module')
def runs(mnist_data_dir, tmp_path_factory):
  """Two teachers of different widths, a sweep of two seeds (one program) and two
  copies of teacher `a`."""
  root = tmp_path_factory.mktemp('ensemble_teachers')
  loop.train_and_evaluate(_config(mnist_data_dir), str(root / 'a'))
  loop.train_and_evaluate(_config(mnist_data_dir, **{'model.hidden': (24,), 'seed': 1}),
                          str(root / 'b'))
  loop.train_and_evaluate(_config(mnist_data_dir, **{'sweep.seed': (0, 1)}), str(root / 'sweep'))
  for copy in ('a2', 'a3'):
    shutil.copytree(root / 'a', root / copy)
  return {name: str(root / name) for name in ('a', 'b', 'sweep', 'a2', 'a3')}


def test_the_ensemble_of_two_tiny_teachers_by_hand():
  z = np.array([[[2.0, 0.0, -1.0]], [[0.0, 1.0, 3.0]]])  # [K=2, B=1, C=3]
  temperature = 2.0
  probs = special.softmax(z / temperature, axis=-1)
  for weights in ((0.5, 0.5), (0.25, 0.75)):
    mean = weights[0] * probs[0] + weights[1] * probs[1]
    x = np.asarray(teacher_lib.combine(z, weights, 'probs', temperature))
    np.testing.assert_allclose(special.softmax(x / temperature, axis=-1), mean, rtol=1e-6)
    np.testing.assert_allclose(x.sum(-1), 0.0, atol=1e-5)  # centred
    np.testing.assert_allclose(x, temperature * (np.log(mean) - np.log(mean).mean(-1)),
                               rtol=1e-5)
    np.testing.assert_allclose(teacher_lib.combine(z, weights, 'logits', temperature),
                               weights[0] * z[0] + weights[1] * z[1], rtol=1e-6)
  # A weight of 0 leaves the member out; one member is its own centred logits.
  np.testing.assert_allclose(teacher_lib.combine(z, (0.0, 1.0), 'probs', temperature),
                             z[1] - z[1].mean(-1), atol=1e-5)


def _attached(config):
  """The teacher attached to a fresh feed, and the feed."""
  mesh = step_lib.data_mesh()
  dataset, feed = feed_lib.build(config, mesh)
  return teacher_lib.attach(config, dataset, feed, mesh), feed, dataset


def test_k_identical_teachers_cache_the_single_teachers_outputs(runs, mnist_data_dir):
  single, feed, _ = _attached(_config(mnist_data_dir, **{'teacher.workdir': runs['a']}))
  z = np.asarray(feed.data['teacher_logits'])
  trio = ','.join(runs[k] for k in ('a', 'a2', 'a3'))
  for kind, expected in (('probs', z - z.mean(-1, keepdims=True)), ('logits', z)):
    ensemble, feed, _ = _attached(_config(mnist_data_dir, **{'teacher.workdir': trio,
                                                             'teacher.ensemble': kind}))
    assert ensemble.cached and ensemble.model.count == 3 and len(ensemble.model.groups) == 1
    cached = np.asarray(feed.data['teacher_logits'])
    assert cached.shape == z.shape  # one cached output for the ensemble
    np.testing.assert_allclose(cached, expected, atol=2e-5)
    assert ensemble.results['test_accuracy'] == single.results['test_accuracy']


def test_k_identical_teachers_train_the_student_as_one_does(runs, mnist_data_dir, tmp_path):
  trio = ','.join(runs[k] for k in ('a', 'a2', 'a3'))
  out = {}
  for name, workdir in (('one', runs['a']), ('three', trio)):  # in the step: augmented inputs
    out[name] = loop.train_and_evaluate(_config(mnist_data_dir, **{
        'teacher.workdir': workdir, 'augment.max_shift': 1}), str(tmp_path / name))
    assert out[name]['teacher']['cached'] is False
  losses = {name: [row['train_loss'] for row in out[name]['history']] for name in out}
  np.testing.assert_allclose(losses['three'], losses['one'], rtol=1e-4)
  logits = [np.load(tmp_path / name / 'logits.npz')['test'] for name in ('one', 'three')]
  np.testing.assert_allclose(logits[1], logits[0], atol=1e-4)


def test_per_teacher_weights_and_mixed_architectures(runs, mnist_data_dir):
  pair = f'{runs["a"]},{runs["b"]}'
  teacher, feed, dataset = _attached(_config(mnist_data_dir, **{
      'teacher.workdir': pair, 'teacher.weights': (1.0, 3.0), 'distill.temperature': 3.0}))
  assert teacher.model.groups == ((0,), (1,)) and teacher.model.weights == (0.25, 0.75)
  images = feed_lib.replicated(step_lib.data_mesh(), feed.data['images'])
  members = []
  for name in ('a', 'b'):
    model, variables, _, _ = teacher_lib.load(runs[name], dataset)
    predict = step_lib.make_predict(model, mesh=step_lib.data_mesh(), mean=dataset.mean,
                                    std=dataset.std, batch_size=512)
    members.append(np.asarray(predict(variables, images)))
  probs = special.softmax(np.stack(members) / 3.0, axis=-1)
  mean = 0.25 * probs[0] + 0.75 * probs[1]
  cached = np.asarray(feed.data['teacher_logits'])
  np.testing.assert_allclose(special.softmax(cached / 3.0, axis=-1), mean, atol=1e-5)
  # Weights (1, 0): teacher a alone.
  alone, feed, _ = _attached(_config(mnist_data_dir, **{'teacher.workdir': pair,
                                                        'teacher.weights': (1, 0)}))
  z = members[0]
  np.testing.assert_allclose(feed.data['teacher_logits'], z - z.mean(-1, keepdims=True),
                             atol=2e-5)


def test_a_sweep_is_an_ensemble_recorded_in_results(runs, mnist_data_dir, tmp_path):
  results = loop.train_and_evaluate(_config(mnist_data_dir, **{'teacher.workdir': runs['sweep']}),
                                    str(tmp_path / 'student'))
  section = results['teacher']
  assert section == report.read_json(str(tmp_path / 'student' / 'results.json'))['teacher']
  assert section['ensemble'] == 'probs' and section['weights'] == [0.5, 0.5]
  logits = []
  for label, member in zip(('seed0', 'seed1'), section['members']):
    directory = os.path.join(runs['sweep'], 'members', label)
    own = report.read_json(os.path.join(directory, 'results.json'))
    assert member['workdir'] == directory and member['test_accuracy'] == own['test_accuracy']
    digest = hashlib.sha256()
    root = os.path.join(directory, 'checkpoints', str(own['final_checkpoint_epoch']))
    for path in sorted(os.path.relpath(os.path.join(d, n), root)
                       for d, _, names in os.walk(root) for n in names):
      digest.update(path.encode() + b'\0' + open(os.path.join(root, path), 'rb').read())
    assert member['checkpoint_sha256'] == digest.hexdigest()
    logits.append(np.load(os.path.join(directory, 'logits.npz'))['test'])
  labels = data.load('mnist', data_dir=mnist_data_dir, validation_fraction=0.05).test.labels
  mean = special.softmax(np.stack(logits), axis=-1).mean(0)  # Hinton's ensemble at T = 1
  assert section['test_accuracy'] == pytest.approx(np.mean(mean.argmax(-1) == labels))
  assert section['test_accuracy'] > max(m['test_accuracy'] for m in section['members']) - 0.05


def _fake_run(path, *, dataset='mnist', finished=True):
  """A finished (or unfinished) run's files, for checks that only read them."""
  os.makedirs(os.path.join(path, 'checkpoints', '1'))
  teacher_config = config_lib.default()
  teacher_config.dataset = dataset
  report.write_json(os.path.join(path, 'config.json'), config_lib.to_json_dict(teacher_config))
  if finished:
    report.write_json(os.path.join(path, 'results.json'), {
        'dataset': dataset, 'model': 'mlp', 'test_accuracy': 0.9, 'final_checkpoint_epoch': 1})
  return str(path)


@pytest.mark.parametrize('case', ['classes', 'unfinished', 'weights', 'swept_t', 'features',
                                  'twice', 'one_weighed'])
def test_a_bad_ensemble_is_refused_in_one_line_before_writing(case, runs, mnist_data_dir,
                                                              tmp_path):
  pair = f'{runs["a"]},{runs["b"]}'
  changes, fragment = {
      'classes': ({'teacher.workdir': f'{pair},{_fake_run(tmp_path / "c100", dataset="cifar100")}'},
                  'mixes class counts: 10 classes'),
      'unfinished': ({'teacher.workdir': f'{pair},{_fake_run(tmp_path / "u", finished=False)}'},
                     'holds an unfinished run'),
      'weights': ({'teacher.workdir': pair, 'teacher.weights': (1, 2, 3)},
                  'config.teacher.weights has 3 weights for 2 teachers'),
      'swept_t': ({'teacher.workdir': pair, 'sweep.temperature': (2.0, 4.0)},
                  'config.sweep.temperature'),
      'features': ({'teacher.workdir': pair, 'method.name': 'pkt'}, "taps the teacher's"),
      'twice': ({'teacher.workdir': f'{pair},{runs["a"]}'}, 'names a teacher twice'),
      'one_weighed': ({'teacher.workdir': runs['a'], 'teacher.weights': (1,)},
                      'config.teacher.weights=(1,)'),
  }[case]
  workdir = tmp_path / 'student'
  with pytest.raises(KDError) as raised:
    loop.train_and_evaluate(_config(mnist_data_dir, **changes), str(workdir))
  message = str(raised.value)
  assert fragment in message and '\n' not in message, message
  assert not workdir.exists()


@pytest.mark.parametrize('field, value', [('teacher.ensemble', 'median'),
                                          ('teacher.weights', (1, -1)),
                                          ('teacher.weights', (0, 0))])
def test_bad_ensemble_settings_name_the_field(field, value):
  c = config_lib.override(config_lib.default(), {field: value})
  with pytest.raises(KDError, match=f'config.{field}='):
    config_lib.check_fields(c)


def test_members_of_two_architectures_run_in_one_pass_each(runs, mnist_data_dir):
  config = _config(mnist_data_dir, **{'teacher.workdir': f'{runs["a"]},{runs["sweep"]},{runs["b"]}',
                                      'augment.max_shift': 1, 'teacher.ensemble': 'logits'})
  teacher, feed, dataset = _attached(config)
  assert not teacher.cached and teacher.model.groups == ((0, 1, 2), (3,))
  images = jnp.asarray(np.asarray(feed.data['images'][:8], np.float32) / 255.0)
  got = np.asarray(teacher.model.member_logits(teacher.variables, images))
  directories = [runs['a'], *(os.path.join(runs['sweep'], 'members', s) for s in ('seed0', 'seed1')),
                 runs['b']]
  for m, directory in enumerate(directories):
    model, variables, _, _ = teacher_lib.load(directory, dataset)
    np.testing.assert_allclose(got[m], model.apply(variables, images, train=False), atol=1e-5)
  np.testing.assert_allclose(teacher.model.apply(teacher.variables, images), got.mean(0),
                             atol=1e-5)
  with pytest.raises(KDError, match='logits only'):
    teacher.model.apply(teacher.variables, images, return_features=True)


def test_share_of_the_gain_by_hand():
  """Hinton's speech table: (60.8 − 58.9) / (61.1 − 58.9) = 86 %."""
  assert ensembles_report.share_of_gain(0.589, 0.611, 0.608) == pytest.approx(86.36, abs=0.01)
  assert ensembles_report.share_of_gain(0.90, 0.92, 0.89) == pytest.approx(-50.0)
  assert ensembles_report.share_of_gain(0.9, 0.9, 0.95) is None


@pytest.mark.parametrize('kind', ['kl', 'soft_ce', 'mse_logits', 'mse_probs', 'cosine'])
def test_every_soft_loss_sees_k_identical_teachers_as_one(kind):
  """The loss against three copies of a teacher is the loss against it: every kind reads
  probabilities at T but mse_logits, which matches the centred logits (x − mean)."""
  rng = np.random.default_rng(0)
  z, s = rng.normal(size=(2, 5, 4)) * 3
  for ensemble in ('probs', 'logits'):
    x = teacher_lib.combine(np.stack([z, z, z]), (1 / 3,) * 3, ensemble, 2.5)
    one = z - z.mean(-1, keepdims=True) if kind == 'mse_logits' and ensemble == 'probs' else z
    np.testing.assert_allclose(
        losses.soft_target_loss(s, x, temperature=2.5, kind=kind),
        losses.soft_target_loss(s, one, temperature=2.5, kind=kind), rtol=2e-5, atol=1e-6)
