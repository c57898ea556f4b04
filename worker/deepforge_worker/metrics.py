"""What an operator can see of a running daemon: Prometheus metrics and the status file.

``deepforge-worker start --metrics-port 9400`` serves the metrics below in the Prometheus text format at
``http://<addr>:9400/metrics`` (``prometheus_client``); every daemon has them, the port only exposes them.

=========================================  ====================================================================
``deepforge_worker_jobs_total{status}``    jobs ended, by final executor status (``SUCCESS``, ``CANCELED``...)
``deepforge_worker_running_jobs{slot,gpus}``  1 while the slot runs a job (or a label probe), else 0
``deepforge_worker_polls_total``           ``POST /worker`` polls made
``deepforge_worker_poll_errors_total``     polls that failed (network, HTTP, an answer that is not an object)
``deepforge_worker_bytes_downloaded_total``  job bundle bytes downloaded
``deepforge_worker_bytes_uploaded_total``  result file bytes uploaded
``deepforge_worker_job_duration_seconds``  histogram of jobs' time from claim to final report
=========================================  ====================================================================

The status file (``<work dir>/status.json``, :data:`STATUS_FILE`) is what ``deepforge-worker status`` prints:
the daemon rewrites it atomically after every poll (slots and their jobs, the last poll, whether it is
draining), so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepforge_adapters.streams import atomic_write
from deepforge_adapters.timestamps import now_iso
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .slots import Slot

STATUS_FILE = "status.json"
#: Job durations (seconds) from a quick test job to a multi-day training run.
DURATION_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 72 * 3600, float("inf"))


class WorkerMetrics:
    """The daemon's counters, in a registry of its own (several workers may share a test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        prefix = "deepforge_worker"
        self.jobs = Counter(f"{prefix}_jobs", "Jobs ended, by final status", ["status"], registry=self.registry)
        self.running = Gauge(
            f"{prefix}_running_jobs", "Jobs running in each slot", ["slot", "gpus"], registry=self.registry
        )
        self.polls = Counter(f"{prefix}_polls", "Executor polls made", registry=self.registry)
        self.poll_errors = Counter(f"{prefix}_poll_errors", "Executor polls that failed", registry=self.registry)
        self.bytes_down = Counter(f"{prefix}_bytes_downloaded", "Job bundle bytes downloaded", registry=self.registry)
        self.bytes_up = Counter(f"{prefix}_bytes_uploaded", "Result file bytes uploaded", registry=self.registry)
        self.duration = Histogram(
            f"{prefix}_job_duration_seconds",
            "Time from claim to final report",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def add_slots(self, slots: Sequence[Slot]) -> None:
        for slot in slots:
            self._slot_gauge(slot).set(0)

    def slot_busy(self, slot: Slot, busy: bool) -> None:
        self._slot_gauge(slot).set(1 if busy else 0)

    def job_ended(self, status: str, seconds: float) -> None:
        self.jobs.labels(status=status).inc()
        self.duration.observe(seconds)
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + 1

    def counts(self) -> dict[str, int]:
        """Jobs ended so far, by final status (for the status file)."""
        with self._lock:
            return dict(self._counts)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)

    def _slot_gauge(self, slot: Slot) -> Any:
        return self.running.labels(slot=str(slot.index), gpus=",".join(slot.gpus))


def write_status(work_dir: Path, status: dict[str, Any]) -> None:
    """Replace ``<work dir>/status.json`` atomically (after every poll, so without an fsync: one that took
    seconds on a busy disk delayed the next poll, and a worker silent for 5 refresh periods loses its jobs
    to another worker on the server)."""
    with atomic_write(work_dir / STATUS_FILE, durable=False) as fh:
        fh.write(json.dumps({**status, "updated": now_iso()}, indent=2).encode())


def read_status(work_dir: Path) -> dict[str, Any]:
    """The status a daemon last wrote in ``work_dir``; ``alive`` says whether its pid still runs."""
    status: dict[str, Any] = json.loads((work_dir / STATUS_FILE).read_text())
    try:
        os.kill(int(status.get("pid", 0)), 0)
        status["alive"] = bool(status.get("pid"))
    except ProcessLookupError:
        status["alive"] = False
    except PermissionError:
        status["alive"] = True
    return status
