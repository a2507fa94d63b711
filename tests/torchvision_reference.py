"""torchvision's pure-Python model and transform definitions, for reference tests.

PyPI's torchvision wheels are built against a CUDA torch; beside the CPU torch
the test extra installs, `import torchvision` fails while registering its
compiled operators (`operator torchvision::nms does not exist`). The model
definitions (`torchvision.models.resnet`, `.vgg`) and the PIL transforms
need none of those operators, so `load()` installs an empty package object
for `torchvision` whose search path is the installed one: its submodules
import normally, its `__init__` (which loads the operators) never runs.
"""

import importlib.util
import sys
import types

import pytest


def load():
  """(torch, torchvision.models, torchvision.transforms); skips without torch."""
  torch = pytest.importorskip('torch')
  if 'torchvision' not in sys.modules:
    spec = importlib.util.find_spec('torchvision')
    if spec is None:
      pytest.skip('torchvision is not installed (pip install -e .[test])')
    package = types.ModuleType('torchvision')
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules['torchvision'] = package
  models = importlib.import_module('torchvision.models')
  transforms = importlib.import_module('torchvision.transforms')
  return torch, models, transforms
