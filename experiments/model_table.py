r"""Parameter counts and forward cost of kdjax's models beside the stated ones.

  python -m experiments.model_table                   # print the table
  python -m experiments.model_table --out=models.md   # and write it

Parameters come from `jax.eval_shape` of `init` (nothing is allocated);
MFLOPs are XLA's count for one eval-mode forward of one image
(`kdjax.models.flops`). Where a paper or seed states a parameter count the
"match" column says whether kdjax's model reproduces it, exactly or to the
digits stated. Takes about a minute on 2 CPU cores, most of it compiling.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from absl import app, flags

from kdjax import cli, models
from kdjax.models import flops

_OUT = flags.DEFINE_string('out', None, 'Also write the markdown table here.')

MNIST = (28, 28, 1)
CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)


@dataclasses.dataclass(frozen=True)
class Row:
  name: str
  image_shape: tuple[int, int, int]
  options: tuple[tuple[str, object], ...] = ()
  stated: tuple[tuple[str, str], ...] = ()  # (count as written, where)
  num_classes: int = 10

  @property
  def label(self) -> str:
    options = ', '.join(f'{key}={value}' for key, value in self.options)
    return f'{self.name}({options})' if options else self.name


_HE = 'He et al. 2016, Table 6'
_PYTORCH_CIFAR = 'pytorch-cifar layout'
_TORCHVISION = 'torchvision, 1000 classes'

ROWS = (
    Row('mlp', MNIST, (('hidden', (1200, 1200)),),
        (('2.39M', 'seed 002, LinearTeacher'),)),
    Row('mlp', MNIST, (('hidden', (800, 800)),),
        (('1.27M', 'seed 002, LinearStudent'),)),
    Row('mlp', MNIST, (('hidden', (300, 300)),)),
    Row('mlp', MNIST, (('hidden', (30, 30)),)),
    Row('papernot_mnist', MNIST),
    Row('lightnn', CIFAR, stated=(('267,738', 'seed 004'),)),
    Row('simplenn', CIFAR, stated=(('34,290', 'seed 004'),)),
    Row('papernot_cifar', CIFAR),
    Row('resnet3', CIFAR),
    Row('resnet4', CIFAR),
    Row('resnet5', CIFAR),
    Row('resnet6', CIFAR),
    Row('resnet10', CIFAR),
    Row('resnet11', CIFAR),
    Row('resnet8', CIFAR),
    Row('resnet14', CIFAR),
    Row('resnet20', CIFAR, stated=(('0.27M', _HE),)),
    Row('resnet32', CIFAR, stated=(('0.46M', _HE),)),
    Row('resnet44', CIFAR, stated=(('0.66M', _HE),)),
    Row('resnet56', CIFAR, stated=(('0.85M', _HE),)),
    Row('resnet110', CIFAR, stated=(('1.7M', _HE),)),
    Row('resnet8x4', CIFAR),
    Row('resnet32x4', CIFAR),
    Row('resnet18', CIFAR, stated=(('11,173,962', _PYTORCH_CIFAR),
                                   ('11.17M', 'seed 002'))),
    Row('resnet34', CIFAR, stated=(('21,282,122', _PYTORCH_CIFAR),)),
    Row('resnet50', CIFAR, stated=(('23,520,842', _PYTORCH_CIFAR),)),
    Row('resnet101', CIFAR, stated=(('42,512,970', _PYTORCH_CIFAR),)),
    Row('vgg8', CIFAR),
    Row('vgg11', CIFAR, stated=(('9,231,114', _PYTORCH_CIFAR),)),
    Row('vgg13', CIFAR, stated=(('9,416,010', _PYTORCH_CIFAR),
                                ('9.41M', 'seed 002'))),
    Row('vgg16', CIFAR),
    Row('vgg19', CIFAR),
    Row('resnet18', IMAGENET, (('stem', 'imagenet'),), (('11,689,512', _TORCHVISION),),
        num_classes=1000),
    Row('resnet50', IMAGENET, (('stem', 'imagenet'),), (('25,557,032', _TORCHVISION),),
        num_classes=1000),
)

NOTES = """\
- MFLOPs: XLA's operation count, 2 per multiply-add, taps on zero padding
  not counted. PyTorch counters (thop) report multiply-adds over the full
  kernel: seed 002's VGG13 "229.61M FLOPs" is that count at 32x32 (about
  228M multiply-adds in the convolutions); its ResNet18 "1.8G" is the
  ImageNet (224x224) figure, the `resnet18(stem=imagenet)` row here.
- Seed 002 does not describe its LinearTeacher and LinearStudent; its counts
  are those of Hinton's 784-1200-1200-10 and 784-800-800-10 MLPs.
- Seed 000, Table 1 gives 33,716,800 (teacher) and 11,206,400 (student) as
  both FLOPs and parameters of its MNIST nets without describing them; no
  784-h1-h2-10 MLP with round widths and no model here gives those numbers,
  so they are not compared.
"""


def matches(params: int, stated: str) -> bool:
  """Whether `params` agrees with a stated count to the digits it states.

  Args:
    params: the exact parameter count.
    stated: '269,722' (exact) or '0.27M' (millions, rounded or cut off: seed
      002 writes 2,395,210 as 2.39M).

  Returns:
    True when they agree.
  """
  if stated.endswith('M'):
    digits = stated[:-1]
    decimals = len(digits.split('.')[1]) if '.' in digits else 0
    units = params / 1e6 * 10**decimals
    return int(digits.replace('.', '')) in (round(units), math.floor(units))
  return params == int(stated.replace(',', ''))


def measure(row: Row) -> tuple[int, float]:
  """Parameter count and forward MFLOPs of one row's model."""
  model = models.create(row.name, num_classes=row.num_classes,
                        **dict(row.options))
  images = jnp.zeros((1, *row.image_shape))
  variables = jax.eval_shape(functools.partial(model.init, train=False),
                             jax.random.PRNGKey(0), images)
  params = models.count_params(variables['params'])
  mflops = flops.forward_flops_per_example(model, variables,
                                           row.image_shape) / 1e6
  return params, mflops


def table(rows=ROWS) -> str:
  """The markdown table of `rows`, one model per line."""
  lines = ['| model | input | params | MFLOPs | stated | source | match |',
           '|---|---|---:|---:|---:|---|---|']
  for row in rows:
    params, mflops = measure(row)
    shape = 'x'.join(str(d) for d in row.image_shape)
    stated = '<br>'.join(count for count, _ in row.stated)
    sources = '<br>'.join(where for _, where in row.stated)
    match = '<br>'.join('yes' if matches(params, count) else 'NO'
                        for count, _ in row.stated)
    lines.append(f'| {row.label} | {shape} | {params:,} | {mflops:,.2f} | '
                 f'{stated} | {sources} | {match} |')
  return '\n'.join(lines) + '\n'


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  text = cli.run_guarded(table) + '\n' + NOTES
  print(text, end='')
  if _OUT.value:
    with open(_OUT.value, 'w') as f:
      f.write(text)


if __name__ == '__main__':
  app.run(main)
