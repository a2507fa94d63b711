"""Model registry: every network kdjax trains is built by name from a config.

All models share one calling convention so that train steps, teachers and
feature-based losses need no per-family code:

    logits = model.apply(variables, images, train=False)
    logits, features = model.apply(variables, images, train=False,
                                   return_features=True)

`images` is float32 NHWC. `features` is a dict from layer names to
activations (for feature distillation and shallow-exit heads). Models with
BatchNorm keep running statistics in the `batch_stats` collection; models that
use dropout draw from the `dropout` RNG stream when `train=True`.
"""

# The dict itself, which tests patch to shrink a registered family.
from kdjax.models.registry import _REGISTRY  # noqa: F401  pylint: disable=unused-import
from kdjax.models.registry import check_config  # noqa: F401
from kdjax.models.registry import compute_dtype  # noqa: F401
from kdjax.models.registry import count_params  # noqa: F401
from kdjax.models.registry import create  # noqa: F401
from kdjax.models.registry import from_config  # noqa: F401
from kdjax.models.registry import names  # noqa: F401
from kdjax.models.registry import options  # noqa: F401
from kdjax.models.registry import register  # noqa: F401

# Importing the families registers their models.
from kdjax.models import mlp  # noqa: F401
from kdjax.models import resnet  # noqa: F401
from kdjax.models import small_cnn  # noqa: F401
from kdjax.models import vgg  # noqa: F401
from kdjax.models import wrn  # noqa: F401
from kdjax.models import mobilenet  # noqa: F401
from kdjax.models import shufflenet  # noqa: F401
from kdjax.models import multi_exit  # noqa: F401
