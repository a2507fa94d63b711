"""experiments.ensembles' presets end to end on mock data, and the benchmark's section (i).

Each preset with --quick: its recipe (Hinton's MNIST teacher recipe, its jitter or
none, K = 10 teachers as one seed sweep, a T grid cut to two values, 2 seeds per
student, §6's subset) at smoke-test size; every report row is held against its
runs, the ensemble's own numbers against its members'.
"""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags

from experiments import benchmark_ensemble, common, ensembles
from experiments import benchmark_programs as programs
from kdjax import report
from tests.test_presets import check_report_rows

pytestmark = pytest.mark.slow  # end to end: `make test-all`


@pytest.mark.parametrize('name', list(ensembles.PRESETS))
def test_ensembles_preset_runs_end_to_end(name, tmp_path):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(['pytest'])
  setup, preset = common.make_setup(ensembles.PRESETS[name], quick=True,
                                    data_dir=str(tmp_path / 'tfds'))
  workdir = str(tmp_path / 'ensembles')
  os.makedirs(workdir)
  with tfds.testing.mock_data(num_examples=64):
    text = ensembles.body(common.Stages(workdir, setup), dict(preset, name=name))
  with open(os.path.join(workdir, 'report.json')) as f:
    out = json.load(f)
  k = ensembles.PRESETS[name]['teachers']
  # K teachers, the three students, §6's two subset rows and the full-data row.
  assert check_report_rows(out) == k + 3 + 3
  teachers = report.read_json(os.path.join(workdir, 'teachers', 'results.json'))
  assert len(teachers['members']) == k  # one program: one sweep of K seeds
  assert [s['what'] for s in out['selections']] == ['student from one teacher: T',
                                                     'student from the ensemble: T']
  chosen = out['selections'][1]['chosen']['temperature']
  student = report.read_json(os.path.join(
      workdir, f'ensemble_T{chosen:g}', 'members', 'seed100', 'results.json'))
  section = student['teacher']
  assert section['ensemble'] == 'probs' and len(section['members']) == k
  assert section['cached'] is (ensembles.PRESETS[name]['max_shift'] == 0)
  assert [m['test_accuracy'] for m in section['members']] == [
      m['test_accuracy'] for m in teachers['members']]
  assert out['ensemble_test_accuracy'] == section['test_accuracy']
  subset = report.read_json(os.path.join(workdir, 'subset_ensemble', 'members', 'seed100',
                                         'results.json'))
  assert subset['train_examples'] == out['subset_examples'] and subset['temperature'] == chosen
  assert subset['teacher']['workdir'] == os.path.join(workdir, 'teachers')
  assert '§6' in text and f'ensemble of the {k}' in text


def test_benchmark_section_i_times_the_ensemble_both_ways():
  bench = programs.Bench(quick=True, repeats=1)
  ratios = benchmark_ensemble.measure(bench)
  names = [r['name'] for r in bench.rows]
  assert len(names) == 6 and all(r['seconds'] > 0 for r in bench.rows)
  assert sum('as one vectorised program' in n for n in names) == 2
  assert sum('as 10 separate runs' in n for n in names) == 2
  assert [(s, t) for s, _, _, t in ratios] == [('i', '>= 3'), ('i', '>= 3')]
  apart = [r['seconds'] for r in bench.rows if 'separate' in r['name']]
  together = [r['seconds'] for r in bench.rows if 'vectorised' in r['name']]
  np.testing.assert_allclose([v for _, _, v, _ in ratios], np.divide(apart, together))
