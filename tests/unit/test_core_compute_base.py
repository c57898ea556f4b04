"""compute/base.py: statuses, status tables, and the ``watch()`` every backend inherits, over its ``poll()``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from deepforge_adapters.compute import (
    ComputeClient,
    ComputeJob,
    JobStatus,
    JobUpdate,
    Poll,
    StatusMapping,
    StatusTable,
)
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
    """A backend whose status code and output follow a script, one step per poll; the cursor is a byte offset.

    Each step is (code, the whole output so far as bytes); the status table maps the codes.
    """

    id = "scripted"
    name = "Scripted"
    schema = ConfigSchema("scripted", (Field("token", is_auth=True),))
    status_table = StatusTable(
        "scripted",
        {
            "Q": StatusMapping(JobStatus.QUEUED),
            "R": StatusMapping(JobStatus.RUNNING),
            "OK": StatusMapping(JobStatus.SUCCESS),
            "X": StatusMapping(JobStatus.FAILED, "the job failed"),
            "C": StatusMapping(JobStatus.CANCELED, "canceled by the user"),
        },
    )
    poll_interval = 0.0
    max_poll_interval = 0.0

    def __init__(self, steps: list[tuple[str, bytes]], config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.steps = steps
        self.polls = 0

    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        return {"hash": job.hash or "h"}

    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        return None

    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        code, output = self.steps[min(self.polls, len(self.steps) - 1)]
        self.polls += 1
        offset = self.byte_offset(cursor)
        return Poll(code, output[offset:], len(output), detail=None)

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        return {}


def test_watch_yields_status_changes_then_new_output_in_order_then_end() -> None:
    client = Scripted(
        [
            ("Q", b""),
            ("R", b"epoch 1\n"),
            ("R", b"epoch 1\n"),
            ("R", b"epoch 1\nepoch 2\n"),
            ("OK", b"epoch 1\nepoch 2\ndone\n"),
        ]
    )
    updates = list(client.watch({"hash": "h"}))
    assert updates == [
        JobUpdate("status", status=JobStatus.QUEUED),
        JobUpdate("status", status=JobStatus.RUNNING),
        JobUpdate("output", output="epoch 1\n"),
        JobUpdate("output", output="epoch 2\n"),
        JobUpdate("output", output="done\n"),
        JobUpdate("end", status=JobStatus.SUCCESS, reason=None),
    ]
    assert "".join(u.output for u in updates) == "epoch 1\nepoch 2\ndone\n"
    assert Scripted([("OK", b"all\n")]).get_console_output({}) == "all\n"
    assert Scripted([("R", b"")]).get_status({}) == JobStatus.RUNNING


def test_a_character_split_across_polls_comes_out_whole() -> None:
    text = "ü€😀 end\n".encode()
    steps = [("R", text[: i + 1]) for i in range(len(text))] + [("OK", text)]
    updates = list(Scripted(steps).watch({}))
    outputs = [u.output for u in updates if u.kind == "output"]
    assert "".join(outputs) == "ü€😀 end\n"
    assert all("\ufffd" not in o for o in outputs)


def test_watch_ends_a_failure_with_the_table_sentence_and_the_last_output_line() -> None:
    client = Scripted([("R", b"x\n"), ("X", b"x\ninput 'data' (s3): HTTP 403\n\n")])
    updates = list(client.watch({"hash": "h"}, poll_interval=0))
    expected = "the job failed: input 'data' (s3): HTTP 403"
    assert updates[-1] == JobUpdate("end", status=JobStatus.FAILED, reason=expected)
    assert client.get_failure_reason({"hash": "h"}) == expected
    assert Scripted([("X", b"")]).get_failure_reason({}) == "the job failed"
    assert Scripted([("OK", b"fine\n")]).get_failure_reason({}) is None
    unknown = list(Scripted([("WEIRD", b"")]).watch({}))
    assert unknown == [JobUpdate("end", status=JobStatus.FAILED, reason="scripted: unknown job status 'WEIRD'")]
    canceled = list(Scripted([("C", b"")]).watch({}))
    assert canceled == [JobUpdate("end", status=JobStatus.CANCELED, reason="canceled by the user")]


def test_a_watch_resumed_from_a_cursor_goes_on_without_repeating() -> None:
    text = "one\ntwo ü\nthree\n".encode()
    split = text.index("ü".encode()) + 1  # the first poll stops inside the ü
    steps = [("Q", b""), ("R", text[:split]), ("R", text[:split]), ("OK", text)]
    first = Scripted(steps).watch({})
    seen = []
    for update in first:
        seen.append(update)
        if update.kind == "output":
            break
    first.close()
    cursor = json.loads(json.dumps(seen[-1].cursor))  # stored in a model and read back
    again = Scripted(steps[2:])
    rest = list(again.watch({}, cursor=cursor))
    assert [u.kind for u in rest] == ["output", "end"]  # running was already seen: no status repeated
    assert "".join(u.output for u in seen + rest) == text.decode()
    assert rest[-1] == JobUpdate("end", status=JobStatus.SUCCESS)
    whole = list(Scripted(steps).watch({}))
    assert [u for u in whole if u.kind != "output"] == [u for u in seen + rest if u.kind != "output"]


def test_a_capped_poll_is_followed_at_once_and_the_job_does_not_end_early() -> None:
    class Capped(Scripted):
        def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
            offset = self.byte_offset(cursor)
            data = b"abcdefgh"[offset : offset + 3]
            return Poll("OK", data, offset + len(data), more=offset + len(data) < 8)

    updates = list(Capped([]).watch({}))
    assert "".join(u.output for u in updates) == "abcdefgh" and updates[-1].kind == "end"
    assert Capped([]).get_console_output({}) == "abcdefgh"


def test_polls_back_off_while_nothing_changes_and_speed_up_when_something_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr("deepforge_adapters.compute.base.time.sleep", slept.append)
    steps = [("Q", b""), ("Q", b""), ("Q", b""), ("Q", b""), ("R", b""), ("R", b"x"), ("R", b"x"), ("OK", b"x")]
    client = Scripted(steps)
    client.poll_interval, client.max_poll_interval = 1.0, 2.0
    list(client.watch({}))
    assert slept == [1.0, 1.5, 2.0, 2.0, 1.0, 1.0, 1.5]


@pytest.mark.parametrize(
    "cursor", [{"poll": 0}, {"poll": 0, "pending": "zz", "status": None}, {"poll": 0, "pending": "", "status": "x"}, 7]
)
def test_a_cursor_that_watch_did_not_make_is_refused(cursor: Any) -> None:
    with pytest.raises(ComputeError, match="not a watch cursor"):
        list(Scripted([("OK", b"")]).watch({}, cursor=cursor))
    with pytest.raises(ComputeError, match="not an output offset"):
        Scripted([("OK", b"")]).poll({}, -1)


def test_defaults_and_helpers() -> None:
    client = Scripted([("OK", b"")], {"token": "s3cr3t-token"})
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
