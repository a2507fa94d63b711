"""Every method_zoo preset end to end, as tests/test_presets.py runs the other launchers'.

Each preset runs as several tests of at most four methods besides KD (KD in every one: the
cost table is relative to it), every method of the zoo in one of them. The groups of a
preset that run in one test process share its workdir, as a user adding methods to a
finished comparison does: the first trains the teacher, the student alone and KD, the
later ones find those stages finished and train only their own methods.
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
def test_preset_runs_to_the_end(name, methods, preset_env, zoo_root):  # noqa: F811
  test_presets.run_and_check('method_zoo', name, preset_env, zoo_root,
                             overrides={'methods': methods}, reuse=True)


@pytest.fixture(scope='module')
def zoo_root(tmp_path_factory):
  """One directory per test process (each xdist worker has its own) for the presets'
  workdirs."""
  return tmp_path_factory.mktemp('zoo')
