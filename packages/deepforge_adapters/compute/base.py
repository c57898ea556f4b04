"""The compute interface: :class:`ComputeClient`, :class:`JobStatus`, :class:`JobUpdate`.

Compatible with DeepForge's ``ComputeClient``: ``start_job`` returns a JSON-serialisable ``job_info`` that
the plugin stores in ``Job.jobInfo``; everything after that (status, output, results, cancel, watch) takes
only that ``job_info``, so a process that died can be replaced by one that resumes from the model.

DeepForge pushed ``update``/``data``/``end`` events; here ``watch()`` is an iterator of :class:`JobUpdate`,
which a plugin consumes in a loop and a test consumes with ``list()``.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from ..config import Config, ConfigSchema
from ..errors import ComputeError

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    """DeepForge's status names."""

    QUEUED = "queued"
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"
    NOT_FOUND = "NOT_FOUND"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.PENDING, JobStatus.RUNNING)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class StatusMapping:
    """What one backend status code means: our status and, for failures, a sentence a user can read."""

    status: JobStatus
    reason: str | None = None


class StatusTable:
    """One table per backend from its status codes to :class:`StatusMapping`; unknown codes fail loudly."""

    def __init__(self, backend: str, table: Mapping[Any, StatusMapping]) -> None:
        self.backend = backend
        self._table = dict(table)

    def __getitem__(self, code: Any) -> StatusMapping:
        try:
            return self._table[code]
        except KeyError:
            return StatusMapping(JobStatus.FAILED, f"{self.backend}: unknown job status {code!r}")

    def codes(self) -> list[Any]:
        return list(self._table)


@dataclass(frozen=True)
class JobUpdate:
    """One event of :meth:`ComputeClient.watch`.

    ``kind`` is ``"status"`` (``status`` changed), ``"output"`` (``output`` is the next chunk of console
    text, in order, nothing skipped or repeated) or ``"end"`` (the final ``status`` and, for failures,
    ``reason``).  ``end`` is always the last update.
    """

    kind: str
    status: JobStatus | None = None
    output: str = ""
    reason: str | None = None


@dataclass(frozen=True)
class ComputeJob:
    """What ``start_job`` runs: a job bundle, by local path and/or by blob hash, plus naming for humans.

    The gme backend needs ``hash`` (the bundle is already a blob artifact); local and sciserver-compute use
    ``bundle`` (a directory or zip made by :mod:`deepforge_adapters.jobs.bundle`), or fetch ``hash`` from
    the blob when no path is given.
    """

    bundle: Path | None = None
    hash: str | None = None
    name: str = "deepforge job"
    labels: tuple[str, ...] = ()
    #: DeepForge's PipelineJob fields, kept for dashboards and logs (``job``, ``execution``,
    #: ``projectId``, ``branch``).
    meta: Mapping[str, Any] = field(default_factory=dict)


class ComputeClient(ABC):
    """Abstract base of every compute backend."""

    id: ClassVar[str]
    name: ClassVar[str]
    schema: ClassVar[ConfigSchema]
    status_table: ClassVar[StatusTable]
    #: Seconds between polls in the default :meth:`watch`.
    poll_interval: float = 1.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: Config = self.schema.resolve(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abstractmethod
    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        """Submit ``job``; returns the JSON-serialisable ``job_info`` (always containing ``hash``)."""

    @abstractmethod
    def cancel_job(self, job_info: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus: ...

    @abstractmethod
    def get_console_output(self, job_info: Mapping[str, Any]) -> str:
        """All console output so far (stdout and stderr, interleaved as written)."""

    @abstractmethod
    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        """The job's ``results.json``: ``{output name: {"type": ..., "dataInfo": {...}}}``."""

    def get_failure_reason(self, job_info: Mapping[str, Any]) -> str | None:
        """A one-line reason for a failed job; by default the last non-empty line of its output."""
        lines = [line for line in self.get_console_output(job_info).splitlines() if line.strip()]
        return lines[-1].strip() if lines else None

    def purge_job(self, job_info: Mapping[str, Any]) -> None:
        """Remove whatever the backend keeps for a finished job; no-op by default."""
        return None

    def watch(self, job_info: Mapping[str, Any], poll_interval: float | None = None) -> Iterator[JobUpdate]:
        """Poll until the job finishes, yielding status changes and new output, then ``end``.

        Backends with a cheaper incremental protocol override this; this default diffs the console output.
        """
        interval = self.poll_interval if poll_interval is None else poll_interval
        last_status: JobStatus | None = None
        seen = 0
        while True:
            status = self.get_status(job_info)
            output = self.get_console_output(job_info)
            if len(output) > seen:
                yield JobUpdate("output", output=output[seen:])
                seen = len(output)
            if status != last_status:
                last_status = status
                if not status.finished:
                    yield JobUpdate("status", status=status)
            if status.finished:
                reason = self.get_failure_reason(job_info) if status == JobStatus.FAILED else None
                yield JobUpdate("end", status=status, reason=reason)
                return
            time.sleep(interval)

    # helpers ---------------------------------------------------------------------------------------
    def require(self, job_info: Mapping[str, Any], *keys: str) -> None:
        missing = [k for k in keys if k not in job_info]
        if missing:
            raise ComputeError(self.id, f"job_info lacks {', '.join(missing)}: {dict(job_info)!r}")
