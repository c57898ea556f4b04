"""The soak run (``make soak``, ``python -m deepforge_dev.soak``): many pipelines on many workers under
faults drawn from a seed, then an audit that nothing was lost, stuck, duplicated, orphaned or corrupted.

Modules: :mod:`.stack` (the system and its fault proxies), :mod:`.workload` (the generated pipelines),
:mod:`.faults` (the schedule and the injectors), :mod:`.run` (the driver), :mod:`.report` (the figures),
:mod:`.proxy` (the fault-injecting TCP proxy) and :mod:`.audit` (what must hold after the run).
docs/reliability.md explains the run, its knobs and the last figures.
"""
