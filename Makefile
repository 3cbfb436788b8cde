# gridwatch — the two commands: `make demo` (the whole county on one machine) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
NODE_INSTALLED := node_modules/.installed
# ByteTrack for the edge; --no-deps because it declares opencv-python (the GUI build),
# which would replace the headless cv2. Its real dependencies are in the edge extra.
TRACKERS := trackers==2.6.1

.PHONY: setup services test lint fmt clean demo

setup: $(INSTALLED) $(NODE_INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("gridwatch needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	$(BIN)/python -m pip install -q --no-deps '$(TRACKERS)'
	@touch $@

$(NODE_INSTALLED): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

services:
	@scripts/ensure-services.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict protocols cloud provisioning
	$(BIN)/gridwatch protocols export --check

test: setup services lint
	$(BIN)/python -m pytest

demo: setup services
	$(BIN)/gridwatch demo

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
