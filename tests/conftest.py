"""Fixtures shared by the test modules, the `slow` tier, and the compilation cache's count.

Two tiers (README, "Tests"): `make test` runs every test not marked `slow`
(unit tests, the compiled step of each method, one `kdjax.main` run and
`hinton_mnist --quick` on real MNIST); `make test-all` adds the tests marked
`slow` (every launcher preset end to end, the benchmark, the full-size preset
pairs). Mark a new preset test with `@pytest.mark.slow`.
"""

import glob
import json
import os
import shutil
import tempfile
import time

import pytest

import tests

# Before JAX compiles anything: see tests/__init__.py. A level already set in
# $XLA_FLAGS is kept.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = ' '.join(
      filter(None, (os.environ.get('XLA_FLAGS', ''), tests.XLA_FLAGS)))
os.environ.setdefault(tests.CPU_CONV_ENV, tests.CPU_CONV)
# One cache of decoded datasets and compiled programs for the whole test run,
# shared by the xdist workers and the processes tests start; a new run starts
# empty, as CI does (`make test-all` gives both tiers one directory).
os.environ.setdefault('KDJAX_CACHE_DIR', os.path.join(
    tempfile.gettempdir(), f'kdjax-test-cache-{os.environ.get("PYTEST_XDIST_TESTRUNUID", os.getpid())}'))

import jax  # noqa: E402

from kdjax import data  # noqa: E402

# The persistent compilation cache's events in this process, summed over the
# workers at the end of the run (pytest_terminal_summary).
_CACHE_EVENTS = {'/jax/compilation_cache/cache_hits': 'hits',
                 '/jax/compilation_cache/cache_misses': 'writes'}
_cache_counts = {'hits': 0, 'writes': 0}


def _on_event(event: str, **kwargs) -> None:
  del kwargs
  if event in _CACHE_EVENTS:
    _cache_counts[_CACHE_EVENTS[event]] += 1


jax.monitoring.register_event_listener(_on_event)

# $KDJAX_TEST_PROFILE=FILE: one JSON line per test in FILE with the seconds
# JAX spent tracing, lowering and compiling in it (and the cache's hits), to
# see where a slow test's time goes.
_PROFILE_EVENTS = {'/jax/core/compile/jaxpr_trace_duration': 'trace',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lower',
                   '/jax/core/compile/backend_compile_duration': 'compile'}
_profile = {'trace': 0.0, 'lower': 0.0, 'compile': 0.0, 'programs': 0}


def _on_duration(event: str, duration: float, **kwargs) -> None:
  del kwargs
  if event in _PROFILE_EVENTS:
    _profile[_PROFILE_EVENTS[event]] += duration
    _profile['programs'] += event == '/jax/core/compile/backend_compile_duration'


if os.environ.get('KDJAX_TEST_PROFILE'):
  jax.monitoring.register_event_duration_secs_listener(_on_duration)

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_call(item):
    before = dict(_profile, hits=_cache_counts['hits'], wall=time.perf_counter())
    yield
    after = dict(_profile, hits=_cache_counts['hits'], wall=time.perf_counter())
    line = {key: round(after[key] - before[key], 2) for key in after}
    line['test'] = item.nodeid
    with open(os.environ['KDJAX_TEST_PROFILE'], 'a') as f:
      f.write(json.dumps(line) + '\n')


def _counts_dir() -> str:
  return os.path.join(os.environ['KDJAX_CACHE_DIR'], 'test-cache-counts')


def pytest_configure(config):
  if not hasattr(config, 'workerinput'):  # the controller (or a run without workers)
    shutil.rmtree(_counts_dir(), ignore_errors=True)


def pytest_sessionfinish(session):
  del session
  os.makedirs(_counts_dir(), exist_ok=True)
  name = os.environ.get('PYTEST_XDIST_WORKER', 'main')
  with open(os.path.join(_counts_dir(), f'{name}-{os.getpid()}.json'), 'w') as f:
    json.dump(_cache_counts, f)


def pytest_terminal_summary(terminalreporter):
  """One line: the persistent compilation cache's hits and writes over every worker."""
  totals = {'hits': 0, 'writes': 0}
  for path in glob.glob(os.path.join(_counts_dir(), '*.json')):
    with open(path) as f:
      for key, value in json.load(f).items():
        totals[key] += value
  terminalreporter.write_line(
      f'compilation cache {os.environ["KDJAX_CACHE_DIR"]}: {totals["hits"]} programs read back, '
      f'{totals["writes"]} written (in the test processes; the processes tests start are not '
      'counted)')


@pytest.fixture(autouse=True, scope='session')
def _full_float32_on_accelerators():
  """The suite compares float32 programs at float32 tolerances: on a GPU or TPU, whose
  float32 matrix products and convolutions otherwise run in TF32 / bf16 passes, it runs
  them at full float32 precision."""
  if jax.default_backend() != 'cpu':
    jax.config.update('jax_default_matmul_precision', 'highest')
  yield


@pytest.fixture
def patches_conv(monkeypatch):
  """kdjax's own CPU convolution (shifted slices and a matrix product) for one test."""
  monkeypatch.setenv(tests.CPU_CONV_ENV, 'patches')


@pytest.fixture(scope='session')
def mnist_data_dir():
  """A TFDS data directory holding the real MNIST and Fashion-MNIST.

  $KDJAX_TEST_DATA_DIR if set, else the default TFDS data directory. Both
  datasets are imported on first use (about 20 s each) and reused afterwards.
  """
  data_dir = os.environ.get('KDJAX_TEST_DATA_DIR') or data.default_data_dir()
  for name in ('mnist', 'fashion_mnist'):
    data.import_dataset(name, data_dir=data_dir)
  return data_dir
