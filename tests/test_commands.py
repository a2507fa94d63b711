"""The README's long commands, at smoke-test size: hinton_mnist and the benchmark."""

import json
import os
import subprocess
import sys

from tests import test_presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(module, args, timeout=900):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_hinton_mnist_quick_writes_every_row_and_skips_finished_stages(mnist_data_dir, tmp_path):
  args = [f'--workdir={tmp_path}', '--quick', '--train_examples=2000',
          f'--data_dir={mnist_data_dir}']
  out = _run('experiments.hinton_mnist', args)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads((tmp_path / 'report.json').read_text())
  labels = [row['label'] for row in report['rows']]
  for expected in ('teacher 1200-1200', '800-800 alone', '800-800 distilled, T=20, soft only',
                   '800-800 distilled, T=20, alpha=0.9', '30-30 alone', '300-300 alone',
                   '800-800 alone, no 3s', '800-800 distilled, no 3s, T=20, soft only'):
    assert expected in labels, labels
  assert any(m.startswith('30-30 distilled, T=') and 'chosen on validation' in m for m in labels)
  assert any(m.endswith('bias paper +3.5') for m in labels)
  assert any(m.endswith('bias chosen on validation') for m in labels)
  assert report['rows'][labels.index('800-800 alone, no 3s')]['omitted_errors'] == 1010
  for row in report['rows']:
    assert 0 <= row['test_errors'] <= 10000 and all(os.path.isdir(w) for w in row['workdirs'])
  # Every row says what its runs trained with (T, alpha, widths, omitted digit).
  assert test_presets.check_report_rows(report) == len(report['rows'])
  test_presets.check_selections(report)
  assert all(s['selected_on'] == 'validation' for s in report['selections'])
  for png in ('errors_vs_temperature.png', 'grid_30.png', 'grid_300.png',
              'omitted_digit_per_class.png'):
    assert (tmp_path / png).exists()
  text = (tmp_path / 'report.md').read_text()
  assert '| model | test errors |' in text and '--train_examples=2000' in text
  assert 'Validation: seeded 10 % of the training split (validation_seed 0), 6,000 images' in text
  # A second run trains nothing: every stage is found finished.
  before = {p: os.path.getmtime(p) for p in tmp_path.glob('*/results.json')}
  again = _run('experiments.hinton_mnist', args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count('nothing to do') == len(before)
  assert 'epoch 1/' not in again.stdout
  assert {p: os.path.getmtime(p) for p in tmp_path.glob('*/results.json')} == before
  assert json.loads((tmp_path / 'report.json').read_text())['rows'] == report['rows']


def test_benchmark_prints_its_table(tmp_path, mnist_data_dir, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', mnist_data_dir)  # row (e) streams the real MNIST
  out = _run('experiments.benchmark', ['--quick', '--repeats=1', f'--json={tmp_path}/b.json'])
  assert out.returncode == 0, out.stderr[-3000:]
  for fragment in ('teacher train step', 'cached teacher logits', '3x3 grid vectorised',
                   'host loop', 'streamed from TFDS', "kdjax's convolution", 'peak resident memory',
                   '| ratio | measured | target |'):
    assert fragment in out.stdout, out.stdout
  data = json.loads((tmp_path / 'b.json').read_text())
  assert len(data['ratios']) == 10 and all(r['value'] > 0 for r in data['ratios'])
  # (f), quick: the distillation command, cold and warm cache; the warm one
  # compiles less and reaches its first step sooner.
  commands = data['whole_commands']
  assert [(c['command'].split(',')[0], c['cache']) for c in commands] == [
      ('800-800 distillation', 'cold'), ('800-800 distillation', 'warm')]
  for cold, warm in (commands,):
    assert warm['compile_seconds'] < cold['compile_seconds']
    assert 0 < warm['to_first_step_seconds'] < cold['to_first_step_seconds'] < cold[
        'process_seconds']
  assert '| whole command | cache |' in out.stdout
  teacher = next(r for r in data['rows'] if r['name'] == '1200-1200 teacher train step')
  # XLA's count of one step: forward + backward ≈ 3 × 2 × batch × weights, within 25%.
  weights = 784 * 1200 + 1200 * 1200 + 1200 * 10
  assert 0.75 < teacher['flops_per_step'] / (6 * 128 * weights) < 1.25
