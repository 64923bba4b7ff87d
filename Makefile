# Two entry points: `make demo` (set up + run the main job offline) and `make test` (set up + run the tests).
# Works on a fresh machine with no GPU: creates .venv, installs a CPU torch if none is importable, installs the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: setup test test-all demo cuda-compile lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	BUILD_NO_CUDA=1 $(PY) -m pip install -e ".[dev,slurm]"   # slurm: CI runs the real submitit machinery (local)
	touch $@

test: setup
	$(OFFLINE) $(PY) -m pytest -q

test-all: setup
	$(OFFLINE) $(PY) -m pytest -q -m ""

demo: setup
	$(OFFLINE) $(PY) -m animate124.demo

cuda-compile:
	bash scripts/check_cuda_compile.sh

lint: setup
	$(VENV)/bin/ruff check animate124 tests scripts

clean:
	rm -rf build dist *.egg-info outputs
