"""The command line end to end on real MNIST: results, resume rules, bad input."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'kdjax.main', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def _snapshot(directory):
  """Every file under directory with its size and modification time."""
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      stat = os.stat(path)
      out[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
  return out


@pytest.fixture(scope='module')
def student_run(mnist_data_dir, tmp_path_factory):
  """One epoch of the 800-800 student on the real MNIST, from the CLI."""
  workdir = str(tmp_path_factory.mktemp('student'))
  out = _run(['--config=configs/mnist_student.py', f'--workdir={workdir}',
              '--config.num_epochs=1', f'--config.data_dir={mnist_data_dir}'])
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out


def test_one_epoch_writes_results_and_reaches_95_percent(student_run):
  workdir, out = student_run
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  assert results['dataset'] == 'mnist'
  assert results['model'] == 'mlp'
  assert results['params'] == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
  assert results['test_accuracy'] >= 0.95
  assert results['test_errors'] == round((1 - results['test_accuracy']) * 10000)
  # Without a validation split there is nothing to select on: no selection
  # fields, and the best test accuracy only under `oracle`.
  assert results['validation'] is None and 'best_validation_epoch' not in results
  assert 'best_test_accuracy' not in results
  assert results['oracle']['best_test_accuracy'] == results['test_accuracy']
  assert results['oracle']['best_test_epoch'] == 1
  assert results['data_seed'] == 0 and results['omit_classes'] == results['keep_classes'] == []
  assert results['diverged'] is False and results['diverged_at_step'] is None
  assert len(results['per_class_accuracy']) == 10
  assert results['epochs'] == 1 and results['num_train_examples'] == 60000
  assert results['train_seconds'] > 0 and results['examples_per_second'] > 0
  assert results['flops_per_example'] > 2 * 784 * 800
  # One step as XLA counts it (taken from the compiled epoch, whose loop body
  # it counts once): 2 × batch × (forward + weight gradients + input gradients
  # of every layer but the first) multiply-adds, plus elementwise work.
  weights = 784 * 800 + 800 * 800 + 800 * 10
  assert 1.0 < results['train_step_flops'] / (2 * 128 * (3 * weights - 784 * 800)) < 1.1
  assert results['config']['model']['hidden'] == [800, 800]
  assert [h['epoch'] for h in results['history']] == [1]
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '1'))
  assert os.path.exists(os.path.join(workdir, 'curves.png'))
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(workdir))
  assert 'epoch 1/1' in out.stdout and 'ex/s' in out.stdout


def test_finished_run_is_not_redone(student_run):
  workdir, _ = student_run
  before = _snapshot(workdir)
  out = _run(['--config=configs/mnist_student.py', f'--workdir={workdir}',
              '--config.num_epochs=1'])
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'nothing to do' in out.stdout
  assert _snapshot(workdir) == before


@pytest.mark.slow
def test_distilled_student_from_a_finished_teacher(student_run, mnist_data_dir, tmp_path):
  teacher_dir, _ = student_run
  out = _run(['--config=configs/mnist_distill.py', f'--workdir={tmp_path}',
              f'--config.teacher.workdir={teacher_dir}', '--config.num_epochs=1',
              '--config.model.hidden=(30,30)', f'--config.data_dir={mnist_data_dir}'])
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(tmp_path, 'results.json')) as f:
    results = json.load(f)
  assert results['teacher']['cached'] is True
  assert results['teacher']['workdir'] == teacher_dir
  assert results['temperature'] == 20.0 and results['alpha'] == 1.0
  assert results['test_accuracy'] > 0.85
  # The student's checkpoint holds the student only.
  assert results['params'] == 784 * 30 + 30 + 30 * 30 + 30 + 30 * 10 + 10


def test_epoch_chosen_on_validation_is_the_argmax_of_the_history(mnist_data_dir, tmp_path):
  """With a validation split, the selected epoch is read off the validation
  accuracies of the history and reported with that epoch's test accuracy;
  a sweep reports mean ± std over seeds and a member chosen on validation.

  Small and noisy on purpose (512 examples, Adam at 3e-2, eight epochs): the
  validation curves of seeds 0 and 1 peak at epoch 6, 1.7 and 2.7 points
  above their last epoch.
  """
  import numpy as np
  from kdjax import config as config_lib
  from kdjax import train
  c = config_lib.default()
  c.data_dir, c.model.hidden, c.train_examples = mnist_data_dir, (32,), 512
  c.batch_size, c.num_epochs, c.eval_every = 32, 8, 1
  c.optimizer.learning_rate = 3e-2
  c.validation_fraction, c.validation_seed = 0.02, 3
  c.sweep.seed, c.sweep.mode = (0, 1, 2), 'vmap'
  sweep = train.train_and_evaluate(c, str(tmp_path / 'sweep'))
  assert 'test_accuracy' not in sweep  # no best-of-members number at the top
  runs = []
  for row in sweep['members']:
    with open(os.path.join(row['workdir'], 'results.json')) as f:
      results = json.load(f)
    history = results['history']
    assert [h['epoch'] for h in history] == list(range(1, 9))
    validation = [h['validation_accuracy'] for h in history]
    best = int(np.argmax(validation))  # the earliest of equals
    assert results['best_validation_epoch'] == history[best]['epoch']
    assert results['best_validation_accuracy'] == validation[best]
    assert results['test_accuracy_at_best_validation'] == history[best]['test_accuracy']
    assert results['validation_accuracy'] == validation[-1]
    assert results['test_accuracy'] == history[-1]['test_accuracy']
    assert results['oracle']['best_test_accuracy'] == max(h['test_accuracy'] for h in history)
    assert 'best_test_accuracy' not in results
    assert results['validation'] == {'examples': 1200, 'fraction': 0.02, 'seed': 3}
    runs.append(results)
  # The selection is not the last epoch in at least one member, and there it
  # reports another test accuracy than the last epoch's.
  assert any(r['best_validation_epoch'] != 8
             and r['test_accuracy_at_best_validation'] != r['test_accuracy'] for r in runs), [
                 [h['validation_accuracy'] for h in r['history']] for r in runs]
  chosen = max(sweep['members'], key=lambda row: row['validation_accuracy'])
  assert sweep['selection']['chosen'] == chosen['label']
  assert sweep['selection']['test_accuracy'] == chosen['test_accuracy']
  (group,) = sweep['groups']  # the seeds of one setting
  assert sorted(group['seeds']) == [0, 1, 2]
  np.testing.assert_allclose(group['test_accuracy_mean'],
                             np.mean([r['test_accuracy'] for r in runs]))
  np.testing.assert_allclose(group['test_accuracy_std'],
                             np.std([r['test_accuracy'] for r in runs], ddof=1))


def _one_line_error(out):
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  assert 'Traceback' not in out.stderr
  lines = [l for l in out.stderr.strip().splitlines() if l.startswith('error:')]
  assert len(lines) == 1, out.stderr[-2000:]
  return lines[0]


def test_a_different_config_is_refused_and_nothing_changes(student_run):
  workdir, _ = student_run
  before = _snapshot(workdir)
  out = _run(['--config=configs/mnist_student.py', f'--workdir={workdir}',
              '--config.num_epochs=1', '--config.batch_size=64'])
  line = _one_line_error(out)
  assert 'batch_size' in line and 'overwrite' in line
  assert _snapshot(workdir) == before


@pytest.mark.parametrize('override, expected', [
    ('--config.no_such_field=1', 'no_such_field'),
    ('--config.num_epochs=many', 'num_epochs'),
    ('--config.distill.temperature=0', 'distill.temperature'),
    ('--config.distill.alpha=1.5', 'distill.alpha'),
    ('--config.batch_size=0', 'batch_size'),
    ('--config.num_epochs=-2', 'num_epochs'),
    ('--config.optimizer.learning_rate=0', 'optimizer.learning_rate'),
    ('--config.model.name=transformer', 'mlp'),
    ('--config.dataset=svhn', 'fashion_mnist'),
    ('--config.teacher.workdir=/nonexistent/teacher', '/nonexistent/teacher'),
])
def test_bad_input_gives_one_line_and_exit_2(override, expected, tmp_path):
  config = 'configs/mnist_distill.py'
  out = _run([f'--config={config}', f'--workdir={tmp_path}/run', override])
  line = _one_line_error(out)
  assert expected in line, line
  assert not os.path.exists(f'{tmp_path}/run')  # refused before the workdir was made


@pytest.mark.slow
def test_sweep_in_turn_matches_the_vectorised_sweep(mnist_data_dir, tmp_path):
  """sweep.mode='loop' trains the members one by one into the same layout."""
  from kdjax import config as config_lib
  from kdjax import train
  outs = {}
  for mode in ('vmap', 'loop'):
    c = config_lib.default()
    c.data_dir, c.model.hidden, c.train_examples = mnist_data_dir, (16,), 2048
    c.num_epochs, c.sweep.seed, c.sweep.mode = 1, (0, 1), mode
    outs[mode] = train.train_and_evaluate(c, str(tmp_path / mode))
  assert outs['vmap']['sweep_mode'] == 'vmap' and outs['loop']['sweep_mode'] == 'loop'
  for a, b in zip(outs['vmap']['members'], outs['loop']['members']):
    assert a['label'] == b['label'] and a['seed'] == b['seed']
    assert abs(a['test_accuracy'] - b['test_accuracy']) <= 0.002
    assert os.path.exists(os.path.join(b['workdir'], 'results.json'))
  again = train.train_and_evaluate(c, str(tmp_path / 'loop'))  # finished: nothing retrained
  assert again['members'] == outs['loop']['members']
