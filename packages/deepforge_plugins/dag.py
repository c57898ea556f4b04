"""The pipeline scheduler: which jobs may start now, and when the run is over.

Pure bookkeeping, no I/O, so the rules are unit-tested without a server: a job is *ready* when every job it
takes input from has succeeded; after a failure or a cancel request nothing new starts, but jobs already
running are left to finish (or to be canceled) before the run ends; the run's outcome is ``failed`` if any
job failed, else ``canceled`` if a cancel was requested or a job was canceled, else ``success``.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from .status import ModelStatus


class JobState(StrEnum):
    """A job's state in the scheduler: the model's statuses that matter to it (their strings are the model's)."""

    PENDING = ModelStatus.PENDING.value
    RUNNING = ModelStatus.RUNNING.value
    SUCCESS = ModelStatus.SUCCESS.value
    FAILED = ModelStatus.FAILED.value
    CANCELED = ModelStatus.CANCELED.value

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCESS, JobState.FAILED, JobState.CANCELED)


class CycleError(ValueError):
    """The connections form a cycle; a pipeline must be a DAG."""


class Scheduler:
    """Job states of one execution plus the dependency edges ``(upstream, downstream)`` between jobs."""

    def __init__(self, jobs: Iterable[str], edges: Iterable[tuple[str, str]]) -> None:
        self.state: dict[str, JobState] = {job: JobState.PENDING for job in jobs}
        self.upstream: dict[str, set[str]] = {job: set() for job in self.state}
        for src, dst in edges:
            for job in (src, dst):
                if job not in self.state:
                    raise KeyError(f"connection names unknown job {job!r}")
            if src != dst:
                self.upstream[dst].add(src)
            else:
                raise CycleError(f"job {src!r} is connected to itself")
        self.cancel_requested = False
        self._check_acyclic()

    def _check_acyclic(self) -> None:
        remaining = {job: set(ups) for job, ups in self.upstream.items()}
        while remaining:
            free = [job for job, ups in remaining.items() if not ups]
            if not free:
                raise CycleError(f"the connections between {', '.join(sorted(remaining))} form a cycle")
            for job in free:
                del remaining[job]
            for ups in remaining.values():
                ups.difference_update(free)

    # ------------------------------------------------------------------------------------------ queries
    @property
    def stopping(self) -> bool:
        """True once nothing new may start: a job failed or was canceled, or a cancel was requested."""
        return self.cancel_requested or any(s in (JobState.FAILED, JobState.CANCELED) for s in self.state.values())

    def ready(self) -> list[str]:
        """Pending jobs whose inputs have all arrived, in a stable order (empty while stopping)."""
        if self.stopping:
            return []
        return sorted(
            job
            for job, state in self.state.items()
            if state == JobState.PENDING and all(self.state[u] == JobState.SUCCESS for u in self.upstream[job])
        )

    def running(self) -> list[str]:
        return sorted(job for job, state in self.state.items() if state == JobState.RUNNING)

    def downstream(self, job: str) -> list[str]:
        return sorted(d for d, ups in self.upstream.items() if job in ups)

    @property
    def finished(self) -> bool:
        """Nothing is running and nothing more will start."""
        return not self.running() and not self.ready()

    def outcome(self) -> JobState:
        """The execution's final status; only meaningful once :attr:`finished`."""
        states = set(self.state.values())
        if JobState.FAILED in states:
            return JobState.FAILED
        if self.cancel_requested or JobState.CANCELED in states or JobState.PENDING in states:
            return JobState.CANCELED
        return JobState.SUCCESS

    # ---------------------------------------------------------------------------------------- transitions
    def start(self, job: str) -> None:
        if self.state[job] != JobState.PENDING:
            raise ValueError(f"job {job!r} cannot start: it is {self.state[job]}")
        self.state[job] = JobState.RUNNING

    def finish(self, job: str, state: JobState) -> None:
        """Record the end of a running job (or, when resuming, of one that ended while nobody watched)."""
        if not state.finished:
            raise ValueError(f"{state} is not a final state")
        if self.state[job].finished:
            raise ValueError(f"job {job!r} already ended as {self.state[job]}")
        self.state[job] = state

    def request_cancel(self) -> None:
        self.cancel_requested = True
