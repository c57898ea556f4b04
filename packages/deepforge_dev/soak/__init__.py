"""The soak run: many pipelines, many workers, faults injected on a seeded schedule, and an audit of what must
hold afterwards (``proxy.py``: the fault-injecting TCP proxy; ``audit.py``: the checks)."""
