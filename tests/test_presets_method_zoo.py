"""Every method_zoo preset end to end, as tests/test_presets.py runs the other launchers'."""

import pytest

from tests import test_presets
from tests.test_presets import preset_env  # noqa: F401  (a module fixture: set up here too)

pytestmark = pytest.mark.slow  # end to end: `make test-all`

PRESETS = test_presets.presets(('method_zoo',))


@pytest.mark.parametrize('launcher, name', PRESETS, ids=[f'{l}:{n}' for l, n in PRESETS])
def test_preset_runs_to_the_end(launcher, name, preset_env, tmp_path):  # noqa: F811
  test_presets.run_and_check(launcher, name, preset_env, tmp_path)
