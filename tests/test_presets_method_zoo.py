"""Every method_zoo preset end to end, as tests/test_presets.py runs the other launchers',
its methods in groups (each with KD, which the cost column divides by), so that each test
stays about a minute at quick size."""

import math

import numpy as np
import pytest
from absl import flags

from experiments import method_zoo
from tests import test_presets
from tests.test_presets import preset_env  # noqa: F401  (a module fixture: set up here too)

pytestmark = pytest.mark.slow  # end to end: `make test-all`

PRESETS = test_presets.presets(('method_zoo',))
# At most this many methods besides KD in a group; the groups are as even as that allows,
# in the table's order (which keeps MLKD, whose steps run two views, apart from MLKD+LS).
GROUP_SIZE = 4
_OTHERS = [m for m in method_zoo.METHODS if m != 'kd']
GROUPS = [('kd', *(str(m) for m in chunk))
          for chunk in np.array_split(_OTHERS, math.ceil(len(_OTHERS) / GROUP_SIZE))]
CASES = [(launcher, name, group) for launcher, name in PRESETS for group in GROUPS]


def test_the_groups_cover_every_method_once():
  assert sorted(m for group in GROUPS for m in group[1:]) == sorted(_OTHERS)
  assert all(group[0] == 'kd' and len(group) <= GROUP_SIZE + 1 for group in GROUPS)


@pytest.mark.parametrize('launcher, name, group', CASES,
                         ids=[f'{l}:{n}:{",".join(g)}' for l, n, g in CASES])
def test_preset_runs_to_the_end(launcher, name, group, preset_env, tmp_path,  # noqa: F811
                                monkeypatch):
  monkeypatch.setattr(flags.FLAGS, 'methods', list(group))
  test_presets.run_and_check(launcher, name, preset_env, tmp_path)
