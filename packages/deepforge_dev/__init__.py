"""The development harness: never imported by the runtime packages (``deepforge_adapters``, ``deepforge_plugins``,
``deepforge_worker``; an import-linter contract in ``make lint`` checks it).

* :mod:`.stack` starts and stops a local database + WebGME server (``make dev``, ``make webgme-up``,
  ``make seed``, the pytest fixtures in ``tests/fixtures/``, the benchmarks);
* :mod:`.demo` runs a small pipeline on local storage and local compute (``make demo``).
"""
