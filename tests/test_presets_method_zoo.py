"""Every method_zoo preset end to end, as tests/test_presets.py runs the other launchers'.

Each preset runs as several tests of at most four methods besides KD (KD in every one: the
cost table is relative to it), every method of the zoo in one of them; the teacher and the
student alone are trained again in each, from programs the compilation cache already holds.
"""

import pytest

from experiments import method_zoo
from tests import test_presets
from tests.test_presets import preset_env  # noqa: F401  (a module fixture: set up here too)

_OTHERS = [m for m in method_zoo.METHODS if m != 'kd']
GROUP_SIZE = 4  # methods besides KD, at most, in a group
_GROUP_COUNT = -(-len(_OTHERS) // GROUP_SIZE)
GROUPS = [('kd', *_OTHERS[i::_GROUP_COUNT]) for i in range(_GROUP_COUNT)]
CASES = [(name, group) for name in method_zoo.PRESETS for group in GROUPS]


def test_the_groups_cover_every_method():
  assert sorted({m for group in GROUPS for m in group}) == sorted(method_zoo.METHODS)
  assert all(len(group) <= GROUP_SIZE + 1 for group in GROUPS)


@pytest.mark.slow  # end to end: `make test-all`
@pytest.mark.parametrize('name, methods', CASES,
                         ids=[f'method_zoo:{n}:{"+".join(g[1:])}' for n, g in CASES])
def test_preset_runs_to_the_end(name, methods, preset_env, tmp_path):  # noqa: F811
  test_presets.run_and_check('method_zoo', name, preset_env, tmp_path,
                             overrides={'methods': methods})
