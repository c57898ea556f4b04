# deepforge-adapters developer entry points.  Every target installs what it needs (idempotent, stamped),
# so `make test` and `make dev` work from a fresh clone.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
PYTEST_ARGS ?=

.PHONY: install test unit integration e2e lint bench demo dev dist clean soak

# Bytecode for our own packages, written once here: the machine sets PYTHONDONTWRITEBYTECODE, so without it
# every interpreter a job starts (local supervisor, job shim, runner; the worker; each plugin run) compiled
# the package's modules from source again, ~0.15 s of CPU each (docs/benchmarks.md, "Scale").  A stale file is
# recompiled in memory by Python and rewritten by the next `make install`.
install: $(STAMPS)/python
	@$(BIN)/python -m compileall -q packages worker plugins bench > /dev/null

$(STAMPS)/python: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# README's test command: the whole suite, servers started by the suite's own fixtures.
test: install node browser ray slurm
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The layers of the suite, fastest first, by marker (pyproject.toml), wherever the tests live.  `unit`:
# tests/unit, no server, no subprocess.  `integration`: real servers and subprocesses on loopback (WebGME, moto
# S3, the SciServer contract server); DEEPFORGE_TEST_WEBGME_URL and DEEPFORGE_TEST_S3_ENDPOINT
# (+ _ACCESS_KEY_ID, _SECRET_ACCESS_KEY) point them at servers that already run.  `e2e`: the whole system
# (server, plugins, worker, the browser UI).  `test` runs everything.
unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

integration: install node ray slurm
	$(BIN)/python -m pytest -q -m "integration and not e2e" $(PYTEST_ARGS)

e2e: install node browser
	$(BIN)/python -m pytest -q -m e2e $(PYTEST_ARGS)

# The same checks as .pre-commit-config.yaml: lint, format, types, and the layer contracts in pyproject.toml.
LINT_PATHS := packages worker tests bench plugins
lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy packages/deepforge_adapters packages/deepforge_plugins packages/deepforge_dev worker/deepforge_worker
	$(BIN)/lint-imports

bench: install node ray slurm
	$(BIN)/python bench/run_all.py

# The soak run (docs/reliability.md): 1,000 jobs on 4 deepforge-workers (2 slots each) and local compute, gme and
# SeaweedFS storage, >= 50 faults drawn from a seed (printed first; SOAK_SEED=N replays one), then the audit;
# exits non-zero unless nothing was lost, stuck, duplicated, orphaned or corrupt.  The report is printed and
# written to $(RUN_DIR)/soak/report.json.  More knobs: SOAK_ARGS (python -m deepforge_dev.soak --help).  Its
# reduced version is tests/soak/test_soak_reduced.py, part of `make test`.
SOAK_JOBS ?= 1000
SOAK_FAULTS ?= 50
SOAK_SEED ?=
SOAK_ARGS ?=
soak: install node
	@mkdir -p $(RUN_DIR)/soak
	$(BIN)/python -m deepforge_dev.soak --jobs $(SOAK_JOBS) --faults $(SOAK_FAULTS) $(if $(SOAK_SEED),--seed $(SOAK_SEED)) \
	  --run-dir $(abspath $(RUN_DIR))/soak/run --report $(RUN_DIR)/soak/report.json $(SOAK_ARGS)

demo: install
	$(BIN)/python -m deepforge_dev.demo

# A wheel for installing the worker (or the library) elsewhere, e.g. on a GPU box (docs/worker.md,
# "Installing"): $(DIST_DIR)/deepforge_adapters-<version>-py3-none-any.whl.  tests/integration/test_dist.py
# installs it into a fresh venv and runs `deepforge-worker --version`.
DIST_DIR ?= dist
dist: | $(STAMPS)/python
	rm -rf $(DIST_DIR)/deepforge_adapters-*.whl
	$(BIN)/python -m pip wheel -q --no-deps -w $(DIST_DIR) .
	@ls $(DIST_DIR)/deepforge_adapters-*.whl

clean:
	rm -rf $(VENV) $(STAMPS) .run build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# ------------------------------------------------------------------------------------------------ WebGME
# The WebGME server (webgme-config/) and its database: Node packages from the lock file, libzmq for
# webgme-bindings (built against the system library: its own build downloads from GitHub), and the pinned
# MongoDB wire-protocol substitute used when no mongod is available.
WEBGME_DIR := webgme-config
RUN_DIR := .run
.PHONY: node webgme-up webgme-down seed

node: $(STAMPS)/node

$(STAMPS)/node: $(WEBGME_DIR)/package.json $(WEBGME_DIR)/package-lock.json $(WEBGME_DIR)/requirements.txt | $(STAMPS)/python
	@mkdir -p $(STAMPS)
	@pkg-config --exists libzmq || { \
	  echo "installing libzmq3-dev (needed by webgme-bindings)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q libzmq3-dev pkg-config g++ make; }
	cd $(WEBGME_DIR) && npm_config_zmq_external=true npm ci --no-audit --no-fund --loglevel=error
	cd $(WEBGME_DIR) && node -e "require('zeromq').socket('rep').close()"
	$(BIN)/python -m pip install -q -r $(WEBGME_DIR)/requirements.txt
	@touch $@

webgme-up: node plugins-metadata
	@mkdir -p $(RUN_DIR)
	$(BIN)/python -m deepforge_dev.stack up --run-dir $(RUN_DIR)/webgme --persist

webgme-down:
	$(BIN)/python -m deepforge_dev.stack down --run-dir $(RUN_DIR)/webgme

# The Python plugins' metadata.json (dialog fields) from the installed storage/compute backends and the operator
# policy in force ($DEEPFORGE_POLICY; without one, no local storage/compute: what is committed).
.PHONY: plugins-metadata
plugins-metadata: install
	$(BIN)/python -m deepforge_plugins.metadata plugins

# Regenerate webgme-config/seeds/pipeline.webgmex from DeepForge's own pipeline.webgmex (shared/deepforge/seeds/
# beside the repository, or $DEEPFORGE_SEEDS_DIR; build_pipeline_seed.js attaches it as library "pipeline").
# Committed; installs never need this.
seed: node
	$(BIN)/python -m deepforge_dev.stack with-db -- node $(WEBGME_DIR)/seeds/build_pipeline_seed.js $(WEBGME_DIR)/seeds/pipeline.webgmex

# The whole system for development: database, WebGME server (UI at the printed URL), a demo project seeded
# with the example pipeline; Ctrl-C stops everything.  State persists in .run/dev (rm -rf it to start over).
# The port is 8888 (another: make dev DEEPFORGE_WEBGME_PORT=8889); a busy one is refused before anything starts.
# One deepforge-worker runs beside the server (DEV_WORKER_CMD, {url} = the server URL; empty: no worker).
# All state stays under .run/dev: local storage in storage/, local compute in compute/, the worker's jobs and
# cache in worker/ and worker-cache/ (the stack sets their defaults; nothing goes to ~/.local/share).
# The dev stack's deployment key (plugins seal bundle secrets with it, the worker opens them) is made once.
# Its operator policy (.run/dev/policy.toml, written once, then kept) enables local storage and compute under
# .run/dev; the server loads the plugins from .run/dev/plugins, whose dialogs are generated for that policy.
DEV_DIR := $(abspath $(RUN_DIR))/dev
DEV_WORKER_CMD ?= $(abspath $(BIN))/deepforge-worker start --host {url}
dev: install node
	@mkdir -p $(DEV_DIR) && umask 077 && { grep -qs ':' $(DEV_DIR)/secret.key || $(BIN)/deepforge secrets keygen > $(DEV_DIR)/secret.key; }
	DEEPFORGE_SECRET_KEY_FILE=$(DEV_DIR)/secret.key DEV_WORKER_CMD="$(DEV_WORKER_CMD)" \
	  $(BIN)/python -m deepforge_dev.stack dev --run-dir $(DEV_DIR)

# ------------------------------------------------------------------------------------------------ Browser
# Headless Chromium from Debian for the WebGME UI test (tests/e2e/test_ui_browser.py, driven by Playwright
# with executable_path=$(CHROMIUM)).  Playwright's own browser download is never used: it needs the internet.
CHROMIUM ?= /usr/bin/chromium
.PHONY: browser
browser: $(STAMPS)/browser

$(STAMPS)/browser:
	@mkdir -p $(STAMPS)
	@test -x $(CHROMIUM) || { \
	  echo "installing chromium (headless browser for the UI test)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }
	$(CHROMIUM) --version
	@touch $@

# ------------------------------------------------------------------------------------------------ Ray
# A real Ray head node for the ray compute tests (tests/fixtures/ray.py) and bench/ray_overhead.py: the
# test-only `ray` extra (ray[default] from PyPI, about 240 MB).  The ray backend itself needs only requests.
.PHONY: ray
ray: $(STAMPS)/ray

$(STAMPS)/ray: pyproject.toml | $(STAMPS)/python
	@mkdir -p $(STAMPS)
	$(BIN)/python -m pip install -q -e '.[ray]'
	$(BIN)/ray --version
	@touch $@

# ------------------------------------------------------------------------------------------------ Slurm
# Debian's Slurm 22.05 (controller, node daemon, client commands, slurmrestd with its JWT plugin) and an OpenSSH
# server, for the slurm compute tests (tests/fixtures/slurm.py starts a single-node cluster and an sshd on
# loopback, each stopped by pid; none of the daemons is started by apt: policy-rc.d / no systemd).  With the
# stamp present, tests that need Slurm fail instead of skipping.
SLURM_PACKAGES := slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin openssh-server openssh-client
.PHONY: slurm
slurm: $(STAMPS)/slurm

$(STAMPS)/slurm:
	@mkdir -p $(STAMPS)
	@command -v slurmctld >/dev/null && command -v slurmrestd >/dev/null && command -v sshd >/dev/null || { \
	  echo "installing Debian's Slurm and OpenSSH server (for the slurm compute tests)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $(SLURM_PACKAGES); }
	slurmctld -V
	@touch $@
