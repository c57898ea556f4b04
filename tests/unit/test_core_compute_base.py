"""compute/base.py: statuses, status tables, and the default polling ``watch()`` every backend inherits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeClient, ComputeJob, JobStatus, JobUpdate, StatusMapping, StatusTable
from deepforge_adapters.config import ConfigSchema, Field
from deepforge_adapters.errors import ComputeError


def test_job_status_names_and_finished() -> None:
    assert [s.value for s in JobStatus] == [
        "queued",
        "pending",
        "running",
        "success",
        "failed",
        "canceled",
        "NOT_FOUND",
    ]
    assert {s for s in JobStatus if not s.finished} == {JobStatus.QUEUED, JobStatus.PENDING, JobStatus.RUNNING}
    assert str(JobStatus.SUCCESS) == "success"
    assert JobStatus("failed") is JobStatus.FAILED


def test_status_table_maps_codes_and_fails_loudly_on_unknown_ones() -> None:
    table = StatusTable(
        "gme",
        {
            "CREATED": StatusMapping(JobStatus.QUEUED),
            "FAILED_UNZIP": StatusMapping(JobStatus.FAILED, "the worker could not unzip the job files"),
        },
    )
    assert table["CREATED"] == StatusMapping(JobStatus.QUEUED)
    assert table["FAILED_UNZIP"].reason == "the worker could not unzip the job files"
    unknown = table["WEIRD"]
    assert unknown.status is JobStatus.FAILED
    assert unknown.reason == "gme: unknown job status 'WEIRD'"
    assert table.codes() == ["CREATED", "FAILED_UNZIP"]


class Scripted(ComputeClient):
    """A backend whose status and output follow a script, one step per poll."""

    id = "scripted"
    name = "Scripted"
    schema = ConfigSchema("scripted", (Field("token", is_auth=True),))
    status_table = StatusTable("scripted", {})
    poll_interval = 0.0

    def __init__(self, steps: list[tuple[JobStatus, str]], config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.steps = steps
        self.polls = 0

    def _step(self) -> tuple[JobStatus, str]:
        return self.steps[min(self.polls, len(self.steps) - 1)]

    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        return {"hash": job.hash or "h"}

    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        return None

    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus:
        return self._step()[0]

    def get_console_output(self, job_info: Mapping[str, Any]) -> str:
        output = self._step()[1]
        self.polls += 1  # status then output is one poll
        return output

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        return {}


def test_watch_yields_status_changes_new_output_in_order_then_end() -> None:
    client = Scripted(
        [
            (JobStatus.QUEUED, ""),
            (JobStatus.RUNNING, "epoch 1\n"),
            (JobStatus.RUNNING, "epoch 1\n"),
            (JobStatus.RUNNING, "epoch 1\nepoch 2\n"),
            (JobStatus.SUCCESS, "epoch 1\nepoch 2\ndone\n"),
        ]
    )
    updates = list(client.watch({"hash": "h"}))
    assert updates == [
        JobUpdate("status", status=JobStatus.QUEUED),
        JobUpdate("output", output="epoch 1\n"),
        JobUpdate("status", status=JobStatus.RUNNING),
        JobUpdate("output", output="epoch 2\n"),
        JobUpdate("output", output="done\n"),
        JobUpdate("end", status=JobStatus.SUCCESS, reason=None),
    ]
    assert "".join(u.output for u in updates) == "epoch 1\nepoch 2\ndone\n"


def test_watch_ends_a_failure_with_the_last_output_line_as_reason() -> None:
    client = Scripted([(JobStatus.RUNNING, "x\n"), (JobStatus.FAILED, "x\ninput 'data' (s3): HTTP 403\n\n")])
    updates = list(client.watch({"hash": "h"}, poll_interval=0))
    assert updates[-1] == JobUpdate("end", status=JobStatus.FAILED, reason="input 'data' (s3): HTTP 403")
    assert client.get_failure_reason({"hash": "h"}) == "input 'data' (s3): HTTP 403"
    assert Scripted([(JobStatus.FAILED, "")]).get_failure_reason({}) is None


def test_defaults_and_helpers() -> None:
    client = Scripted([(JobStatus.SUCCESS, "")], {"token": "s3cr3t-token"})
    assert client.start_job(ComputeJob(hash="abc")) == {"hash": "abc"}
    assert client.purge_job({"hash": "abc"}) is None
    assert "s3cr3t-token" not in repr(client)
    client.require({"hash": "abc", "secret": "x"}, "hash")
    with pytest.raises(ComputeError, match="scripted compute: job_info lacks hash, node"):
        client.require({"other": 1}, "hash", "node")


def test_compute_job_defaults() -> None:
    job = ComputeJob()
    assert job.bundle is None and job.hash is None
    assert job.name == "deepforge job"
    assert job.labels == ()
    assert dict(job.meta) == {}
