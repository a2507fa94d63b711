"""Your own model and your own data: import-path models, `folder:` and `tfds:` datasets.

A model from a module written in the test's temp dir (on `sys.path`) trains,
is restored from its checkpoint and teaches a later run; a folder of drawn
shapes trains well above chance; a TFDS dataset stored by the test is read;
every refusal is one line and leaves the workdir empty.
"""

import ast
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from configs import mnist_student
from kdjax import config as config_lib
from kdjax import data, evaluate, models
from kdjax.data import custom, shapes
from kdjax.errors import ConfigError, KDError
from kdjax.train import checkpoint, loop, preflight

_NET = textwrap.dedent('''
    import flax.linen as nn
    import jax.numpy as jnp

    class TinyNet(nn.Module):
      num_classes: int
      width: int = 16

      @nn.compact
      def __call__(self, x, train=False, return_features=False):
        x = x.reshape((x.shape[0], -1))
        hidden = nn.relu(nn.Dense(self.width)(x))
        logits = nn.Dense(self.num_classes)(hidden)
        return (logits, {'pooled': hidden}) if return_features else logits

    def make_net(num_classes, width=16):
      return TinyNet(num_classes=num_classes, width=width)

    def not_a_module(num_classes):
      return 'a string'

    def wrong_outputs(num_classes):
      return TinyNet(num_classes=num_classes + 1)

    NOT_CALLABLE = 3
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
  """A module of the user's own, importable as `user_nets_<id>` (fresh per test)."""
  name = f'user_nets_{abs(hash(str(tmp_path))) % 10**8}'
  (tmp_path / 'src').mkdir()
  (tmp_path / 'src' / f'{name}.py').write_text(_NET)
  monkeypatch.syspath_prepend(str(tmp_path / 'src'))
  yield name
  sys.modules.pop(name, None)


def _mnist_config(data_dir, model, **changes):
  c = mnist_student.get_config()
  c.data_dir = data_dir
  c.model = config_lib.ml_collections.ConfigDict(model)
  c.train_examples = 1024
  c.batch_size = 64
  c.num_epochs = 3
  c.optimizer.learning_rate = 1e-2
  c.eval_batch_size = 1000
  return config_lib.override(c, changes)


@pytest.mark.slow
def test_an_imported_model_trains_restores_and_teaches(user_module, mnist_data_dir, tmp_path):
  model = {'name': f'{user_module}:make_net', 'options': {'width': 24}}
  teacher = _mnist_config(mnist_data_dir, model)
  results = loop.train_and_evaluate(teacher, str(tmp_path / 'teacher'))
  assert results['model'] == f'{user_module}:make_net'
  # 784·24 + 24 weights and biases, then 24·10 + 10.
  assert results['params'] == 784 * 24 + 24 + 24 * 10 + 10
  assert results['test_accuracy'] > 0.75
  saved = json.loads((tmp_path / 'teacher' / 'config.json').read_text())
  assert saved['model'] == model
  restored = checkpoint.restore_variables(str(tmp_path / 'teacher'),
                                         results['final_checkpoint_epoch'])
  assert restored['params']['Dense_0']['kernel'].shape == (784, 24)
  assert models.count_params(restored['params']) == results['params']
  student = _mnist_config(mnist_data_dir, {'name': f'{user_module}:TinyNet', 'width': 8},
                          **{'teacher.workdir': str(tmp_path / 'teacher')})
  distilled = loop.train_and_evaluate(student, str(tmp_path / 'student'))
  assert distilled['params'] == 784 * 8 + 8 + 8 * 10 + 10
  assert distilled['teacher']['model'] == f'{user_module}:make_net'
  assert distilled['teacher']['test_accuracy'] == results['test_accuracy']
  assert distilled['test_accuracy'] > 0.4  # chance is 0.1
  # The teacher's module gone: a later student is refused before it writes.
  os.rename(tmp_path / 'src' / f'{user_module}.py', tmp_path / 'src' / 'moved.py')
  sys.modules.pop(user_module)
  importlib.invalidate_caches()
  with pytest.raises(ConfigError, match=f"the teacher's config.model.name='{user_module}:"
                     f"make_net': module '{user_module}' does not import"):
    loop.train_and_evaluate(_mnist_config(
        mnist_data_dir, {'name': 'mlp', 'hidden': (8,)},
        **{'teacher.workdir': str(tmp_path / 'teacher')}), str(tmp_path / 'student2'))
  assert not (tmp_path / 'student2').exists()


@pytest.mark.parametrize('name, expected', [
    ('no_such_module_xyz:make_net', "module 'no_such_module_xyz' does not import"),
    ('{m}:missing', "has no attribute 'missing'"),
    ('{m}:NOT_CALLABLE', "'NOT_CALLABLE' is a int, not callable"),
    ('{m}:not_a_module', 'the factory returned a str, not a flax.linen.Module'),
    ('{m}:wrong_outputs', 'gives outputs of shape (11,) on 28x28x1 mnist images'),
    ('{m}:make_net', 'does not accept these options'),
])
def test_an_unusable_import_path_is_refused_in_one_line(user_module, mnist_data_dir, tmp_path,
                                                         name, expected):
  options = {'depth': 3} if name == '{m}:make_net' else {}
  config = _mnist_config(mnist_data_dir, {'name': name.format(m=user_module),
                                          'options': options})
  with pytest.raises(ConfigError) as error:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert expected in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists() or not os.listdir(tmp_path / 'run')


# --- datasets of one's own ---------------------------------------------------------------


def _save(path, pixels):
  from PIL import Image
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(pixels, np.uint8).squeeze()).save(path)


def _folder(root, counts, channels=3, size=8, seed=0):
  """Class folders of random images: `counts` maps class name -> number of images."""
  rng = np.random.default_rng(seed)
  for name, count in counts.items():
    os.makedirs(root / name, exist_ok=True)
    for i in range(count):
      _save(str(root / name / f'{i}.png'), rng.integers(0, 256, (size, size, channels)))
  return root


def _folder_config(path, **changes):
  c = config_lib.default()
  c.dataset = f'folder:{path}'
  c.model = config_lib.ml_collections.ConfigDict({'name': 'mlp', 'hidden': (8,)})
  c.data.image_size = 8
  c.batch_size = 4
  c.eval_batch_size = 8
  c.num_epochs = 1
  return config_lib.override(c, changes)


def test_a_folder_is_decoded_split_and_described(tmp_path):
  root = _folder(tmp_path / 'images', {'b_cats': 10, 'a_dogs': 5})
  (root / 'notes.txt').write_text('not an image')
  (root / 'a_dogs' / 'readme.md').write_text('not an image either')
  config = _folder_config(root)
  preflight.check(config)  # decodes into the cache
  info = data.catalog.get_info(config.dataset)
  assert (info.num_classes, info.image_shape) == (2, (8, 8, 3))
  dataset = data.load(config.dataset)
  # 20 % of each class held out: round(0.2 · 5) = 1 dog, round(0.2 · 10) = 2 cats.
  assert np.bincount(dataset.test.labels).tolist() == [1, 2]
  assert np.bincount(dataset.train.labels).tolist() == [4, 8]
  pixels = np.concatenate([dataset.train.images, dataset.test.images]).reshape(-1, 3) / 255
  train = dataset.train.images.reshape(-1, 3) / 255
  np.testing.assert_allclose(dataset.mean, train.mean(0), atol=1e-6)
  np.testing.assert_allclose(dataset.std, train.std(0), atol=1e-6)
  assert pixels.shape == (15 * 64, 3)
  # The same files, the same split, read back from the cache.
  custom._PREPARED.clear()
  again = data.load(config.dataset)
  np.testing.assert_array_equal(again.test.images, dataset.test.images)
  assert isinstance(again.train.images.base, np.memmap) or again.train.images.base is not None


def test_a_folder_with_train_and_test_folders_keeps_them(tmp_path):
  _folder(tmp_path / 'images' / 'train', {'x': 3, 'y': 4})
  _folder(tmp_path / 'images' / 'test', {'x': 2, 'y': 1}, seed=1)
  config = _folder_config(tmp_path / 'images')
  preflight.check(config)
  dataset = data.load(config.dataset)
  assert dataset.train.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
  assert sorted(dataset.test.labels.tolist()) == [0, 0, 1]  # in a seeded order


def _unreadable(root, name, count):
  for i in range(count):
    (root / name / f'broken{i}.png').write_bytes(b'not a png')


@pytest.mark.parametrize('layout, expected', [
    ('empty', "class folder {root}/b holds no JPEG or PNG images"),
    ('one', 'one class only (a); a classifier needs two or more class folders'),
    ('mixed', 'images mix channel counts (grayscale, e.g. {root}/b/0.png; colour, e.g.'),
    ('unreadable', '2 of 10 images cannot be read (e.g. {root}/a/broken0.png'),
    ('none', 'has no class folders'),
    ('missing', 'is not a directory'),
    ('stream', "streaming a folder: or tfds: dataset is not supported"),
    ('test_fraction', 'config.data.test_fraction=1.5: must be in (0, 1)'),
])
def test_an_unusable_folder_is_refused_in_one_line(tmp_path, layout, expected):
  root = tmp_path / 'images'
  root.mkdir()
  changes = {}
  if layout == 'empty':
    _folder(root, {'a': 3})
    (root / 'b').mkdir()
  elif layout == 'one':
    _folder(root, {'a': 3})
  elif layout == 'mixed':
    _folder(root, {'a': 3})
    _folder(root, {'b': 3}, channels=1)
  elif layout == 'unreadable':
    _folder(root, {'a': 4, 'b': 4})
    _unreadable(root, 'a', 2)
  elif layout == 'missing':
    root = tmp_path / 'nothing'
  elif layout in ('stream', 'test_fraction'):
    _folder(root, {'a': 3, 'b': 3})
    changes = ({'input.pipeline': 'stream'} if layout == 'stream'
               else {'data.test_fraction': 1.5})
  with pytest.raises(KDError) as error:
    loop.train_and_evaluate(_folder_config(root, **changes), str(tmp_path / 'run'))
  message = str(error.value)
  assert expected.format(root=root) in message and '\n' not in message
  assert not (tmp_path / 'run').exists()


def test_a_few_unreadable_images_among_many_are_skipped_and_counted(tmp_path, capsys):
  root = _folder(tmp_path / 'images', {'a': 20, 'b': 20})
  _unreadable(root, 'b', 2)  # 2 of 42: under 5 %
  config = _folder_config(root)
  preflight.check(config)
  assert f'skipped 2 unreadable image(s) of 42 (e.g. {root}/b/broken0.png' in capsys.readouterr().out
  dataset = data.load(config.dataset)
  assert len(dataset.train) + len(dataset.test) == 40


@pytest.mark.slow
def test_generated_shapes_train_well_above_chance(tmp_path):
  shapes.write(str(tmp_path / 'shapes'), per_class=300, size=12, seed=0)
  config = _folder_config(tmp_path / 'shapes', **{
      'data.image_size': 12, 'model.hidden': (256,), 'batch_size': 32, 'num_epochs': 8,
      'eval_batch_size': 120, 'optimizer.learning_rate': 3e-3})
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['num_train_examples'] == 4 * 240 and results['image_shape'] == [12, 12, 3]
  assert results['test_accuracy'] > 0.4  # chance: 0.25


def _store_tfds(data_dir, image_key='picture', label_key='kind', extra_image=False):
  """A TFDS dataset of 2 classes built in the test: bright (1) and dark (0) 6x6 squares."""
  import tensorflow_datasets as tfds
  rng = np.random.default_rng(0)
  features = {image_key: tfds.features.Image(shape=(6, 6, 3)),
              label_key: tfds.features.ClassLabel(names=['dark', 'bright'])}
  if extra_image:
    features['mask'] = tfds.features.Image(shape=(6, 6, 1))

  def examples(count):
    for i in range(count):
      label = i % 2
      example = {image_key: rng.integers(0, 100, (6, 6, 3), dtype=np.uint8) + 150 * label,
                 label_key: label}
      if extra_image:
        example['mask'] = np.zeros((6, 6, 1), np.uint8)
      yield i, example

  tfds.dataset_builders.store_as_tfds_dataset(
      name='my_squares', version='1.0.0', features=tfds.features.FeaturesDict(features),
      split_datasets={'train': examples(40), 'holdout': examples(10)}, data_dir=data_dir)


def test_a_tfds_dataset_of_ones_own_is_read_by_its_features(tmp_path):
  _store_tfds(str(tmp_path / 'tfds'))
  config = _folder_config('x', **{'dataset': 'tfds:my_squares:1.0.0',
                                  'data_dir': str(tmp_path / 'tfds'),
                                  'data.image_size': 0, 'data.test_split': 'holdout',
                                  'num_epochs': 3, 'batch_size': 8})
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['num_train_examples'] == 40 and results['image_shape'] == [6, 6, 3]
  assert results['num_classes'] == 2 and results['test_accuracy'] == 1.0
  dataset = data.load(config.dataset)
  assert len(dataset.test) == 10
  np.testing.assert_allclose(dataset.mean, dataset.train.images.reshape(-1, 3).mean(0) / 255,
                             atol=1e-6)


@pytest.mark.parametrize('changes, expected', [
    ({'data.test_split': 'test'}, "config.data.test_split='test': tfds:my_squares has splits"),
    ({'data.label_key': 'label'}, "config.data.label_key='label': tfds:my_squares has no "
     'ClassLabel feature of that name'),
    ({'dataset': 'tfds:other'}, "tfds:other: no prepared TFDS dataset 'other' in"),
    ({'dataset': 'tfds:my_squares:2.0.0'}, "no prepared TFDS dataset 'my_squares' version 2.0.0"),
    ({}, "config.data.image_key='': tfds:my_squares has 2 Image features (mask, picture)"),
])
def test_an_unusable_tfds_dataset_is_refused_in_one_line(tmp_path, changes, expected):
  _store_tfds(str(tmp_path / 'tfds'), extra_image=not changes)
  config = _folder_config('x', **{'dataset': 'tfds:my_squares', 'data_dir': str(tmp_path / 'tfds'),
                                  'data.image_size': 0, 'data.test_split': 'holdout', **changes})
  with pytest.raises(KDError) as error:
    loop.train_and_evaluate(config, str(tmp_path / 'run'))
  assert expected in str(error.value) and '\n' not in str(error.value)
  assert not (tmp_path / 'run').exists()


# --- docs/custom.md, end to end (shrunk) -------------------------------------------------

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DOC = os.path.join(_ROOT, 'docs', 'custom.md')
# Sizes only: images per class, epochs, batches, attacked examples, methods of the zoo.
_SHRINK = {'--per_class=2500': '--per_class=20', '--examples=500': '--examples=16',
           '--methods=kd,dkd,pkt': '--methods=kd --quick'}
_MAIN_SHRINK = ['--config.num_epochs=1', '--config.batch_size=16', '--config.eval_batch_size=16']


def _doc_commands(tmp_path) -> tuple[str, list[list[str]]]:
  """(the doc's my_net.py, its commands as argument lists with /tmp moved into tmp_path)."""
  from tests import test_commands
  with open(_DOC) as f:
    text = f.read()
  (source,) = re.findall(r'```python\n(.*?)```', text, re.S)
  # configs/custom.py reads folder:/tmp/shapes; the test's copy lives in tmp_path.
  relocated = f'--config.dataset=folder:{tmp_path}/shapes'
  commands = []
  for command in test_commands.quoted_commands(text):
    command = command.replace('/tmp/shapes', str(tmp_path / 'shapes'))
    command = command.replace('/tmp/custom', str(tmp_path / 'custom'))
    for full, small in _SHRINK.items():
      command = command.replace(full, small)
    words = shlex.split(command, comments=True)
    if len(words) > 3:  # without arguments: prose naming the module
      commands.append(words + [relocated] if words[2] == 'kdjax.main' else words)
  return source, commands


def _main_config(words: list[str]):
  """The config `python -m kdjax.main WORDS` runs (`--config.FIELD=VALUE` as absl parses it)."""
  arguments = dict(w[2:].split('=', 1) for w in words if w.startswith('--'))
  config = importlib.import_module(
      arguments.pop('config').removesuffix('.py').replace('/', '.')).get_config()
  workdir = arguments.pop('workdir')
  changes = {}
  for field, value in arguments.items():
    try:
      changes[field[len('config.'):]] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      changes[field[len('config.'):]] = value
  return config_lib.override(config, changes), workdir


@pytest.mark.slow
def test_the_docs_commands_run_as_written(tmp_path, monkeypatch, capsys):
  """Every command of docs/custom.md but the method zoo's, shrunk: the first `kdjax.main`
  as a process, as a user types it, the others in this process (same config, same code)."""
  source, commands = _doc_commands(tmp_path)
  (tmp_path / 'user').mkdir()
  (tmp_path / 'user' / 'my_net.py').write_text(source)
  monkeypatch.syspath_prepend(str(tmp_path / 'user'))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, str(tmp_path / 'user')]))
  modules = [words[2] for words in commands]
  assert modules == ['kdjax.data.shapes'] + ['kdjax.main'] * 6 + [
      'experiments.method_zoo'] * 2 + ['kdjax.evaluate'] * 2 + ['experiments.benchmark']
  first_main = True
  for words in commands:  # the launchers' commands run in the two tests below
    if words[2] == 'kdjax.data.shapes':
      assert shapes.main(words[3:]) == 0
    elif words[2] == 'kdjax.main' and first_main:
      done = subprocess.run([sys.executable, *words[1:], *_MAIN_SHRINK], cwd=_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
      assert done.returncode == 0, done.stderr[-2000:]
      assert 'done: test accuracy' in done.stdout
      first_main = False
    elif words[2] == 'kdjax.main':
      config, workdir = _main_config(words[3:] + _MAIN_SHRINK)
      results = loop.train_and_evaluate(config, workdir)
      assert results['params'] == 3072 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4  # width 16
      assert bool(config.teacher.workdir) == ('teacher' in results and bool(results['teacher']))
    elif words[2] == 'kdjax.evaluate':
      capsys.readouterr()
      assert evaluate.main(words[3:]) == 0
      assert 'test' in capsys.readouterr().out
  student = tmp_path / 'custom' / 'student_kd'
  robustness = json.loads((student / 'robustness.json').read_text())
  assert robustness['pgd eps=0.03']['examples'] == 16
  evaluation = json.loads((student / 'evaluation.json').read_text())
  assert evaluation['test']['examples'] == 16  # a fifth of 20 images per class, 4 classes
  teacher = json.loads((tmp_path / 'custom' / 'teacher' / 'config.json').read_text())
  assert teacher['model'] == {'name': 'my_net:Net', 'options': {'width': 256}}


@pytest.mark.slow
def test_the_docs_method_zoo_commands_run_on_the_folder(tmp_path, patches_conv):
  """docs/custom.md's method-zoo commands, as processes, at --quick size with KD only (with
  kdjax's CPU convolution, as the command has outside the tests: its conv nets train for
  epochs): the preset's networks, then its student swapped for the doc's `Net`."""
  source, commands = _doc_commands(tmp_path)
  shapes.write(str(tmp_path / 'shapes'), per_class=25, size=32)
  (tmp_path / 'user').mkdir()
  (tmp_path / 'user' / 'my_net.py').write_text(source)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([_ROOT, str(tmp_path / 'user')]))
  plain, swapped = [w for w in commands if w[2] == 'experiments.method_zoo']
  for words, name in ((plain, 'zoo'), (swapped, 'zoo_net')):
    done = subprocess.run([sys.executable, *words[1:]], cwd=_ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (tmp_path / 'custom' / name / 'report.md').read_text()
    assert f'dataset `folder:{tmp_path}/shapes`' in report
    assert re.search(r'^\| kd \| \d+\.\d+%', report, re.M), report
  # The swapped comparison: the student is the doc's Net at width 16 in every stage that
  # trains it (alone and distilled); the teacher is still the preset's ResNet-20.
  runs = {}
  for path in (tmp_path / 'custom' / 'zoo_net').glob('**/results.json'):
    results = json.loads(path.read_text())
    if 'members' not in results:
      runs[path.parent.name] = results
  students = [r for r in runs.values() if r['config']['model']['name'] == 'my_net:Net']
  assert len(students) >= 2, sorted(runs)
  for results in students:
    assert results['config']['model'] == {'name': 'my_net:Net', 'options': {'width': 16}}
    assert results['params'] == 3072 * 16 + 16 + 16 * 16 + 16 + 16 * 4 + 4
  teachers = [r for r in runs.values() if r['model'] == 'resnet20']
  assert teachers and all(r['teacher'] is None for r in teachers)


@pytest.mark.slow
def test_the_docs_benchmark_section_times_a_cold_and_a_warm_start(tmp_path):
  """docs/custom.md's `python -m experiments.benchmark --sections=j`, at --quick size."""
  _, commands = _doc_commands(tmp_path)
  (words,) = [w for w in commands if w[2] == 'experiments.benchmark']
  table = tmp_path / 'bench.json'
  done = subprocess.run([sys.executable, *words[1:], '--quick', f'--json={table}'], cwd=_ROOT,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, PYTHONPATH=_ROOT))
  assert done.returncode == 0, done.stderr[-2000:]
  measured = json.loads(table.read_text())
  rows = measured['whole_commands']
  assert [(r['section'], r['cache']) for r in rows] == [('j', 'cold'), ('j', 'warm')]
  assert rows[0]['command'] == 'folder of 400 32x32 PNGs, MLP 256, 1 epoch'
  cold, warm = rows
  # The warm start maps the decoded arrays and reads the compiled programs back.
  assert warm['to_first_step_seconds'] < cold['to_first_step_seconds']
  assert [r['section'] for r in measured['ratios']] == ['j', 'j']
  assert measured['ratios'][0]['value'] == warm['to_first_step_seconds']
  assert '| j | folder of 400 32x32 PNGs, MLP 256, 1 epoch | warm |' in done.stdout


@pytest.mark.slow
def test_a_folder_trains_a_vectorised_seed_sweep_and_resizes_on_request(tmp_path):
  root = _folder(tmp_path / 'images', {'a': 10, 'b': 10}, size=12)
  config = _folder_config(root, **{'sweep.seed': (0, 1), 'sweep.mode': 'vmap'})
  results = loop.train_and_evaluate(config, str(tmp_path / 'sweep'))
  assert [m['label'] for m in results['members']] == ['seed0', 'seed1']
  assert all(0 <= m['test_accuracy'] <= 1 for m in results['members'])
  small = _folder_config(root, **{'data.image_size': 4})
  preflight.check(small)
  assert data.catalog.get_info(small.dataset).image_shape == (4, 4, 3)
  assert data.load(small.dataset).train.images.shape == (16, 4, 4, 3)


def test_a_named_tfds_image_feature_settles_which_of_two_is_read(tmp_path):
  _store_tfds(str(tmp_path / 'tfds'), extra_image=True)
  config = _folder_config('x', **{'dataset': 'tfds:my_squares', 'data_dir': str(tmp_path / 'tfds'),
                                  'data.image_size': 4, 'data.test_split': 'holdout',
                                  'data.image_key': 'picture', 'batch_size': 8})
  preflight.check(config)
  dataset = data.load(config.dataset)
  assert dataset.image_shape == (4, 4, 3) and len(dataset.train) == 40
  assert data.catalog.get_info(config.dataset).num_classes == 2
