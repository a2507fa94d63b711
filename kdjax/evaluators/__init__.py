"""Evaluators by name: what a finished run measures beyond its accuracy.

`config.evaluators` lists them (`'auto'`: every one that applies to the run);
each writes its own sections of results.json. Registered here: `exits` (a
multi-exit model's per-exit evaluation, automatic for such a model),
`agreement` (teacher–student agreement, automatic for a distilled run) and
`calibration` (ECE and NLL, by name). See `kdjax.evaluators.registry`.
"""

from kdjax.evaluators.registry import AUTO  # noqa: F401
from kdjax.evaluators.registry import Context  # noqa: F401
from kdjax.evaluators.registry import Evaluator  # noqa: F401
from kdjax.evaluators.registry import Sections  # noqa: F401
from kdjax.evaluators.registry import check_config  # noqa: F401
from kdjax.evaluators.registry import names  # noqa: F401
from kdjax.evaluators.registry import register  # noqa: F401
from kdjax.evaluators.registry import resolve  # noqa: F401
from kdjax.evaluators.registry import run  # noqa: F401
from kdjax.evaluators.registry import shared_sections  # noqa: F401
from kdjax.evaluators.registry import unregister  # noqa: F401

# Importing the evaluators registers them; 'auto' runs them in this order.
from kdjax.evaluators import exits  # noqa: F401
from kdjax.evaluators import agreement  # noqa: F401
from kdjax.evaluators import calibration  # noqa: F401
