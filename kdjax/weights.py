r"""Pretrained torchvision weights as kdjax runs.

  python -m kdjax.weights import-torchvision --arch=resnet50 \
      --state_dict=resnet50-0676ba61.pth --workdir=runs/imagenet_r50_torchvision
  python -m kdjax.weights convert --state_dict=FILE.pth --out=FILE.npz
  python -m kdjax.weights export --workdir=RUN --out=FILE.npz

`import-torchvision` turns a torchvision ResNet `state_dict` (a `.pth` file,
or a `.npz` of the same tensors under the same names) into a finished kdjax
run directory: config.json (the ImageNet-stem model, the dataset), an orbax
checkpoint with the parameters and BatchNorm running statistics, and a
results.json marked `imported` with the source file's SHA-256. Any run's
`config.teacher.workdir` accepts it like a teacher kdjax trained itself;
`python -m kdjax.evaluate --workdir=DIR` measures its accuracy.

Reading `.pth` needs torch (`pip install -e '.[torch]'`); `convert` writes the
same tensors as `.npz` once, so machines that train need no torch at all.
`export` writes a kdjax ResNet's variables under torchvision's names, the
inverse of the import.

Layout conventions converted: convolution kernels OIHW -> HWIO, linear
weights (out, in) -> (in, out); BatchNorm weight/bias/running_mean/
running_var -> scale/bias and batch_stats mean/var. Both frameworks normalise
with the running variance plus eps = 1e-5 in eval mode, kdjax's BatchNorm
uses eps 1e-5, and the momentum conventions (PyTorch 0.1 weights the new
batch, Flax 0.9 the old statistics) are the same rule, so a fine-tuned
import updates its statistics as torchvision would. `num_batches_tracked`
is not needed and is ignored.
"""

import argparse
import hashlib
import os
import re
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from kdjax import config as config_lib
from kdjax import data as data_lib
from kdjax import models
from kdjax import report
from kdjax.errors import ConfigError, KDError, WorkdirError
from kdjax.train import checkpoint as checkpoint_lib
from kdjax.train import teacher
from kdjax.train import workdir as workdir_lib

# torchvision architectures kdjax's registry builds exactly (same layers, same
# parameter counts) with stem='imagenet'.
ARCHITECTURES = ('resnet18', 'resnet34', 'resnet50', 'resnet101')
IMPORTED_EPOCH = 0  # the checkpoint step an imported run keeps its weights under


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The named tensors of a `.pth` (torch) or `.npz` file, as float32 numpy arrays.

  A checkpoint that wraps the weights (`{'state_dict': ...}` or
  `{'model': ...}`) is unwrapped, and DataParallel's `module.` prefix dropped.

  Raises:
    KDError: the file is missing or unreadable, or torch is needed and absent.
  """
  if not os.path.isfile(path):
    raise KDError(f'--state_dict={path} does not exist')
  if path.endswith('.npz'):
    try:
      with np.load(path, allow_pickle=False) as data:
        tensors = {name: data[name] for name in data.files}
    except (OSError, ValueError) as e:
      raise KDError(f'--state_dict={path} is not a readable .npz file ({e})') from None
  else:
    tensors = _read_torch(path)
  tensors = {re.sub(r'^module\.', '', name): np.asarray(value)
             for name, value in tensors.items()}
  return {name: value.astype(np.float32) if value.dtype.kind == 'f' else value
          for name, value in tensors.items()}


def _read_torch(path: str) -> dict:
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise KDError(f'reading {path} needs torch: pip install -e \'.[torch]\' (or convert it to '
                  '.npz on a machine with torch: python -m kdjax.weights convert)') from None
  try:
    loaded = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except  # torch raises many kinds
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise KDError(f'--state_dict={path} is not a readable torch file ({first})') from None
  for key in ('state_dict', 'model'):
    if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
      loaded = loaded[key]
  if not isinstance(loaded, dict):
    raise KDError(f'--state_dict={path} holds a {type(loaded).__name__}, not a state_dict')
  return {name: value.detach().float().numpy() if value.is_floating_point()
          else value.numpy() for name, value in loaded.items() if hasattr(value, 'numpy')}


# --- names: one kdjax variable <-> one torchvision tensor -----------------------------

_BN_NAMES = {('params', 'scale'): 'weight', ('params', 'bias'): 'bias',
             ('batch_stats', 'mean'): 'running_mean', ('batch_stats', 'var'): 'running_var'}
_MODULE_NAMES = [  # kdjax module path pattern -> torchvision module name
    (r'^stem_conv$', 'conv1'), (r'^stem_bn$', 'bn1'), (r'^head$', 'fc'),
    (r'^stage(\d+)_block(\d+)/(conv\d|bn\d)$', r'layer\1.\2.\3'),
    (r'^stage(\d+)_block(\d+)/shortcut/proj_conv$', r'layer\1.\2.downsample.0'),
    (r'^stage(\d+)_block(\d+)/shortcut/proj_bn$', r'layer\1.\2.downsample.1'),
]


def torchvision_name(collection: str, path: tuple[str, ...]) -> str:
  """The torchvision ResNet tensor holding kdjax's variable `collection`/`path`.

  E.g. ('params', ('stage2_block0', 'shortcut', 'proj_conv', 'kernel')) ->
  'layer2.0.downsample.0.weight'.
  """
  module, leaf = '/'.join(path[:-1]), path[-1]
  for pattern, replacement in _MODULE_NAMES:
    if re.match(pattern, module):
      torch_module = re.sub(pattern, replacement, module)
      break
  else:
    raise KeyError(f'no torchvision name for {collection}/{"/".join(path)}')
  if leaf == 'kernel':
    return f'{torch_module}.weight'
  if leaf == 'bias' and collection == 'params' and not _is_bn(module):
    return f'{torch_module}.bias'
  return f'{torch_module}.{_BN_NAMES[(collection, leaf)]}'


def _is_bn(module: str) -> bool:
  return module.split('/')[-1].startswith(('bn', 'stem_bn', 'proj_bn'))


def to_kdjax(name: str, tensor: np.ndarray) -> np.ndarray:
  """A torchvision tensor in kdjax's layout (conv OIHW -> HWIO, linear transposed)."""
  if tensor.ndim == 4:
    return np.transpose(tensor, (2, 3, 1, 0))
  if tensor.ndim == 2 and name.endswith('.weight'):
    return tensor.T
  return tensor


def to_torchvision(tensor: np.ndarray) -> np.ndarray:
  """A kdjax variable in torchvision's layout (the inverse of `to_kdjax`)."""
  if tensor.ndim == 4:
    return np.transpose(tensor, (3, 2, 0, 1))
  if tensor.ndim == 2:
    return tensor.T
  return tensor


def _leaves(variables: dict):
  """(collection, path, value) for every array of a variables dict."""
  for collection, tree in variables.items():
    for keys, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
      yield collection, tuple(k.key for k in keys), value


def build_model(arch: str, num_classes: int):
  if arch not in ARCHITECTURES:
    raise ConfigError(f'--arch={arch!r}: kdjax imports {", ".join(ARCHITECTURES)}')
  return models.create(arch, num_classes=num_classes, stem='imagenet')


def variables_from_torchvision(arch: str, tensors: dict[str, np.ndarray]) -> dict:
  """kdjax variables ({'params', 'batch_stats'}) for `arch` from torchvision tensors.

  Raises:
    KDError: a tensor is missing, left over, or of the wrong shape; the
      message names the first and counts the rest.
  """
  if 'fc.weight' not in tensors:
    raise KDError(f'the state_dict has no fc.weight: not a torchvision {arch}')
  num_classes = int(tensors['fc.weight'].shape[0])
  model = build_model(arch, num_classes)
  abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                               jnp.zeros((1, 64, 64, 3)), train=False))
  variables, used, missing = {}, set(), []
  for collection, path, shape_dtype in _leaves(abstract):
    name = torchvision_name(collection, path)
    if name not in tensors:
      missing.append(name)
      continue
    value = to_kdjax(name, tensors[name])
    if value.shape != shape_dtype.shape:
      raise KDError(f'{name} has shape {to_torchvision(np.zeros(shape_dtype.shape)).shape} in '
                    f'torchvision {arch}, {tensors[name].shape} in the state_dict')
    used.add(name)
    node = variables.setdefault(collection, {})
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = np.ascontiguousarray(value, dtype=np.float32)
  unexpected = sorted(n for n in tensors if n not in used and not n.endswith('num_batches_tracked'))
  for what, names in (('missing', missing), ('unexpected', unexpected)):
    if names:
      more = f' and {len(names) - 1} more' if len(names) > 1 else ''
      raise KDError(f'the state_dict does not match torchvision {arch}: {what} {names[0]}{more}')
  return variables


def variables_to_torchvision(variables: dict) -> dict[str, np.ndarray]:
  """torchvision-named tensors of a kdjax ImageNet ResNet's variables."""
  return {torchvision_name(collection, path): to_torchvision(np.asarray(value))
          for collection, path, value in _leaves(variables)}


# --- run directories -----------------------------------------------------------------

def import_torchvision(*, arch: str, state_dict: str, workdir: str,
                       dataset: str = 'imagenet2012', image_size: int = 224) -> dict:
  """Writes the finished run directory `workdir` holding the imported weights.

  The directory appears whole or not at all (written beside it, then
  renamed); an existing non-empty `workdir` is never touched.

  Returns:
    The run's results.json contents.
  """
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
    raise WorkdirError(f'--workdir={workdir} already exists; choose a new directory')
  if arch not in ARCHITECTURES:
    raise ConfigError(f'--arch={arch!r}: kdjax imports {", ".join(ARCHITECTURES)}')
  info = data_lib.catalog.get_info(dataset)
  variables = variables_from_torchvision(arch, read_state_dict(state_dict))
  num_classes = variables['params']['head']['kernel'].shape[1]
  if num_classes != info.num_classes:
    raise ConfigError(f'the state_dict has {num_classes} classes, {dataset} has '
                      f'{info.num_classes}')
  config = config_lib.default()
  config.dataset = dataset
  config.model = ml_collections.ConfigDict({'name': arch, 'stem': 'imagenet'})
  config.num_epochs = 0
  if info.image_shape is None:
    config.input.pipeline = 'stream'
    config.input.image_size = image_size
  channels = info.image_shape[2] if info.image_shape else len(info.mean)
  shape = [image_size, image_size, channels] if info.image_shape is None else list(
      info.image_shape)
  imported = {'from': 'torchvision', 'arch': arch, 'source': os.path.abspath(state_dict),
              'sha256': sha256(state_dict)}
  results = {
      'imported': imported, 'dataset': dataset, 'model': arch,
      'params': models.count_params(variables['params']), 'image_shape': shape,
      'num_classes': int(num_classes), 'epochs': 0, 'test_accuracy': None, 'teacher': None,
      'temperature': None, 'alpha': None, 'kind': None, 'seed': int(config.seed),
      'data_seed': int(config.data_seed), 'omit_classes': [], 'validation': None,
      'final_checkpoint_epoch': IMPORTED_EPOCH, 'history': [],
      'config': config_lib.to_json_dict(config)}
  parent = os.path.dirname(workdir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(workdir)}.importing-')
  try:
    report.write_json(os.path.join(staging, workdir_lib.CONFIG_FILE),
                      config_lib.to_json_dict(config))
    saved = checkpoint_lib.Checkpoints(staging, keep=1)
    saved.save(IMPORTED_EPOCH, {'params': variables['params'],
                                'model_state': {'batch_stats': variables['batch_stats']}},
               {'imported': imported, 'history': []})
    saved.close()
    report.write_json(os.path.join(staging, workdir_lib.RESULTS_FILE), results)
    if os.path.isdir(workdir):
      os.rmdir(workdir)  # empty, checked above
    os.rename(staging, workdir)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return results


def export(workdir: str, out: str) -> int:
  """Writes a finished ImageNet-stem ResNet run's variables under torchvision names."""
  teacher.check_workdir(workdir)
  _, results = teacher.read_run(workdir)
  teacher.refuse_sweep(results, workdir, '--workdir')
  variables = checkpoint_lib.restore_variables(workdir, results['final_checkpoint_epoch'])
  try:
    tensors = variables_to_torchvision(variables)
  except KeyError as e:
    raise ConfigError(f'{workdir} holds a {results.get("model")} that has no torchvision '
                      f'counterpart ({e.args[0]})') from None
  np.savez(out, **tensors)
  return len(tensors)


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m kdjax.weights',
                                   description=__doc__.splitlines()[0])
  commands = parser.add_subparsers(dest='command', required=True)
  imp = commands.add_parser('import-torchvision', help='a torchvision state_dict as a kdjax run')
  imp.add_argument('--arch', required=True, choices=ARCHITECTURES)
  imp.add_argument('--state_dict', required=True, help='.pth (needs torch) or .npz')
  imp.add_argument('--workdir', required=True, help='the new run directory')
  imp.add_argument('--dataset', default='imagenet2012')
  imp.add_argument('--image_size', type=int, default=224,
                   help='input side for datasets whose image sizes vary')
  conv = commands.add_parser('convert', help='a .pth state_dict as .npz (needs torch once)')
  conv.add_argument('--state_dict', required=True)
  conv.add_argument('--out', required=True)
  exp = commands.add_parser('export', help="a run's ResNet under torchvision names, as .npz")
  exp.add_argument('--workdir', required=True)
  exp.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  try:
    if args.command == 'import-torchvision':
      results = import_torchvision(arch=args.arch, state_dict=args.state_dict,
                                   workdir=args.workdir, dataset=args.dataset,
                                   image_size=args.image_size)
      print(f'imported torchvision {args.arch} ({results["params"]:,} params, sha256 '
            f'{results["imported"]["sha256"][:12]}…) into {os.path.abspath(args.workdir)}')
    elif args.command == 'convert':
      tensors = read_state_dict(args.state_dict)
      np.savez(args.out, **tensors)
      print(f'wrote {len(tensors)} tensors to {args.out}')
    else:
      count = export(args.workdir, args.out)
      print(f'wrote {count} tensors to {args.out}')
  except KDError as e:
    print(f'error: {str(e).strip().splitlines()[0]}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
