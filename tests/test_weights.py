"""torchvision weights into kdjax: layouts, equal logits, the import command, evaluation.

The reference models are torchvision's own definitions (loaded without its
compiled operators, see tests/torchvision_reference.py) with random weights
and random, non-trivial BatchNorm running statistics, in eval mode.
"""

import hashlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import config as config_lib
from kdjax import evaluate, weights
from kdjax.errors import KDError
from kdjax.train import checkpoint, loop
from kdjax.train import results as results_lib
from tests import torchvision_reference

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torchvision_resnet(arch: str, seed: int = 0):
  """A torchvision ResNet in eval mode, every BatchNorm with random affine and statistics."""
  torch, tv_models, _ = torchvision_reference.load()
  torch.manual_seed(seed)
  model = getattr(tv_models, arch)(num_classes=1000)
  generator = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.running_mean.normal_(0.0, 0.5, generator=generator)
        module.running_var.uniform_(0.5, 2.0, generator=generator)
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0.0, 0.2, generator=generator)
  return torch, model.eval()


def _kdjax_logits(arch, variables, images_nchw):
  model = weights.build_model(arch, 1000)
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(
      variables, jnp.asarray(images_nchw.transpose(0, 2, 3, 1))))


def test_layouts_and_names_are_torchvisions():
  conv = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)  # O I H W
  hwio = weights.to_kdjax('layer1.0.conv1.weight', conv)
  assert hwio.shape == (5, 7, 3, 2) and hwio[4, 6, 2, 1] == conv[1, 2, 4, 6]
  linear = np.arange(6, dtype=np.float32).reshape(2, 3)  # (out, in)
  assert weights.to_kdjax('fc.weight', linear)[2, 1] == linear[1, 2]
  assert np.array_equal(weights.to_torchvision(hwio), conv)
  name = weights.torchvision_name
  assert name('params', ('stem_conv', 'kernel')) == 'conv1.weight'
  assert name('params', ('stem_bn', 'scale')) == 'bn1.weight'
  assert name('batch_stats', ('stem_bn', 'var')) == 'bn1.running_var'
  assert name('params', ('stage3_block1', 'conv2', 'kernel')) == 'layer3.1.conv2.weight'
  assert name('params', ('stage2_block0', 'shortcut', 'proj_conv', 'kernel')) == (
      'layer2.0.downsample.0.weight')
  assert name('batch_stats', ('stage4_block0', 'shortcut', 'proj_bn', 'mean')) == (
      'layer4.0.downsample.1.running_mean')
  assert name('params', ('head', 'bias')) == 'fc.bias'
  assert name('params', ('stage1_block0', 'bn3', 'bias')) == 'layer1.0.bn3.bias'


@pytest.mark.parametrize('arch', ['resnet18', 'resnet50'])
def test_imported_resnet_gives_torchvisions_logits(arch):
  """Same logits in eval mode at 224 × 224: the 7×7 stem, the max-pool's padding,
  every block, the shortcuts, BatchNorm with running statistics, the pooling."""
  torch, model = _torchvision_resnet(arch)
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
  with torch.no_grad():
    expected = model(images).numpy()
  variables = weights.variables_from_torchvision(arch, state)
  got = _kdjax_logits(arch, variables, images.numpy())
  # float32 sums in a different order: 1e-5 of the largest logit (about 10x
  # the differences seen), far below what any wrong layout produces.
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
  assert np.array_equal(got.argmax(-1), expected.argmax(-1))
  exported = weights.variables_to_torchvision(variables)  # and back, tensor for tensor
  assert set(exported) == {k for k in state if not k.endswith('num_batches_tracked')}
  assert all(np.array_equal(exported[k], state[k]) for k in exported)


def test_torchvision_preprocessing_matches_the_eval_pipeline():
  """Resize(256) + CenterCrop(224) + ToTensor + Normalize against kdjax's evaluation
  crop and normalisation, on images whose odd margins test the crop's rounding."""
  _, _, transforms = torchvision_reference.load()
  from PIL import Image
  from kdjax.data import augment, catalog, stream
  info = catalog.get_info('imagenet2012')
  rng = np.random.default_rng(0)
  to_tensor = transforms.Compose([
      transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
      transforms.Normalize(info.mean, info.std)])
  for height, width in ((375, 500), (500, 333), (257, 301), (200, 180)):
    small = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
    image = np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)
    expected = to_tensor(Image.fromarray(image)).numpy().transpose(1, 2, 0)
    got = np.asarray(augment.normalize(stream.eval_transform(image, 224), info.mean, info.std))
    # PIL's and TensorFlow's antialiased bilinear filters round differently:
    # at most one grey level apart (1 / 255 / std after normalising); a crop
    # one pixel off would differ by tens of levels on this noisy image.
    level = 1 / 255 / min(info.std)
    assert got.shape == expected.shape == (224, 224, 3)
    assert np.abs(got - expected).max() <= level * 1.01, (height, width)
    assert np.abs(got - expected).mean() <= 0.3 * level, (height, width)


def _run(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_import_command_writes_a_teacher_run(tmp_path):
  torch, model = _torchvision_resnet('resnet18', seed=3)
  path = tmp_path / 'resnet18.pth'
  torch.save(model.state_dict(), path)
  workdir = tmp_path / 'teacher'
  out = _run('kdjax.weights', 'import-torchvision', '--arch=resnet18', f'--state_dict={path}',
             f'--workdir={workdir}')
  assert out.returncode == 0, out.stderr
  results = json.loads((workdir / 'results.json').read_text())
  assert results['imported']['sha256'] == hashlib.sha256(path.read_bytes()).hexdigest()
  assert results['params'] == 11_689_512 and results['test_accuracy'] is None
  config = config_lib.from_json_dict(json.loads((workdir / 'config.json').read_text()))
  assert (config.model.name, config.model.stem, config.dataset) == (
      'resnet18', 'imagenet', 'imagenet2012')
  # What a student's teacher loader reads is torchvision's network.
  variables = checkpoint.restore_variables(str(workdir), results['final_checkpoint_epoch'])
  images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    expected = model(images).numpy()
  np.testing.assert_allclose(_kdjax_logits('resnet18', variables, images.numpy()), expected,
                             rtol=0, atol=1e-5 * np.abs(expected).max())
  # The .npz route needs no torch and gives the same run.
  npz = tmp_path / 'resnet18.npz'
  assert _run('kdjax.weights', 'convert', f'--state_dict={path}', f'--out={npz}').returncode == 0
  again = weights.import_torchvision(arch='resnet18', state_dict=str(npz),
                                     workdir=str(tmp_path / 'from_npz'))
  assert again['params'] == results['params']
  # Mistakes: one line, exit 2, nothing written or changed.
  for args, message in (
      ([f'--state_dict={path}', f'--workdir={workdir}'], 'already exists'),
      ([f'--state_dict={tmp_path}/none.pth', f'--workdir={tmp_path}/b'], 'does not exist'),
  ):
    bad = _run('kdjax.weights', 'import-torchvision', '--arch=resnet18', *args)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and message in bad.stderr, bad.stderr
  bad = _run('kdjax.weights', 'import-torchvision', '--arch=resnet34', f'--state_dict={npz}',
             f'--workdir={tmp_path}/c')
  assert bad.returncode == 2 and bad.stderr.strip() == (
      'error: the state_dict does not match torchvision resnet34: missing '
      'layer1.2.bn1.running_mean and 79 more'), bad.stderr
  assert not os.path.exists(tmp_path / 'c') and not [
      p for p in os.listdir(tmp_path) if p.startswith('.')]


def test_pth_without_torch_is_one_line(tmp_path, monkeypatch):
  path = tmp_path / 'w.pth'
  path.write_bytes(b'not read')
  monkeypatch.setitem(sys.modules, 'torch', None)
  with pytest.raises(KDError, match=r"needs torch: pip install -e '\.\[torch\]'"):
    weights.read_state_dict(str(path))


def test_top_k_accuracy_by_hand():
  logits = np.array([[5., 4., 3., 2., 1., 0.], [0., 1., 2., 3., 4., 5.], [1., 1., 1., 1., 1., 1.]])
  labels = np.array([4, 4, 0])
  # Example 0: label 4 is 5th largest (in top-5); example 1: 2nd; example 2: all tied (not).
  assert results_lib.top_k_accuracy(logits, labels, 5) == pytest.approx(2 / 3)
  assert results_lib.top_k_accuracy(logits, labels, 1) == 0.0
  assert results_lib.top_k_accuracy(logits, np.array([0, 5, 0]), 1) == pytest.approx(2 / 3)


def test_evaluate_command_reproduces_a_runs_test_accuracy(mnist_data_dir, tmp_path, capsys):
  config = config_lib.default()
  config = config_lib.override(config, {'data_dir': mnist_data_dir, 'model.hidden': (32,),
                                        'train_examples': 2000, 'num_epochs': 1})
  results = loop.train_and_evaluate(config, str(tmp_path / 'run'))
  capsys.readouterr()
  assert evaluate.main([f'--workdir={tmp_path}/run', f'--data_dir={mnist_data_dir}']) == 0
  assert capsys.readouterr().out == (
      f'test: top-1 {100 * results["test_accuracy"]:.2f}% ({results["test_errors"]} errors of 10000)\n')
  recorded = json.loads((tmp_path / 'run' / evaluate.EVALUATION_FILE).read_text())['test']
  # The streamed evaluation reads the same pixels the run was tested on.
  assert recorded['errors'] == results['test_errors'] and recorded['examples'] == 10_000
  assert 'top5_accuracy' not in recorded  # 10 classes: top-1 only
  part = evaluate.evaluate_run(str(tmp_path / 'run'), data_dir=mnist_data_dir, examples=500)
  assert part['split'] == 'test[:500]' and part['examples'] == 500
  bad = _run('kdjax.evaluate', f'--workdir={tmp_path}/none')
  assert bad.returncode == 2 and 'does not exist' in bad.stderr and bad.stderr.count('\n') == 1
