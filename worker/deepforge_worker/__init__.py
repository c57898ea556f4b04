"""deepforge-worker: a Python drop-in for the WebGME executor worker (see docs/worker.md).

:mod:`.daemon` is the poll loop, :mod:`.execution` runs one job, :mod:`.output` streams its console,
:mod:`.slots` assigns process slots and GPUs, :mod:`.settings` and :mod:`.cli` configure it.
"""
