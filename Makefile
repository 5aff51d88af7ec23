# Both entry points set everything up on a fresh machine, then do their job.
#   make demo  - train CREPS on the built-in synthetic dataset for a few minutes (CPU is fine)
#   make test  - run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: setup browser demo test bench clean

setup: $(VENV)/.creps-installed

# The venv sees the system site-packages so that a torch the user already has (e.g. a
# CUDA build) is used as is; torch==$(TORCH_VERSION) is installed only when none imports.
$(VENV)/.creps-installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The studio's browser tests drive the system's Chromium (Debian's `chromium`; playwright's own
# browser downloads are never used). Installed with apt-get when missing and we are root;
# otherwise those tests are skipped, with the reason.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium (apt-get) for the browser tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; } || \
		echo "warning: could not install chromium; the browser tests will be skipped"; \
	else \
		echo "note: no chromium (as root: apt-get install chromium); the browser tests will be skipped"; \
	fi

demo: setup
	$(PY) -m creps demo --outdir=demo-runs

test: setup browser
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_train.py --cfg=creps --res=32 --batch=8 --cbase=4096 --cmax=128 --map-depth=2

clean:
	rm -rf $(VENV) demo-runs .pytest_cache
