"""Every check a config gets before a run starts.

`kdjax.config` checks the fields it alone can judge; each registry checks the
section it owns: the dataset catalog the dataset and `config.input`, the model
registry `config.model.name`, the objectives `config.distill` (and an
objective's own fields, such as BYOT's), the methods `config.method`, the
evaluators `config.evaluators` (and the fields an evaluator needs). Each
raises `ConfigError` with one line that names the field and what it accepts.
"""

import ml_collections

from kdjax import config as config_lib
from kdjax import evaluators
from kdjax import models
from kdjax import objectives
from kdjax import online
from kdjax.data import catalog
from kdjax.methods import registry as methods_registry

# The schema's own ranges first, so that a registry's check reads fields of the
# right types; then each registry's section.
SECTIONS = (
    config_lib.check_fields,
    catalog.check_config,
    models.check_config,
    objectives.check_config,
    methods_registry.check_config,
    evaluators.check_config,
    online.check_config,
)


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError (one line, naming the field) for a config that cannot run."""
  for check in SECTIONS:
    check(config)
