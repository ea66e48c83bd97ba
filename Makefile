# Everything a fresh machine needs is installed by these targets: Python packages into .venv,
# the Azurite storage emulator into node_modules (npm ci, pinned by package-lock.json).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# checkov and pycep-parser (infra checks) pin versions that conflict with the test packages: own venv.
INFRA_VENV  := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed-stamp

.PHONY: setup demo test lint typecheck unit bench clean infra-setup infra-check

setup: $(STAMP) node_modules/.installed-stamp

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed-stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(INFRA_STAMP): requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

infra-setup: $(INFRA_STAMP)

infra-check: $(INFRA_STAMP)
	$(INFRA_VENV)/bin/python scripts/check_infra.py

demo: setup
	$(BIN)/python -m scripts.demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy exporter sandbox function_app.py

unit: setup $(INFRA_STAMP)
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(INFRA_VENV) node_modules .pytest_cache .mypy_cache .ruff_cache results .cache
