"""An ended job's files are purged only after the commit that records its outcome.

The soak run's plugin_kill fault found the old order: the run loop applied a job's success (to be committed at
the end of the turn), purged the job's directory at once, and a plugin killed in between left ``jobInfo`` on
the branch naming a job that no longer existed; the resumed run failed it as "local compute: no job ...".
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from deepforge_adapters.compute import JobStatus, JobUpdate
from deepforge_plugins.engine import ExecutionRun, Running


class RecordingModel:
    """The part of ModelSession the run loop's commits use; records applies, commits and purges in order."""

    def __init__(self, events: list[tuple[str, Any]], fail_commit: bool = False) -> None:
        self.events = events
        self.fail_commit = fail_commit
        self._applied: list[str] = []

    @property
    def applied(self) -> list[str]:
        return list(self._applied)

    def apply(self, message: str, edit: Callable[[], object]) -> None:
        self._applied.append(message)

    def flush(self, message: str | None = None) -> None:
        if self.fail_commit:
            raise ConnectionError("the server went away")
        self.events.append(("commit", tuple(self._applied)))
        self._applied = []

    def change(self, message: str, edit: Callable[[], object]) -> None:
        self.events.append(("commit", (message,)))


class RecordingClient:
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events

    def get_console_output(self, job_info: dict[str, Any]) -> str:
        return "done\n"

    def purge_job(self, job_info: dict[str, Any]) -> None:
        self.events.append(("purge", job_info["hash"]))


def bare_run(model: RecordingModel) -> ExecutionRun:
    run = ExecutionRun.__new__(ExecutionRun)  # the loop's commit and purge state only: no plugin, no graph
    run.model = model  # type: ignore[assignment]
    run.scheduler = SimpleNamespace(finish=lambda path, state: None)  # type: ignore[assignment]
    run._batching = False
    run._batch_started = 0.0
    run._purges = []
    run._execution_name = "Execution"
    return run


def end_job(run: ExecutionRun, events: list[tuple[str, Any]]) -> None:
    job = SimpleNamespace(name="Train", path="/W/e/j", outputs=[])
    entry = Running(RecordingClient(events), {"hash": "ab" * 20}, [], thread=None)  # type: ignore[arg-type]
    run._ended(job, entry, JobUpdate("end", status=JobStatus.CANCELED))  # type: ignore[arg-type]


def test_a_job_ended_in_a_turn_is_purged_after_the_turns_commit() -> None:
    events: list[tuple[str, Any]] = []
    run = bare_run(RecordingModel(events))
    with run._commit_batch():
        end_job(run, events)
        assert events == []  # applied, not committed: the job's files must still be there
    assert events == [("commit", ("Train operation in Execution was canceled",)), ("purge", "ab" * 20)]


def test_a_turn_whose_commit_fails_purges_nothing() -> None:
    events: list[tuple[str, Any]] = []
    run = bare_run(RecordingModel(events, fail_commit=True))
    with pytest.raises(ConnectionError), run._commit_batch():
        end_job(run, events)
    assert events == []  # a resumed run finds the job from its jobInfo and records it then


def test_a_job_ended_outside_a_turn_is_purged_after_its_own_commit() -> None:
    events: list[tuple[str, Any]] = []
    run = bare_run(RecordingModel(events))
    end_job(run, events)
    assert events == [("commit", ("Train operation in Execution was canceled",)), ("purge", "ab" * 20)]
