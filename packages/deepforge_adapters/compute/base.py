"""The compute interface: :class:`ComputeClient`, :class:`JobStatus`, :class:`JobUpdate`.

Compatible with DeepForge's ``ComputeClient``: ``start_job`` returns a JSON-serialisable ``job_info`` that
the plugin stores in ``Job.jobInfo``; everything after that (status, output, results, cancel, watch) takes
only that ``job_info``, so a process that died can be replaced by one that resumes from the model.

DeepForge pushed ``update``/``data``/``end`` events; here ``watch()`` is an iterator of :class:`JobUpdate`,
which a plugin consumes in a loop and a test consumes with ``list()``.  ``watch()`` is written once, here,
over one primitive every backend implements: :meth:`ComputeClient.poll` (see its contract).
"""

from __future__ import annotations

import codecs
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
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
        if isinstance(code, JobStatus):  # what poll() returns for a job the backend does not know
            return StatusMapping(code, f"{self.backend}: no such job")
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
    #: Where a new ``watch(job_info, cursor=...)`` resumes after this update (JSON-serialisable; store it with
    #: the job_info): it yields what comes after this update, nothing repeated.  Not part of equality.
    cursor: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class Poll:
    """What one :meth:`ComputeClient.poll` saw; see the contract there."""

    #: The backend's status code, a key of its ``status_table`` (``JobStatus.NOT_FOUND`` for an unknown job).
    code: Any
    #: Output bytes after the cursor, in order (stdout and stderr as the backend interleaves them).
    output: bytes = b""
    #: Where the next poll reads on; JSON-serialisable.
    cursor: Any = None
    #: More output is already available (the read was capped): poll again at once, the job has not ended yet.
    more: bool = False
    #: The backend's own words about a failure (an exit code, a server message), for the end reason.
    detail: str | None = None


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
    """Abstract base of every compute backend.

    A backend writes ``start_job``, ``cancel_job``, :meth:`poll`, ``get_results_info`` and a
    ``status_table``; the base derives :meth:`watch` (status-change events, incremental UTF-8 decoding,
    backoff, resuming from a cursor, the end event and its reason), ``get_status``, ``get_console_output``
    and ``get_failure_reason`` from them.  A backend may override ``get_status`` with a cheaper call (one
    that reads no output), and :meth:`describe_failure` when its output has its own way of saying why.

    **The poll contract.**  ``poll(job_info, cursor)`` looks at the job once and returns a :class:`Poll`:

    * ``code``: the backend's status code, read *before* the output, so that when ``code`` is a finished
      one the output up to the job's end is available to this poll; ``JobStatus.NOT_FOUND`` when the
      backend does not know the job.  Unknown codes need no care: the table maps them to ``failed``.
    * ``output``: the bytes written after ``cursor`` (``cursor=None``: from the start), raw, in order,
      nothing skipped or repeated: the base decodes them incrementally, so a multi-byte character split
      across two polls comes out whole.  A poll may return only part of what is new (cap a large read) and
      set ``more=True``; it must then return the rest on the next polls before ``more`` is False with a
      finished code.
    * ``cursor``: a JSON-serialisable value (a byte offset into a log file, a REST log endpoint's offset,
      the last output chunk number...) from which the next poll reads on.  It is the backend's alone; the
      base only stores it (in :attr:`JobUpdate.cursor`) and hands it back, possibly to another process
      after a restart, so validate it like ``job_info``: both may have been read back from a model.
    * ``detail``: the backend's own words for a failure (an exit code, a server message), or None.
    * ``job_info`` that this backend could not have returned (missing keys, a malformed id) raises
      :class:`ComputeError` saying so, before any request.

    A poll may release what the backend holds for the job only once it is no longer needed (sciserver
    compute removes its uploaded copy of the bundle when it sees a finished code); it must stay idempotent.
    """

    id: ClassVar[str]
    name: ClassVar[str]
    schema: ClassVar[ConfigSchema]
    status_table: ClassVar[StatusTable]
    #: Seconds between polls while something changes.
    poll_interval: float = 1.0
    #: Upper bound of the backoff (x1.5 per poll) while nothing changes.
    max_poll_interval: float = 10.0
    #: Characters of the latest output :meth:`watch` keeps for the failure reason (bounded: streams, not buffers).
    reason_tail_chars: ClassVar[int] = 16 * 1024

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: Config = self.schema.resolve(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    @abstractmethod
    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        """Submit ``job``; returns the JSON-serialisable ``job_info`` (always containing ``hash``)."""

    @abstractmethod
    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        """Ask the backend to cancel; returns at once.  The job's watch then ends ``canceled``."""

    @abstractmethod
    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        """Look at the job once: status code, new output bytes after ``cursor``, the next cursor (see above)."""

    @abstractmethod
    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        """The job's ``results.json``: ``{output name: {"type": ..., "dataInfo": {...}}}``."""

    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus:
        return self.status_table[self.poll(job_info, None).code].status

    def get_console_output(self, job_info: Mapping[str, Any]) -> str:
        """All console output so far (stdout and stderr, interleaved as written)."""
        return self._read_output(job_info)[1].decode("utf-8", "replace")

    def get_failure_reason(self, job_info: Mapping[str, Any]) -> str | None:
        """The end reason of a failed (or unknown) job, as :meth:`watch` gives it; None otherwise."""
        last, tail = self._read_output(job_info, keep=4 * self.reason_tail_chars)
        if self.status_table[last.code].status not in (JobStatus.FAILED, JobStatus.NOT_FOUND):
            return None
        return self.describe_failure(last.code, last.detail, tail.decode("utf-8", "replace"))

    def describe_failure(self, code: Any, detail: str | None, output_tail: str) -> str:
        """One sentence for a failed job: the backend's ``detail`` if it has one, else the status table's
        sentence and the last non-empty line of the output."""
        if detail:
            return detail
        lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
        parts = [part for part in (self.status_table[code].reason, lines[-1] if lines else None) if part]
        return ": ".join(parts) or f"{self.id}: the job ended as {code!r}"

    def purge_job(self, job_info: Mapping[str, Any]) -> None:
        """Remove whatever the backend keeps for a finished job; no-op by default."""
        return None

    def watch(
        self, job_info: Mapping[str, Any], poll_interval: float | None = None, *, cursor: Any = None
    ) -> Generator[JobUpdate, None, None]:
        """Poll until the job finishes, yielding status changes and new output, then exactly one ``end``.

        Status changes come before the output of the same poll.  ``cursor``: the :attr:`JobUpdate.cursor`
        of the last update a previous watch of this job yielded; the watch then goes on from there (no
        status or output repeated).  Polls come every ``poll_interval`` seconds while something changes,
        backing off up to ``max_poll_interval`` while nothing does.
        """
        interval = self.poll_interval if poll_interval is None else poll_interval
        ceiling = max(self.max_poll_interval, interval)
        resumed = cursor is not None
        position, pending, last = self._load_watch_cursor(cursor)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.setstate((pending, 0))
        tail = ""
        delay = interval
        while True:
            polled = self.poll(job_info, position)
            mapping = self.status_table[polled.code]
            finished = mapping.status.finished and not polled.more
            changed = bool(polled.output)
            if mapping.status != last and not mapping.status.finished:
                last, changed = mapping.status, True
                yield JobUpdate("status", status=mapping.status, cursor=self._watch_cursor(position, decoder, last))
            position = polled.cursor
            text = decoder.decode(polled.output, final=finished)
            if text:
                tail = (tail + text)[-self.reason_tail_chars :]
                yield JobUpdate("output", output=text, cursor=self._watch_cursor(position, decoder, last))
            if finished:
                reason = mapping.reason  # a success or cancel says what the table says (usually nothing)
                if mapping.status in (JobStatus.FAILED, JobStatus.NOT_FOUND):
                    reason = None
                    if resumed:  # this watcher did not see the start: the reason comes from the whole output
                        reason = self.get_failure_reason(job_info)
                    reason = reason or self.describe_failure(polled.code, polled.detail, tail)
                end = self._watch_cursor(position, decoder, last)
                yield JobUpdate("end", status=mapping.status, reason=reason, cursor=end)
                return
            if polled.more:
                continue
            delay = interval if changed else min(delay * 1.5, ceiling)
            time.sleep(delay)

    # helpers ---------------------------------------------------------------------------------------
    def require(self, job_info: Mapping[str, Any], *keys: str) -> None:
        missing = [k for k in keys if k not in job_info]
        if missing:
            raise ComputeError(self.id, f"job_info lacks {', '.join(missing)}: {dict(job_info)!r}")

    def byte_offset(self, cursor: Any) -> int:
        """``cursor`` as a byte offset (None: 0), for backends whose output is a file or an offset endpoint."""
        if cursor is None:
            return 0
        if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
            raise ComputeError(self.id, f"not an output offset: {cursor!r:.80}")
        return cursor

    def _read_output(self, job_info: Mapping[str, Any], keep: int | None = None) -> tuple[Poll, bytes]:
        """Poll from the start until no more output is waiting: the last poll and the output (its last
        ``keep`` bytes only, when given)."""
        polled = self.poll(job_info, None)
        data = polled.output
        while polled.more:
            polled = self.poll(job_info, polled.cursor)
            data = data + polled.output
            if keep is not None:
                data = data[-keep:]
        return polled, data if keep is None else data[-keep:]

    @staticmethod
    def _watch_cursor(position: Any, decoder: codecs.IncrementalDecoder, status: JobStatus | None) -> dict[str, Any]:
        pending = decoder.getstate()[0]
        return {"poll": position, "pending": pending.hex(), "status": None if status is None else status.value}

    def _load_watch_cursor(self, cursor: Any) -> tuple[Any, bytes, JobStatus | None]:
        if cursor is None:
            return None, b"", None
        try:
            if set(cursor) != {"poll", "pending", "status"}:
                raise ValueError("unexpected keys")
            pending = bytes.fromhex(cursor["pending"])
            if len(pending) > 3:  # an incomplete UTF-8 sequence is at most 3 bytes
                raise ValueError("too many pending bytes")
            status = None if cursor["status"] is None else JobStatus(cursor["status"])
        except (TypeError, ValueError, AttributeError) as exc:
            raise ComputeError(self.id, f"not a watch cursor ({exc}): {cursor!r:.120}") from None
        return cursor["poll"], pending, status
