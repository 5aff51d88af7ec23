# Both entry points set everything up on a fresh machine, then do their job.
#   make demo  - train CREPS on the built-in synthetic dataset for a few minutes (CPU is fine)
#   make test  - run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test bench clean

setup: $(VENV)/.creps-installed

# The venv sees the system site-packages so that a torch the user already has (e.g. a
# CUDA build) is used as is; torch==$(TORCH_VERSION) is installed only when none imports.
$(VENV)/.creps-installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(PY) -m creps demo --outdir=demo-runs

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_train.py --cfg=creps --res=32 --batch=8 --cbase=4096 --cmax=128 --map-depth=2

clean:
	rm -rf $(VENV) demo-runs .pytest_cache
