"""The ``gme`` compute backend against fakes of the executor/blob CLIENT objects (unit level).

The real-server behaviour is covered in tests/integration/test_worker_*.py; here: the status table, the
refusals of ``start_job``, ``watch`` ordering from output #0, resuming after live output was cleared, and
that secrets stay out of errors and reprs.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.compute import gme as gme_module
from deepforge_adapters.compute.gme import STATUS_TABLE, GmeCompute
from deepforge_adapters.errors import ComputeError, NotFoundError, WebGMEError
from deepforge_adapters.webgme.executor import FINISHED_STATUSES

#: Every executor status: JobInfo.finishedStatuses (as the webgme client lists them) plus the two live ones.
ALL_CODES = sorted(FINISHED_STATUSES | {"CREATED", "RUNNING"})

#: A job id as the executor spells one (40 lowercase hex); anything else is refused before a request.
BUNDLE = "b0" * 20


class FakeExecutor:
    def __init__(self) -> None:
        self.workers: dict[str, Any] = {"h_1": {"clientId": "h_1", "labels": ["gpu"]}}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.outputs: dict[str, list[dict[str, Any]]] = {}
        self.script: list[dict[str, Any]] = []  # successive get_info answers
        self.canceled: list[tuple[str, str]] = []

    def get_workers(self) -> dict[str, Any]:
        return self.workers

    def create_job(self, job_hash: str, labels: Any = ()) -> dict[str, Any]:
        self.jobs[job_hash] = {"hash": job_hash, "status": "CREATED", "labels": list(labels), "secret": "s3cret"}
        return dict(self.jobs[job_hash])

    def get_info(self, job_hash: str) -> dict[str, Any]:
        if self.script:
            self.jobs[job_hash] = self.script.pop(0)
        if job_hash not in self.jobs:
            raise WebGMEError("not found", 404)
        return {k: v for k, v in self.jobs[job_hash].items() if k != "secret"}

    def get_output(self, job_hash: str, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        chunks = self.outputs.get(job_hash, [])
        return [
            c
            for c in chunks
            if (start is None or c["outputNumber"] >= start) and (end is None or c["outputNumber"] < end)
        ]

    def cancel_job(self, job_hash: str, secret: str) -> None:
        self.canceled.append((job_hash, secret))


class FakeBlob:
    def __init__(self) -> None:
        self.metadata_store: dict[str, dict[str, Any]] = {BUNDLE: {"name": "b.zip", "contentType": "complex"}}
        self.content: dict[str, bytes] = {}

    def metadata(self, h: str) -> dict[str, Any]:
        if h not in self.metadata_store:
            raise NotFoundError("gme", "no such blob", h)
        return self.metadata_store[h]

    @contextlib.contextmanager
    def open(self, h: str, subpath: str | None = None, view: bool = False) -> Iterator[io.BytesIO]:
        yield io.BytesIO(self.content[h])

    def add_artifact(self, artifact: str, filename: str, data: bytes) -> None:
        self.content[f"{artifact}-file"] = data
        self.metadata_store[artifact] = {
            "content": {filename: {"content": f"{artifact}-file", "contentType": "softLink"}},
            "contentType": "complex",
        }


@pytest.fixture
def compute() -> GmeCompute:
    client = get_client("gme", {"host": "http://example:1/", "apiToken": "tok-SECRET", "labels": "gpu"})
    assert isinstance(client, GmeCompute)
    client.executor = FakeExecutor()  # type: ignore[method-assign]
    client.blob = FakeBlob()  # type: ignore[method-assign]
    return client


def test_status_table_covers_every_executor_code() -> None:
    for code in ALL_CODES:
        mapping = STATUS_TABLE[code]
        if code.startswith("FAILED_"):
            assert mapping.status == JobStatus.FAILED and mapping.reason, code
    assert STATUS_TABLE["CREATED"].status == JobStatus.QUEUED
    assert STATUS_TABLE["RUNNING"].status == JobStatus.RUNNING
    assert STATUS_TABLE["SUCCESS"].status == JobStatus.SUCCESS
    assert STATUS_TABLE["CANCELED"].status == JobStatus.CANCELED
    assert STATUS_TABLE["SOMETHING_NEW"].status == JobStatus.FAILED
    assert sorted(STATUS_TABLE.codes()) == sorted(ALL_CODES)


def test_config_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPFORGE_HOST", raising=False)
    monkeypatch.delenv("DEEPFORGE_GME_HOST", raising=False)
    assert GmeCompute().host == "http://127.0.0.1:8888"
    monkeypatch.setenv("DEEPFORGE_HOST", "http://elsewhere:9")
    assert GmeCompute().host == "http://elsewhere:9"
    names = {f["name"]: f for f in GmeCompute.schema.to_config_structure()}
    assert names["apiToken"]["isAuth"] and names["webgmeToken"]["isAuth"] and names["nonce"]["isAuth"]
    assert GmeCompute.name == "WebGME Executor"


def test_start_job_keeps_the_secret_and_labels(compute: GmeCompute) -> None:
    info = compute.start_job(ComputeJob(hash=BUNDLE, name="train"))
    assert info["hash"] == BUNDLE and info["secret"] == "s3cret" and info["labels"] == ["gpu"]
    json.dumps(info)
    compute.cancel_job(info)
    assert compute.executor.canceled == [(BUNDLE, "s3cret")]


def test_start_job_refusals(compute: GmeCompute) -> None:
    compute.worker_wait = 0  # refuse at once (what waiting looks like: the test below)
    with pytest.raises(ComputeError, match="hash is required"):
        compute.start_job(ComputeJob())
    with pytest.raises(ComputeError, match="not in the blob"):
        compute.start_job(ComputeJob(hash="0" * 40))
    with pytest.raises(ComputeError, match=r"labels \['gpu', 'tpu'\]"):
        compute.start_job(ComputeJob(hash=BUNDLE, labels=("tpu",)))
    compute.executor.workers = {}
    with pytest.raises(ComputeError, match="no worker is connected") as exc:
        compute.start_job(ComputeJob(hash=BUNDLE))
    assert "SECRET" not in str(exc.value) and "SECRET" not in repr(compute)


def test_a_submit_waits_for_a_worker_that_reconnects(compute: GmeCompute, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker restarted after a crash (or a restarted server) lists no worker until its next poll: the
    1,000-job soak run failed a job so.  The submit waits for one (here the second list has it)."""
    workers, compute.executor.workers = compute.executor.workers, {}
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the next poll of the worker comes while we wait
        slept.append(seconds)
        compute.executor.workers = workers

    monkeypatch.setattr(gme_module.time, "sleep", sleep)
    info = compute.start_job(ComputeJob(hash=BUNDLE))
    assert info["hash"] == BUNDLE and slept == [gme_module.WORKER_POLL_SECONDS]


def test_a_job_hash_that_is_not_40_hex_is_refused_before_any_request(compute: GmeCompute) -> None:
    for bad in ("/tmp/victim", "..", BUNDLE.upper(), BUNDLE + "/x"):
        with pytest.raises(ComputeError, match="40 lowercase hex"):
            compute.start_job(ComputeJob(hash=bad))
        with pytest.raises(ComputeError, match="40 lowercase hex"):
            compute.get_status({"hash": bad})
    assert compute.executor.canceled == []


def test_cancel_without_secret_is_a_clear_error(compute: GmeCompute) -> None:
    with pytest.raises(ComputeError, match="no cancel secret"):
        compute.cancel_job({"hash": BUNDLE, "secret": None})


def test_watch_streams_from_output_zero_and_ends(compute: GmeCompute) -> None:
    ex = compute.executor
    ex.outputs[BUNDLE] = [
        {"outputNumber": 0, "output": "zero\n"},
        {"outputNumber": 1, "output": "one\n"},
        {"outputNumber": 2, "output": "two\n"},
    ]
    compute.blob.add_artifact("stdout-art", "job_stdout.txt", b"zero\none\ntwo\n")
    ex.script = [
        {"hash": BUNDLE, "status": "CREATED", "outputNumber": None},
        {"hash": BUNDLE, "status": "RUNNING", "outputNumber": 0},
        {"hash": BUNDLE, "status": "RUNNING", "outputNumber": 1},
        {"hash": BUNDLE, "status": "SUCCESS", "outputNumber": 2, "resultHashes": {"stdout": "stdout-art"}},
    ]
    updates = list(compute.watch({"hash": BUNDLE}, poll_interval=0))
    kinds = [(u.kind, u.status, u.output) for u in updates]
    assert kinds == [
        ("status", JobStatus.QUEUED, ""),
        ("status", JobStatus.RUNNING, ""),
        ("output", None, "zero\n"),
        ("output", None, "one\n"),
        ("output", None, "two\n"),
        ("end", JobStatus.SUCCESS, ""),
    ]


def test_resumed_watch_after_output_was_cleared_reads_the_archive(compute: GmeCompute) -> None:
    compute.blob.add_artifact("stdout-art", "job_stdout.txt", b"all\nof it\nValueError: bad input\n")
    compute.executor.jobs[BUNDLE] = {
        "hash": BUNDLE,
        "status": "FAILED_TO_EXECUTE",
        "outputNumber": None,
        "resultHashes": {"stdout": "stdout-art"},
    }
    updates = list(compute.watch({"hash": BUNDLE}, poll_interval=0))
    assert [u.kind for u in updates] == ["output", "end"]
    assert updates[0].output == "all\nof it\nValueError: bad input\n"
    assert updates[1].status == JobStatus.FAILED
    assert updates[1].reason and "ValueError: bad input" in updates[1].reason


def test_worker_failure_reason_is_readable(compute: GmeCompute) -> None:
    compute.blob.add_artifact("so", "job_stdout.txt", b"\n[deepforge-worker] FAILED_UNZIP: member '../x' escapes\n")
    compute.executor.jobs[BUNDLE] = {"hash": BUNDLE, "status": "FAILED_UNZIP", "resultHashes": {"stdout": "so"}}
    reason = compute.get_failure_reason({"hash": BUNDLE})
    assert reason and "unpack" in reason and "'../x' escapes" in reason


def test_results_info_and_missing_job(compute: GmeCompute) -> None:
    compute.blob.add_artifact("res", "results.json", b'{"model": {"type": "int", "dataInfo": {"backend": "gme"}}}')
    compute.executor.jobs[BUNDLE] = {"hash": BUNDLE, "status": "SUCCESS", "resultHashes": {"results": "res"}}
    assert compute.get_results_info({"hash": BUNDLE})["model"]["type"] == "int"
    assert compute.get_status({"hash": "f" * 40}) == JobStatus.NOT_FOUND
    with pytest.raises(ComputeError, match="not known"):
        compute.get_results_info({"hash": "f" * 40})
    updates = list(compute.watch({"hash": "f" * 40}, poll_interval=0))
    assert updates[-1].status == JobStatus.NOT_FOUND
