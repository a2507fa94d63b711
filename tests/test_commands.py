"""The commands the README and docs/ quote, and the README's long commands at smoke-test size.

Every `python -m experiments.NAME ...` and `python -m kdjax.main ...` quoted in
README.md or docs/**/*.md (in a fenced block or an inline code span) is held
against what the module accepts: its absl flags, its presets, the datasets of
the catalog and, for `--config.FIELD=...`, the fields of the config file it
names. Every relative link there points to an existing file (and heading), and
the README stays short. hinton_mnist and the benchmark then run at smoke-test
size.
"""

import functools
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from kdjax import models
from kdjax.models import flops
from tests import test_presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
PAGES = [README, *sorted(glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True))]
README_MAX_LINES = 300
# The modules whose quoted commands are checked: the launchers and kdjax.main.
_CHECKED = re.compile(r'experiments\.[a-z0-9_]+|kdjax\.main')
_FENCE = re.compile(r'^```[^\n]*\n(.*?)^```', re.S | re.M)
_INLINE = re.compile(r'(?<!`)`(python -m [^`]+)`(?!`)')
_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def _relative(path: str) -> str:
  return os.path.relpath(path, ROOT)


def _text_outside_fences(text: str) -> str:
  return _FENCE.sub('', text)


def quoted_commands(text: str) -> list[str]:
  """Every `python -m MODULE ...` in a fenced block (continuation lines joined; a trailing
  comment stays, `command_problems` drops it) or in an inline code span (which may wrap
  across lines)."""
  commands = []
  for block in _FENCE.findall(text):
    for line in block.replace('\\\n', ' ').split('\n'):
      start = line.find('python -m ')
      if start >= 0:
        commands.append(line[start:])
  for span in _INLINE.findall(_text_outside_fences(text)):
    commands.append(' '.join(span.split()))
  return commands


def _launcher_modules() -> list[str]:
  """The experiments/*.py modules run as `python -m experiments.NAME`."""
  names = []
  for path in sorted(glob.glob(os.path.join(ROOT, 'experiments', '*.py'))):
    with open(path) as f:
      if "if __name__ == '__main__':" in f.read():
        names.append(os.path.splitext(os.path.basename(path))[0])
  return names


_PROBE = """
import importlib, json, sys
from absl import flags
module = importlib.import_module(sys.argv[1])
print(json.dumps({'flags': sorted(flags.FLAGS),
                  'presets': sorted(getattr(module, 'PRESETS', None) or ()),
                  'methods': list(getattr(module, 'METHODS', None) or ())}))
"""


@functools.lru_cache(maxsize=None)
def accepted(module: str) -> dict:
  """What `python -m module` accepts: its absl flags (itself and its imports), its presets."""
  out = subprocess.run([sys.executable, '-c', _PROBE, module], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@functools.lru_cache(maxsize=None)
def _config_of(path: str):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location('_quoted_config', os.path.join(ROOT, path))
  module = importlib.util.module_from_spec(spec)
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  spec.loader.exec_module(module)
  return module.get_config()


def command_problems(command: str) -> list[str]:
  """What in `command` the module it runs would refuse ([] when nothing)."""
  from kdjax.data import catalog  # pylint: disable=import-outside-toplevel
  words = shlex.split(command, comments=True)
  module = words[2]
  if not _CHECKED.fullmatch(module):
    return []
  if module.startswith('experiments.') and module.split('.')[1] not in _launcher_modules():
    return [f'{module} is not a launcher']
  known = accepted(module)
  arguments = dict(w[2:].split('=', 1) if '=' in w else (w[2:], '')
                   for w in words[3:] if w.startswith('--'))
  problems = [f'positional argument {w!r}' for w in words[3:] if not w.startswith('--')]
  config = None
  # No arguments: prose naming the module; `--config=...`: a placeholder.
  if module == 'kdjax.main' and arguments and arguments.get('config') != '...':
    path = arguments.get('config', '').split(':')[0]
    if not os.path.isfile(os.path.join(ROOT, path)):
      return problems + [f'--config={path}: no such file']
    config = _config_of(path)
  for name, value in arguments.items():
    if name.startswith('config.') and config is not None:
      node = config
      for part in name.split('.')[1:]:
        if not hasattr(node, 'keys') or part not in node:
          problems.append(f'--{name}: {path} has no such field')
          break
        node = node[part]
    elif name not in known['flags'] and not (
        name.startswith('no') and name[2:] in known['flags']):
      problems.append(f'--{name}: no such flag')
    elif name == 'preset' and value not in known['presets']:
      problems.append(f'--preset={value}: known: {", ".join(known["presets"])}')
    elif name == 'dataset' and not (value in catalog.DATASETS
                                    or value.startswith(('folder:', 'tfds:'))):
      problems.append(f'--dataset={value}: not in the catalog, nor folder:PATH or tfds:NAME')
    elif name == 'methods' and known['methods']:
      problems.extend(f'--methods: {m} unknown' for m in value.split(',')
                      if m not in known['methods'])
  return problems


def test_quoted_commands_are_found():
  """The parser sees fenced and inline commands, wrapped or not, and checks what they name."""
  text = (
      "```bash\n"
      "python -m experiments.cifar_kd --preset=seed001 \\\n"
      "    --workdir=runs/a   # a comment\n"
      "```\n"
      "In prose, `python -m experiments.self_kd --preset=cpu\n--workdir=b` (1 min).\n")
  assert quoted_commands(text) == [
      'python -m experiments.cifar_kd --preset=seed001      --workdir=runs/a   # a comment',
      'python -m experiments.self_kd --preset=cpu --workdir=b']
  assert command_problems('python -m experiments.cifar_kd --preset=nope --workdir=a') == [
      '--preset=nope: known: cpu, seed001, seed003, seed004']
  assert command_problems('python -m experiments.self_kd --no_such_flag=1') == [
      '--no_such_flag: no such flag']
  assert command_problems('python -m kdjax.main --config=configs/mnist_student.py '
                          '--workdir=w --config.model.hidden=(1,) --config.nope=1') == [
      '--config.nope: configs/mnist_student.py has no such field']
  assert command_problems('python -m experiments.self_kd --nocache --workdir=w') == []


@pytest.mark.parametrize('page', PAGES, ids=_relative)
def test_quoted_commands_are_accepted(page):
  with open(page) as f:
    commands = quoted_commands(f.read())
  problems = {c: p for c in commands if (p := command_problems(c))}
  assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)


def test_every_launcher_has_a_page_linked_from_the_readme():
  with open(README) as f:
    readme = f.read()
  commands = ' '.join(c for page in PAGES for c in quoted_commands(open(page).read()))
  for name in _launcher_modules():
    page = f'docs/experiments/{name}.md'
    assert os.path.isfile(os.path.join(ROOT, page)), page
    assert f']({page})' in readme, f'the README does not link {page}'
    assert f'python -m experiments.{name}' in commands, f'no command quotes {name}'


def test_readme_is_short():
  with open(README) as f:
    lines = f.read().count('\n')
  assert lines <= README_MAX_LINES, f'README.md has {lines} lines; at most {README_MAX_LINES}'


def _anchors(path: str) -> set[str]:
  """GitHub's anchors of a markdown file's headings."""
  with open(path) as f:
    text = _text_outside_fences(f.read())
  anchors = set()
  for heading in re.findall(r'^#+ (.+)$', text, re.M):
    anchor = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
    anchors.add(anchor)
  return anchors


@pytest.mark.parametrize('page', PAGES, ids=_relative)
def test_relative_links_point_to_existing_files(page):
  with open(page) as f:
    links = _LINK.findall(_text_outside_fences(f.read()))
  broken = []
  for link in links:
    if re.match(r'[a-z]+:', link):
      continue
    target, _, anchor = link.partition('#')
    path = os.path.normpath(os.path.join(os.path.dirname(page), target)) if target else page
    if not os.path.exists(path):
      broken.append(link)
    elif anchor and path.endswith('.md') and anchor not in _anchors(path):
      broken.append(f'{link} (no such heading)')
  assert not broken, broken


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


def _benchmark(tmp_path, sections: str):
  out = _run('experiments.benchmark', ['--quick', '--repeats=1', f'--sections={sections}',
                                       f'--json={tmp_path}/b.json'])
  assert out.returncode == 0, out.stderr[-3000:]
  assert '| ratio | measured | target |' in out.stdout and 'peak resident memory' in out.stdout
  data = json.loads((tmp_path / 'b.json').read_text())
  assert data['whole_commands'] == [] and '| whole command |' not in out.stdout
  assert all(r['value'] > 0 for r in data['ratios'])
  return out.stdout, data


@pytest.mark.slow
def test_benchmark_prints_its_programs_table(tmp_path, mnist_data_dir, monkeypatch,
                                            patches_conv):
  monkeypatch.setenv('TFDS_DATA_DIR', mnist_data_dir)  # row (e) streams the real MNIST
  stdout, data = _benchmark(tmp_path, 'a,b,c,d,e,g')
  for fragment in ('teacher train step', 'cached teacher logits', '3x3 grid vectorised',
                   'host loop', 'streamed from TFDS', "kdjax's convolution"):
    assert fragment in stdout, stdout
  assert [r['section'] for r in data['ratios']] == list('abbccdeg')
  teacher = next(r for r in data['rows'] if r['name'] == '1200-1200 teacher train step')
  # XLA's count of one step: forward + backward ≈ 3 × 2 × batch × weights, within 25%.
  weights = 784 * 1200 + 1200 * 1200 + 1200 * 10
  assert 0.75 < teacher['flops_per_step'] / (6 * 128 * weights) < 1.25


@pytest.mark.slow
def test_benchmark_prints_its_resnet_rows(tmp_path, patches_conv):
  stdout, data = _benchmark(tmp_path, 'h')
  for fragment in ('ResNet-18 64px batch 8 train step, bfloat16', 'distillation step'):
    assert fragment in stdout, stdout
  assert [r['section'] for r in data['ratios']] == list('hhhhh')  # 2 speeds, 3 FLOP rates
  # (h): a ResNet-18 train step ≈ 3 × its forward pass, per image, within 25%.
  model = models.create('resnet18', num_classes=1000, stem='imagenet')
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)),
                                                train=False))
  forward = flops.forward_flops_per_example(model, variables, (64, 64, 3))
  resnet = next(r for r in data['rows'] if r['name'] == 'ResNet-18 64px batch 8 train step, float32')
  assert 0.75 < resnet['flops_per_step'] / (3 * 8 * forward) < 1.25


@pytest.mark.slow
def test_benchmark_times_whole_commands_cold_and_warm(tmp_path, mnist_data_dir):
  out = _run('experiments.benchmark', ['--quick', '--repeats=1', '--sections=f',
                                       f'--json={tmp_path}/b.json'])
  assert out.returncode == 0, out.stderr[-3000:]
  data = json.loads((tmp_path / 'b.json').read_text())
  assert data['rows'] == [] and '| whole command | cache |' in out.stdout
  # (f), quick: the distillation command, cold and warm cache; the warm one
  # compiles less and reaches its first step sooner.
  commands = data['whole_commands']
  assert [(c['command'].split(',')[0], c['cache']) for c in commands] == [
      ('800-800 distillation', 'cold'), ('800-800 distillation', 'warm')]
  for cold, warm in (commands,):
    assert warm['compile_seconds'] < cold['compile_seconds']
    assert 0 < warm['to_first_step_seconds'] < cold['to_first_step_seconds'] < cold[
        'process_seconds']
  assert [r['section'] for r in data['ratios']] == ['f', 'f']


def test_benchmark_refuses_an_unknown_section():
  out = _run('experiments.benchmark', ['--sections=a,z'])
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert "flag --sections=['a', 'z']: choose among a,b,c,d,e,f,g,h,i,j" in out.stderr
