# deepforge-adapters developer entry points.  Every target installs what it needs (idempotent, stamped),
# so `make test` and `make dev` work from a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
PYTEST_ARGS ?=

.PHONY: install test unit lint bench demo dev clean

install: $(STAMPS)/python

$(STAMPS)/python: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# README's test command: the whole suite, servers started by the suite's own fixtures.
test: install
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check packages worker tests bench
	$(BIN)/mypy packages/deepforge_adapters packages/deepforge_plugins worker/deepforge_worker

bench: install
	$(BIN)/python bench/run_all.py

demo: install
	$(BIN)/python -m deepforge_adapters.demo

clean:
	rm -rf $(VENV) $(STAMPS) .run build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# The Python plugins' metadata.json (dialog fields) from the installed storage/compute backends.
.PHONY: plugins-metadata
plugins-metadata: install
	$(BIN)/python -m deepforge_plugins.metadata plugins
