"""One job end to end against fakes of the executor/blob CLIENT objects, and the daemon loop around it.

Processes are real (``sys.executable``); only the HTTP clients are faked.  The same scenarios against the
real WebGME server are in tests/integration/test_worker_*.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.errors import NotFoundError, WebGMEError
from deepforge_worker import execution as execution_module
from deepforge_worker.context import JobContext
from deepforge_worker.daemon import Worker
from deepforge_worker.execution import JobExecution
from deepforge_worker.orphans import reap_orphaned_jobs, record_process_group
from deepforge_worker.reports import replay_pending_reports
from deepforge_worker.settings import load_settings
from deepforge_worker.slots import Slot

from tests.fixtures.jobs import pid_gone
from tests.fixtures.waiting import make_zip, wait_for
from tests.fixtures.worker import STUBBORN_JOB


def bundle(code: str, artifacts: list[dict[str, Any]] | None = None, **extra: Any) -> bytes:
    config = {
        "cmd": sys.executable,
        "args": ["-u", "-c", code],
        "outputInterval": 20,
        "resultArtifacts": artifacts
        if artifacts is not None
        else [{"name": "stdout", "resultPatterns": ["job_stdout.txt"]}],
        **extra,
    }
    return make_zip({"executor_config.json": json.dumps(config), "data/in.txt": "payload"})


class FakeBlob:
    def __init__(self) -> None:
        self.bundles: dict[str, bytes] = {}
        self.files: dict[str, tuple[str, bytes]] = {}
        self.artifacts: dict[str, dict[str, str]] = {}

    def add_bundle(self, data: bytes) -> str:
        h = hashlib.sha1(data).hexdigest()
        self.bundles[h] = data
        return h

    def metadata(self, h: str) -> dict[str, Any]:
        if h not in self.bundles:
            raise NotFoundError("gme", "404", h)
        return {"name": "bundle.zip", "contentType": "complex"}

    @contextlib.contextmanager
    def open(self, h: str, subpath: str | None = None, view: bool = False) -> Iterator[io.BytesIO]:
        self.metadata(h)  # as the real client: metadata first, NotFoundError for a missing blob
        yield io.BytesIO(self.bundles[h])

    def create_file(self, name: str, readable: Any, size: int | None = None, progress: Any = None) -> tuple[str, dict]:
        data = readable.read()
        h = hashlib.sha1(name.encode() + data).hexdigest()
        self.files[h] = (name, data)
        return h, {"name": name}

    def create_artifact(self, name: str, entries: dict[str, str], sizes: dict[str, int] | None = None) -> str:
        h = hashlib.sha1(json.dumps([name, entries], sort_keys=True).encode()).hexdigest()
        self.artifacts[h] = dict(entries)
        return h

    def artifact_files(self, h: str) -> dict[str, bytes]:
        return {rel: self.files[fh][1] for rel, fh in self.artifacts[h].items()}


class FakeExecutor:
    def __init__(self, client_id: str = "me_1") -> None:
        self.client_id = client_id
        self.jobs: dict[str, dict[str, Any]] = {}
        self.outputs: list[tuple[str, int, str]] = []
        self.updates: list[tuple[str, dict[str, Any]]] = []
        self.polls: list[dict[str, Any]] = []
        self.to_start: list[str] = []
        self.to_cancel: list[str] = []
        self.fail_polls = 0
        #: Raised by the next polls, one each, before ``fail_polls`` is looked at.
        self.poll_errors: list[Exception] = []
        self.label_jobs: dict[str, str] = {}
        self.lose_answers = False
        self.lock = threading.Lock()

    def get_info(self, h: str) -> dict[str, Any]:
        return dict(self.jobs.get(h, {"hash": h, "status": "RUNNING", "worker": self.client_id}))

    def post_output(self, h: str, n: int, text: str) -> None:
        with self.lock:
            self.outputs.append((h, n, text))

    def update_job(self, h: str, info: dict[str, Any]) -> None:
        with self.lock:
            self.updates.append((h, dict(info)))
            self.jobs[h] = {**self.jobs.get(h, {}), **info}

    def list_jobs(self, status: str | None = None) -> dict[str, Any]:
        with self.lock:
            return {h: dict(j) for h, j in self.jobs.items() if status is None or j.get("status") == status}

    def poll_worker(self, client_id: str, available: int, labels: Any, running: Any) -> dict[str, Any]:
        with self.lock:
            self.polls.append(
                {
                    "clientId": client_id,
                    "availableProcesses": available,
                    "labels": list(labels),
                    "runningJobs": list(running),
                }
            )
            if self.poll_errors:
                raise self.poll_errors.pop(0)
            if self.fail_polls:
                self.fail_polls -= 1
                if self.to_start and self.lose_answers:  # the server claimed, the answer never arrived
                    h = self.to_start.pop(0)
                    self.jobs[h] = {"hash": h, "status": "RUNNING", "worker": client_id}
                raise ConnectionError("connection refused")
            start = self.to_start[:available]
            del self.to_start[: len(start)]
            for h in start:
                self.jobs[h] = {"hash": h, "status": "RUNNING", "worker": client_id}
            cancel = [h for h in self.to_cancel if h in running]
            return {"jobsToStart": start, "jobsToCancel": cancel, "refreshPeriod": 50, "labelJobs": self.label_jobs}


@pytest.fixture
def ctx(tmp_path: Path) -> JobContext:
    return JobContext(
        executor=FakeExecutor(),
        blob=FakeBlob(),
        client_id="me_1",
        host="http://server:1",
        work_dir=tmp_path / "jobs",
        cache_dir=tmp_path / "cache",
        cancel_grace=1.0,
        max_bundle_bytes=10_000_000,
        report_retry_for=5.0,
    )


def run_job(ctx: JobContext, data: bytes, slot: Slot | None = None) -> tuple[JobExecution, dict[str, Any]]:
    h = ctx.blob.add_bundle(data)
    job = JobExecution(ctx, {"hash": h}, slot or Slot(0, ("3",)))
    job.run()
    updates = [u for jh, u in ctx.executor.updates if jh == h]
    assert len(updates) == 1, "exactly one final update"
    return job, updates[0]


def live_output(ctx: JobContext, h: str) -> str:
    numbers = [n for jh, n, _ in ctx.executor.outputs if jh == h]
    assert numbers == list(range(len(numbers))), "chunks numbered from 0, in order"
    return "".join(t for jh, _, t in ctx.executor.outputs if jh == h)


ENV_CODE = (
    "import os, sys\n"
    "print('out', os.environ['CUDA_VISIBLE_DEVICES'], os.environ['DEEPFORGE_WORKER_CACHE'], os.environ['ORIGIN_URL'])\n"
    "print('err line', file=sys.stderr)\n"
    "open('result.txt', 'w').write('42')\n"
)


def test_generic_bundle_to_success(ctx: JobContext) -> None:
    artifacts = [
        {"name": "stdout", "resultPatterns": ["job_stdout.txt"]},
        {"name": "txt", "resultPatterns": ["*.txt"]},
        {"name": "everything", "resultPatterns": []},
    ]
    job, update = run_job(ctx, bundle(ENV_CODE, artifacts))
    assert update["status"] == "SUCCESS", update
    assert update["worker"] == "me_1" and update["startTime"] and update["finishTime"]
    assert set(update["resultHashes"]) == {"stdout", "txt", "everything"}
    stdout = ctx.blob.artifact_files(update["resultHashes"]["stdout"])["job_stdout.txt"].decode()
    assert f"out 3 {ctx.cache_dir} http://server:1" in stdout
    # stderr as the Node worker keeps it: in job_stderr.txt only, never in job_stdout.txt or the live output
    assert "err line" not in stdout
    assert live_output(ctx, job.hash) == stdout
    assert update["outputNumber"] == len([o for o in ctx.executor.outputs if o[0] == job.hash]) - 1
    txt = ctx.blob.artifact_files(update["resultHashes"]["txt"])
    assert sorted(txt) == ["job_stderr.txt", "job_stdout.txt", "result.txt"]
    assert txt["job_stderr.txt"] == b"err line\n"
    everything = ctx.blob.artifact_files(update["resultHashes"]["everything"])
    assert sorted(everything) == [
        "data/in.txt",
        "executor_config.json",
        "job_stderr.txt",
        "job_stdout.txt",
        "result.txt",
    ]
    assert not job.job_dir.exists(), "job dir removed after reporting"


def test_failing_command(ctx: JobContext) -> None:
    job, update = run_job(ctx, bundle("import sys; print('ValueError: nope'); sys.exit(3)"))
    assert update["status"] == "FAILED_TO_EXECUTE"
    text = live_output(ctx, job.hash)
    assert "ValueError: nope" in text and "exit code 3" in text
    assert "stdout" in update["resultHashes"]


def test_missing_command(ctx: JobContext) -> None:
    data = make_zip({"executor_config.json": json.dumps({"cmd": "no-such-cmd-xyz", "resultArtifacts": []})})
    job, update = run_job(ctx, data)
    assert update["status"] == "FAILED_TO_EXECUTE"
    assert "no-such-cmd-xyz" in live_output(ctx, job.hash)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"args": [], "resultArtifacts": []}), "'cmd'"),
        (json.dumps({"cmd": "x", "resultArtifacts": {"a": 1}}), "resultArtifacts"),
        (json.dumps({"cmd": "x", "resultArtifacts": [{"resultPatterns": []}]}), "resultArtifacts[0]"),
        (json.dumps({"cmd": "x", "resultArtifacts": [], "outputInterval": "1s"}), "outputInterval"),
        (json.dumps(["cmd"]), "JSON object"),
    ],
)
def test_malformed_executor_config(ctx: JobContext, config: str, needle: str) -> None:
    job, update = run_job(ctx, make_zip({"executor_config.json": config}))
    assert update["status"] == "FAILED_EXECUTOR_CONFIG"
    text = live_output(ctx, job.hash)
    assert needle in text
    archived = ctx.blob.artifact_files(update["resultHashes"]["stdout"])["job_stdout.txt"].decode()
    assert needle in archived


def test_missing_executor_config(ctx: JobContext) -> None:
    _job, update = run_job(ctx, make_zip({"main.py": "print(1)"}))
    assert update["status"] == "FAILED_EXECUTOR_CONFIG"


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/path.txt", "a/../../b.txt"])
def test_zip_slip_is_refused(ctx: JobContext, tmp_path: Path, name: str) -> None:
    job, update = run_job(ctx, make_zip({"executor_config.json": "{}", name: "owned"}))
    assert update["status"] == "FAILED_UNZIP"
    assert name.split("/")[-1].split(".")[0] in live_output(ctx, job.hash)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "b.txt").exists()


def test_zip_bomb_is_refused(ctx: JobContext) -> None:
    ctx.max_bundle_bytes = 1000
    _job, update = run_job(ctx, make_zip({"executor_config.json": "{}", "big.bin": b"\0" * 100_000}))
    assert update["status"] == "FAILED_UNZIP"


def test_not_a_zip(ctx: JobContext) -> None:
    _job, update = run_job(ctx, b"definitely not a zip")
    assert update["status"] == "FAILED_UNZIP"


def test_missing_bundle(ctx: JobContext) -> None:
    job = JobExecution(ctx, {"hash": "0" * 40}, Slot(0))
    job.run()
    assert ctx.executor.updates[-1][1]["status"] == "FAILED_TO_GET_SOURCE_METADATA"


class BreakingBlob(FakeBlob):
    """The first ``breaks`` downloads of a bundle break midway, as a reset connection does (the zip is built
    on the fly: what was read cannot be resumed)."""

    def __init__(self, breaks: int) -> None:
        super().__init__()
        self.breaks, self.opens = breaks, 0

    @contextlib.contextmanager
    def open(self, h: str, subpath: str | None = None, view: bool = False) -> Iterator[io.BytesIO]:
        self.opens += 1
        if self.opens <= self.breaks:
            raise WebGMEError(f"blob download {h}: connection broke after 1341 bytes; download it again")
        with super().open(h, subpath, view) as f:
            yield f


@pytest.mark.parametrize(("breaks", "status"), [(2, "SUCCESS"), (3, "FAILED_CREATING_SOURCE_ZIP")])
def test_a_bundle_download_cut_off_is_done_again(
    ctx: JobContext, monkeypatch: pytest.MonkeyPatch, breaks: int, status: str
) -> None:
    """The 1,000-job soak run failed a job whose bundle download a proxy reset cut off: it is tried again,
    3 times in all."""
    monkeypatch.setattr(execution_module, "SOURCE_DOWNLOAD_BACKOFF", 0.0)
    ctx.blob = BreakingBlob(breaks)
    _job, update = run_job(ctx, bundle("print('ran')"))
    assert update["status"] == status, update
    assert ctx.blob.opens == 3


def test_cancel_kills_the_whole_group(ctx: JobContext) -> None:
    h = ctx.blob.add_bundle(bundle(STUBBORN_JOB))
    job = JobExecution(ctx, {"hash": h}, Slot(0))
    thread = threading.Thread(target=job.run)
    thread.start()
    pids_file = job.job_dir / "pids"
    wait_for(lambda: pids_file.exists() and pids_file.read_text(), 30, "the job to start")
    pids = [int(p) for p in pids_file.read_text().split()]
    job.cancel()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert ctx.executor.updates[-1][1]["status"] == "CANCELED"
    wait_for(lambda: all(pid_gone(p) for p in pids), 10, "every process of the canceled job to be gone")


def test_late_report_for_a_reassigned_job_is_dropped(ctx: JobContext, caplog: pytest.LogCaptureFixture) -> None:
    data = bundle("print('hi')")
    h = hashlib.sha1(data).hexdigest()
    ctx.executor.jobs[h] = {"hash": h, "status": "RUNNING", "worker": "other_2"}
    job = JobExecution(ctx, {"hash": h}, Slot(0))
    ctx.blob.add_bundle(data)
    with caplog.at_level(logging.WARNING):
        job.run()
    assert ctx.executor.updates == [] and not job.reported
    assert "other_2" in caplog.text


def test_pending_report_is_replayed(ctx: JobContext) -> None:
    ctx.work_dir.mkdir(parents=True)
    (ctx.work_dir / f"{'a' * 40}.report.json").write_text(
        json.dumps({"clientId": "me_0", "info": {"hash": "a" * 40, "status": "SUCCESS"}})
    )
    ctx.executor.jobs["a" * 40] = {"hash": "a" * 40, "status": "RUNNING", "worker": "me_0"}
    (ctx.work_dir / f"{'b' * 40}.report.json").write_text(
        json.dumps({"clientId": "me_0", "info": {"hash": "b" * 40, "status": "SUCCESS"}})
    )
    ctx.executor.jobs["b" * 40] = {"hash": "b" * 40, "status": "RUNNING", "worker": "someone_else"}
    assert replay_pending_reports(ctx) == 1
    assert [h for h, _ in ctx.executor.updates] == ["a" * 40]
    assert ctx.executor.updates[0][1]["worker"] == "me_1"
    assert not list(ctx.work_dir.glob("*.report.json"))


# --- the daemon ----------------------------------------------------------------------------------------


def make_worker(tmp_path: Path, executor: FakeExecutor, blob: FakeBlob, **cli: Any) -> Worker:
    settings = load_settings(
        {"workDir": str(tmp_path / "jobs"), "cacheDir": str(tmp_path / "cache"), "cancelGrace": 1, **cli},
        environ={},
    )
    return Worker(settings, executor, blob, client_id=executor.client_id)


def stop_after_reports(worker: Worker, executor: FakeExecutor, count: int = 1, timeout: float = 60) -> None:
    """Run in the background: request the daemon's stop once ``count`` final updates were posted."""

    def wait_then_stop() -> None:
        try:
            wait_for(lambda: len(executor.updates) >= count, timeout, f"{count} final updates")
        finally:
            worker.request_stop()

    threading.Thread(target=wait_then_stop, daemon=True).start()


def test_daemon_runs_jobs_concurrently_and_reports(tmp_path: Path) -> None:
    executor, blob = FakeExecutor(), FakeBlob()
    hashes = [blob.add_bundle(bundle(f"import time; time.sleep(0.3); print({i})")) for i in range(3)]
    executor.to_start = list(hashes)
    worker = make_worker(tmp_path, executor, blob, processes=2)
    stop_after_reports(worker, executor, count=3)
    assert worker.work() == 0
    assert executor.polls[0]["availableProcesses"] == 2
    assert sorted(h for h, u in executor.updates if u["status"] == "SUCCESS") == sorted(hashes)
    assert all(p["availableProcesses"] <= 2 for p in executor.polls)
    assert any(p["availableProcesses"] == 1 for p in executor.polls), "the third job waited for a free slot"
    assert executor.polls[-1]["availableProcesses"] == 0, "a stopping worker claims nothing"


def test_daemon_keeps_no_thread_of_a_finished_job(tmp_path: Path) -> None:
    """A long-running daemon's job table holds the running jobs only, not one thread per job it ever ran."""
    executor, blob = FakeExecutor(), FakeBlob()
    hashes = [blob.add_bundle(bundle(f"print({i})")) for i in range(6)]
    executor.to_start = list(hashes)
    worker = make_worker(tmp_path, executor, blob, processes=2)
    seen: dict[str, Any] = {}

    def after_all_jobs() -> None:
        try:
            wait_for(lambda: len(executor.updates) == len(hashes), 60, "six final reports")
            # Still polling: every job has finished, so neither table may hold anything of them.
            wait_for(lambda: not worker.job_threads and not worker.running, 60, "the daemon to forget finished jobs")
            seen["threads"], seen["running"] = set(worker.job_threads), dict(worker.running)
        finally:
            worker.request_stop()

    threading.Thread(target=after_all_jobs, daemon=True).start()
    assert worker.work() == 0
    assert sorted(h for h, u in executor.updates if u["status"] == "SUCCESS") == sorted(hashes)
    assert seen == {"threads": set(), "running": {}}


def test_a_job_claimed_in_the_poll_that_races_a_stop_is_still_run(tmp_path: Path) -> None:
    """SIGTERM arriving while a poll is in flight: the server has already handed the job to us (RUNNING), so
    the draining worker runs it to the end instead of dropping it (it would stay RUNNING on the server)."""
    executor, blob = FakeExecutor(), FakeBlob()
    h = blob.add_bundle(bundle("print('ran')"))
    executor.to_start = [h]
    worker = make_worker(tmp_path, executor, blob)
    answer = executor.poll_worker

    def poll_then_stop(*args: Any) -> dict[str, Any]:
        result = answer(*args)
        if h in result.get("jobsToStart", []):
            worker.request_stop()  # the stop lands after the server claimed the job, before we start it
        return result

    executor.poll_worker = poll_then_stop  # type: ignore[method-assign]
    assert worker.work() == 0
    assert [(job, update["status"]) for job, update in executor.updates] == [(h, "SUCCESS")]


def test_daemon_drain_timeout_cancels_and_exits_zero(tmp_path: Path) -> None:
    executor, blob = FakeExecutor(), FakeBlob()
    h = blob.add_bundle(bundle("import time; print('start', flush=True); time.sleep(600)"))
    executor.to_start = [h]
    worker = make_worker(tmp_path, executor, blob, drainTimeout=0.5)
    threading.Timer(0.5, worker.request_stop).start()
    assert worker.work() == 0
    assert executor.updates[-1][1]["status"] == "CANCELED"


def test_daemon_survives_errors_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    executor, blob = FakeExecutor(), FakeBlob()
    executor.fail_polls = 4
    worker = make_worker(tmp_path, executor, blob, maxBackoff=0.1)
    worker.refresh = 0.01
    with caplog.at_level(logging.INFO, logger="deepforge_worker.daemon"):
        assert worker.work(max_polls=6) == 0
    assert len(executor.polls) == 6
    assert caplog.text.count("executor poll failed") == 1
    assert caplog.text.count("reachable again") == 1


def test_an_outage_is_one_warning_whatever_its_errors_say(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A server going down answers a poll with "connection aborted", then the next ones with "refused": one
    outage, one warning and one recovery (it was a warning per distinct message)."""
    executor, blob = FakeExecutor(), FakeBlob()
    executor.poll_errors = [ConnectionError("connection aborted"), ConnectionError("connection refused")]
    worker = make_worker(tmp_path, executor, blob, maxBackoff=0.1)
    worker.refresh = 0.01
    with caplog.at_level(logging.INFO, logger="deepforge_worker.daemon"):
        assert worker.work(max_polls=4) == 0
    assert caplog.text.count("executor poll failed") == 1
    assert caplog.text.count("reachable again") == 1


def test_daemon_cancels_on_request(tmp_path: Path) -> None:
    executor, blob = FakeExecutor(), FakeBlob()
    h = blob.add_bundle(bundle("import time; print('x', flush=True); time.sleep(600)"))
    executor.to_start = [h]
    worker = make_worker(tmp_path, executor, blob)
    threading.Timer(0.5, executor.to_cancel.append, args=(h,)).start()
    stop_after_reports(worker, executor)
    assert worker.work() == 0
    assert executor.updates[-1][1]["status"] == "CANCELED"


def test_label_probes(tmp_path: Path) -> None:
    executor, blob = FakeExecutor(), FakeBlob()
    executor.label_jobs = {
        "python": blob.add_bundle(bundle("print('ok')")),
        "cuda": blob.add_bundle(bundle("import sys; sys.exit(1)")),
    }
    worker = make_worker(tmp_path, executor, blob, processes=2, labels="base")
    worker.refresh = 0.05
    worker.work(max_polls=1)
    worker._join_jobs()
    assert worker.pool.labels == ["base", "python"]
    worker.work(max_polls=worker.polls + 1)
    assert executor.polls[-1]["labels"] == ["base", "python"]
    assert executor.updates == [], "label probes are never reported as jobs"


def test_orphaned_job_groups_are_reaped_but_reused_pids_are_not(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    orphan = subprocess.Popen(sleeper, start_new_session=True)
    bystander = subprocess.Popen(sleeper, start_new_session=True)
    try:
        record_process_group(tmp_path, "a" * 40, orphan.pid)
        (tmp_path / ("a" * 40)).mkdir()
        # a record whose pid now belongs to another process (different start time) must not kill it
        (tmp_path / f"{'b' * 40}.pgid").write_text(json.dumps({"pgid": bystander.pid, "start": "1"}))
        assert reap_orphaned_jobs(tmp_path) == 1
        assert orphan.wait(timeout=10) == -15  # SIGTERM: a job shim then kills every process of its job
        assert bystander.poll() is None
        assert not list(tmp_path.iterdir()), "records and the orphan's job dir are removed"
    finally:
        for proc in (orphan, bystander):
            proc.kill()
            proc.wait()


def test_jobs_claimed_in_a_lost_poll_answer_are_adopted(tmp_path: Path) -> None:
    executor, blob = FakeExecutor(), FakeBlob()
    h = blob.add_bundle(bundle("print('adopted')"))
    executor.to_start = [h]
    executor.fail_polls, executor.lose_answers = 1, True
    worker = make_worker(tmp_path, executor, blob, maxBackoff=0.1)
    worker.refresh = 0.01
    stop_after_reports(worker, executor)
    assert worker.work() == 0
    assert executor.updates and executor.updates[0][0] == h
    assert executor.updates[0][1]["status"] == "SUCCESS"
