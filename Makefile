# Two commands do everything on a fresh machine:
#   make quickstart   the main job on the built-in default data and the local/emulated targets
#   make test         every test
# Each creates or refreshes .venv (when pyproject.toml or constraints.txt changed) and installs
# the system packages the tests need when they are missing.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgekd-installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: quickstart test venv system-deps benchmarks-quick clean-venv help

help:
	@echo "make quickstart   run the main job (distill -> int8 -> deploy local + emulated MCU -> report)"
	@echo "make test         run every test"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=python3.x"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel -c constraints.txt
	$(PIP) install -q -c constraints.txt -e '.[all]'
	# onnx2tf without its exact pins (they would add the GUI OpenCV build); its needs are in [convert].
	$(PIP) install -q -c constraints.txt --no-deps onnx2tf onnxoptimizer
	@touch $(STAMP)

system-deps:
	@scripts/install-system-deps.sh

quickstart: venv system-deps
	$(BIN)/edgekd quickstart

test: venv system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

benchmarks-quick: venv
	@mkdir -p runs/benchmarks
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b --quick --out runs/benchmarks/$$(basename $$b .py).json || exit 1; done

clean-venv:
	rm -rf $(VENV)
