"""Every experiments.takd preset end to end (mock data, narrowed nets), as
tests/test_presets.py runs the other launchers'; and the chains' stage names."""

import json
import os

import pytest

from experiments import takd
from tests import test_presets
from tests.test_presets import preset_env  # noqa: F401  (a module fixture: set up here too)


def test_chain_stages_share_their_start():
  assert takd.chain_stages(('resnet6',)) == (['ta_resnet6'], 'student_via_resnet6')
  assert takd.chain_stages(('resnet6', 'resnet4')) == (
      ['ta_resnet6', 'ta_resnet6_resnet4'], 'student_via_resnet6_resnet4')
  for preset in takd.PRESETS.values():  # seed 003's family, each TA between the two
    sizes = {'resnet3': 3, 'resnet4': 4, 'resnet5': 5, 'resnet6': 6, 'resnet10': 10}
    for chain in preset['chains']:
      steps = [sizes[preset['teacher']], *(sizes[m] for m in chain), sizes[preset['student']]]
      assert steps == sorted(steps, reverse=True) and len(set(steps)) == len(steps), chain


def _check_takd(data, workdir, preset):
  """Each chain's TAs were taught in order (teacher → first TA → ... → student), one run
  each, and the student once per seed; the chosen chain is one that ran."""
  def results(stage):
    with open(os.path.join(workdir, stage, 'results.json')) as f:
      return json.load(f)

  chains = [tuple(c) for c in data['chains']]
  assert chains == [preset['chains'][0], preset['chains'][-1]]  # the quick run's two
  teacher = results('teacher')
  assert teacher['model'] == preset['teacher'] and teacher['teacher'] is None
  for chain in chains:
    ta_names, student_stage = takd.chain_stages(chain)
    above = os.path.join(workdir, 'teacher')
    for model, stage in zip(chain, ta_names):
      ta = results(stage)
      assert ta['model'] == model and 'members' not in ta  # one run
      assert ta['config']['teacher']['workdir'] == above, stage
      above = os.path.join(workdir, stage)
    student = results(student_stage)
    runs = [json.load(open(os.path.join(m['workdir'], 'results.json')))
            for m in student['members']]
    assert len(runs) == 2 and {r['model'] for r in runs} == {preset['student']}
    assert all(r['config']['teacher']['workdir'] == above for r in runs)
  assert tuple(data['chosen']) in chains
  (selection,) = data['selections']
  assert selection['what'].endswith('the teacher-assistant chain')
  assert selection['chosen'] == {'chain': ' → '.join(data['chosen'])}


test_presets.EXTRA_CHECKS['takd'] = _check_takd


@pytest.mark.slow  # end to end: `make test-all`
@pytest.mark.parametrize('name', list(takd.PRESETS))
def test_preset_runs_to_the_end(name, preset_env, tmp_path):  # noqa: F811
  test_presets.run_and_check('takd', name, preset_env, tmp_path)
