"""The model registry: factories by name, and the options they are built with.

Model families register here (`@register('resnet18')`); `kdjax.models`
re-exports every name and imports the families, so that importing it
registers them all.
"""

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


def create(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """Builds the registered model `name` with `num_classes` outputs.

  Args:
    name: a registered model name (see `names()`).
    num_classes: size of the logit vector.
    **kwargs: family-specific options (hidden sizes, dropout, width...).

  Raises:
    ConfigError: the name is unknown or an option is not accepted.
  """
  if name not in _REGISTRY:
    raise ConfigError(
        f'config.model.name={name!r} is not a known model; known: {", ".join(names())}')
  try:
    return _REGISTRY[name](num_classes=num_classes, **kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(f'config.model ({name!r}) does not accept these options: '
                      f'{str(e).splitlines()[0] if str(e) else type(e).__name__}') from None


def options(model_config) -> dict:
  """A config's model block as `create` keyword arguments (all but `name`)."""
  out = model_config.to_dict()
  out.pop('name', None)
  return out


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
  """Raises ConfigError unless `config.model.name` is a registered model."""
  model = config.model
  if 'name' not in model or model.name not in names():
    raise ConfigError(f'config.model.name={model.get("name")!r}: unknown; '
                      f'known: {", ".join(names())}')
