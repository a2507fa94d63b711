"""The model registry: factories by name, and the options they are built with.

Model families register here (`@register('resnet18')`); `kdjax.models`
re-exports every name and imports the families, so that importing it
registers them all.

A name with a colon is an import path instead, `package.module:factory`: any
importable callable that takes `num_classes` and the options and returns a
Flax module (`docs/custom.md`). `resolve` treats the two alike, so FLOPs,
parameter counts, checkpoints and sharding see no difference.
"""

import importlib
from typing import Callable

import flax.linen as nn

from kdjax.errors import ConfigError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
  """Decorator that registers a model factory under `name`."""

  def wrap(factory):
    if name in _REGISTRY:
      raise ValueError(f'model {name!r} is registered twice')
    _REGISTRY[name] = factory
    return factory

  return wrap


def names() -> list[str]:
  """Sorted names of every registered model."""
  return sorted(_REGISTRY)


def is_import_path(name) -> bool:
  """Whether `name` is `package.module:factory` rather than a registered name."""
  return isinstance(name, str) and ':' in name


def resolve(name: str) -> Callable[..., nn.Module]:
  """The factory a registered name or an import path names.

  Raises:
    ConfigError: the name is neither registered nor an import path; the
      module does not import; it has no such attribute; that is not callable.
  """
  if name in _REGISTRY:
    return _REGISTRY[name]
  if not is_import_path(name):
    raise ConfigError(f'config.model.name={name!r}: unknown; known: {", ".join(names())}, '
                      "or an import path 'package.module:factory'")
  module_name, _, attribute = name.partition(':')
  where = f'config.model.name={name!r}'
  if not module_name or not attribute:
    raise ConfigError(f"{where}: an import path is 'package.module:factory'")
  try:
    factory = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except  # anything the user's module raises
    raise ConfigError(f'{where}: module {module_name!r} does not import '
                      f'({_first_line(e)})') from None
  for part in attribute.split('.'):
    if not hasattr(factory, part):
      raise ConfigError(f'{where}: module {module_name!r} has no attribute {attribute!r}')
    factory = getattr(factory, part)
  if not callable(factory):
    raise ConfigError(f'{where}: {attribute!r} is a {type(factory).__name__}, not callable')
  return factory


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0]}' if text else type(error).__name__


def create(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """Builds the model `name` (registered, or an import path) with `num_classes` outputs.

  Args:
    name: a registered model name (see `names()`) or `package.module:factory`.
    num_classes: size of the logit vector.
    **kwargs: family-specific options (hidden sizes, dropout, width...).

  Raises:
    ConfigError: the name is unknown, an option is not accepted, or an
      imported factory does not return a Flax module.
  """
  factory = resolve(name)
  imported = is_import_path(name) and name not in _REGISTRY
  try:
    model = factory(num_classes=num_classes, **kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config.model ({name!r}) does not accept these options: '
                      f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None
  except Exception as e:  # pylint: disable=broad-except  # a user's factory, its own errors
    if not imported:
      raise
    raise ConfigError(f'config.model.name={name!r}: the factory raised {_first_line(e)}') from None
  if imported and not isinstance(model, nn.Module):
    raise ConfigError(f'config.model.name={name!r}: the factory returned a '
                      f'{type(model).__name__}, not a flax.linen.Module')
  return model


def options(model_config) -> dict:
  """A config's model block as `create` keyword arguments.

  Every field but `name`, and the fields of the dict `options` (the way an
  imported model's options are written; any model may use it).
  """
  out = model_config.to_dict()
  out.pop('name', None)
  extra = out.pop('options', None) or {}
  return {**out, **dict(extra)}


def from_config(model_config, *, num_classes: int) -> nn.Module:
  """The model a config's `model` block names, with its options."""
  return create(model_config.name, num_classes=num_classes, **options(model_config))


def compute_dtype(dtype):
  """Parses a model's `dtype` option; ConfigError unless it is a float dtype."""
  import jax.numpy as jnp
  try:
    parsed = jnp.dtype(dtype)
  except TypeError:
    raise ConfigError(f'model.dtype={dtype!r} is not a dtype') from None
  if not jnp.issubdtype(parsed, jnp.floating):
    raise ConfigError(f'model.dtype={dtype!r} must be a floating-point dtype')
  return parsed


def count_params(params) -> int:
  """Number of scalars in a parameter pytree."""
  import jax
  return int(sum(x.size for x in jax.tree.leaves(params)))


def check_config(config) -> None:
  """Raises ConfigError unless `config.model.name` is registered or an import path that
  names a callable (it is imported here; what it builds is checked by the preflight)."""
  model = config.model
  if 'name' not in model or not isinstance(model.name, str):
    raise ConfigError(f'config.model.name={model.get("name")!r}: unknown; '
                      f'known: {", ".join(names())}')
  resolve(model.name)
  extra = model.get('options')
  if extra is not None and not hasattr(extra, 'items'):
    raise ConfigError(f'config.model.options={extra!r}: must be a dict of the factory\'s '
                      'keyword arguments')
