"""The soak run's audit (deepforge_dev.soak.audit) against real runs: a clean run audits to all zeros, and
each kind of damage, injected by hand, is found and named.

One project on the plugin stack gets three real ExecutePipeline runs (module fixture): a chain on local
compute, the same chain with an operation built to fail, and the chain on the executor, run by a real
``deepforge-worker`` whose environment carries the run's marker.  Every test injects one kind of damage,
audits, and undoes the damage, so the others see the clean run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.webgme import ExecutorClient
from deepforge_dev.soak.audit import AuditReport, RunRecord, audit, worker_events

from tests.fixtures.plugins import GmeProject
from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import WorkerProcess, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

MARKER = "DEEPFORGE_SOAK_TEST_MARKER"
CACHE_CAP = 64 * 1024

PRODUCE = """
class Produce:
    def execute(self):
        x = list(range(1000))
        print("produced", len(x), flush=True)
        return x
"""
SLOW_PRODUCE = """
import time


class Produce:
    def execute(self):
        print("sleeping", flush=True)
        time.sleep(300)
        return [1]
"""
TRANSFORM = """
class Transform:
    def execute(self, x):
        return [v * 10 for v in x]
"""
FAILING_TRANSFORM = """
class Transform:
    def execute(self, x):
        raise ValueError("transform refuses on purpose")
"""
CONSUME = """
class Consume:
    def execute(self, y):
        return sum(y)
"""


def chain(name: str, transform: str, produce: str = PRODUCE, save: str | None = None) -> dict[str, Any]:
    """Produce -> Transform -> Consume (-> an Output operation saving the total as ``save``)."""
    spec: dict[str, Any] = {
        "name": name,
        "operations": [
            {"name": "Produce", "code": produce, "outputs": ["x"]},
            {"name": "Transform", "code": transform, "inputs": ["x"], "outputs": ["y"]},
            {"name": "Consume", "code": CONSUME, "inputs": ["y"], "outputs": ["total"]},
        ],
        "connections": [["Produce.x", "Transform.x"], ["Transform.y", "Consume.y"]],
    }
    if save:
        spec["operations"].append({"name": "save", "output": True, "saveName": save})
        spec["connections"].append(["Consume.total", "save.saveData"])
    return spec


@dataclasses.dataclass
class Runs:
    project: GmeProject
    record: RunRecord
    worker: WorkerProcess
    store: Path
    executions: dict[str, str]  # name -> path
    jobs: dict[tuple[str, str], str]  # (execution name, job name) -> path
    artifact: str  # the path of the artifact the clean run saved into MyArtifacts
    outputs: dict[tuple[str, str], str]  # (execution name, job name) -> its first output's dataInfo text


@pytest.fixture(scope="module")
def runs(plugin_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("soakaudit")
    store, work = base / "store", base / "work"
    project = GmeProject(plugin_stack.url, f"soakaudit_{uuid.uuid4().hex[:10]}").create()
    started_ms = int(time.time() * 1000)
    marker = uuid.uuid4().hex
    worker = start_worker(plugin_stack, base / "worker", env={MARKER: marker}, processes=2)
    try:
        local = {
            "storage": "local",
            "storage.local.root": str(store),
            "compute": "local",
            "compute.local.workDir": str(work),
            "compute.local.processes": 2,
        }
        plans = {
            "clean": (chain("clean", TRANSFORM, save="clean_total"), local),
            "broken": (chain("broken", FAILING_TRANSFORM), local),
            "remote": (chain("remote", TRANSFORM), {**local, "compute": "gme"}),
        }
        for name, (spec, dialog) in plans.items():
            result = project.run("ExecutePipeline", _import(project, spec), {"name": name, **dialog})
            assert result["success"] == (name != "broken"), result.get("error")
        # one the driver cancels while its first job runs
        run_id = project.start("ExecutePipeline", _import(project, chain("stopped", TRANSFORM, SLOW_PRODUCE)),
                               {"name": "stopped", **local})  # fmt: skip
        stopped = wait_for(lambda: _running(project, "stopped", "Produce"), 120, "the slow Produce to run")
        assert project.run("CancelExecution", str(stopped), local)["success"]
        assert not project.wait_result("ExecutePipeline", run_id, timeout=120)["success"]
        plans["stopped"] = plans["clean"]
        model = project.tree("")
        executions = {name: model.find("", "MyExecutions", name) for name in plans}
        jobs = {
            (ex, job): model.find(path, job)
            for ex, path in executions.items()
            for job in ("Produce", "Transform", "Consume")
        }
        outputs = {}
        for key, path in jobs.items():
            (op,) = model.children(path)
            (port, *_) = model.children(model.find(op, "Outputs"))
            if model.attrs(port).get("data"):
                outputs[key] = str(model.attrs(port)["data"])
        record = RunRecord(
            server_url=plugin_stack.url,
            project=project.project_id,
            executions={path: "canceled" if name == "stopped" else "none" for name, path in executions.items()},
            failing_operations={executions["broken"]: {"Transform"}},
            storage_configs={"local": {"root": str(store)}},
            work_dirs={str(work): 64 * 1024 * 1024, str(worker.work_dir): 64 * 1024 * 1024},
            cache_dirs={str(base / "worker" / "cache"): CACHE_CAP},
            storage_roots=[str(store)],
            worker_logs=[str(worker.log_path)],
            marker=(MARKER, marker),
            artifacts_since_ms=started_ms,
            ignore_pids={worker.pid},  # the daemon itself carries the marker; it is still serving the tests
            executor_scope="model",  # the session's server also holds other tests' executor jobs
        )
        artifact = model.find("", "MyArtifacts", "clean_total")
        yield Runs(project, record, worker, store, executions, jobs, artifact, outputs)
    finally:
        worker.kill()
        with contextlib.suppress(requests.RequestException):
            project.http.delete(f"{project.url}/api/projects/{project.owner}/{project.name}")


def _import(project: GmeProject, spec: dict[str, Any]) -> str:
    imported = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    return str(imported["messages"][0]["message"])


def _running(project: GmeProject, execution: str, job: str) -> str | None:
    """The path of ``execution`` once its ``job`` runs."""
    model = project.tree("")
    try:
        path = model.find("", "MyExecutions", execution)
        attrs = model.attrs(model.find(path, job))
    except LookupError:
        return None
    return path if attrs.get("status") == "running" else None


def found(report: AuditReport, kind: str, needle: str) -> bool:
    return report.counts[kind] == 1 and needle in report.details[kind][0]


def only(report: AuditReport, kind: str) -> dict[str, int]:
    """The counts of every other kind (all zero when the damage was the only finding)."""
    return {k: v for k, v in report.counts.items() if k != kind and v}


def test_clean_run_audits_to_all_zeros(runs: Runs) -> None:
    report = audit(runs.record)
    assert report.counts == dict.fromkeys(report.counts, 0), report.to_json()
    assert report.ok
    # what was checked, so that the zeros are not vacuous
    assert report.jobs_by_state == {"success": 8, "fail": 1, "pending": 1, "canceled": 3}
    assert report.executions_by_state == {"success": 2, "failed": 1, "canceled": 1}
    assert report.data_checked >= 6 and report.bytes_checked > 0  # 5 outputs and the saved artifact
    events = worker_events(runs.record.worker_logs)
    assert {e.kind for e in events} == {"start", "report"}
    assert {e.worker for e in events} == {runs.worker.client_id}
    assert json.loads(report.to_json())["counts"]["lost"] == 0


def test_an_execution_canceled_though_the_driver_did_not_cancel_it_is_lost(runs: Runs) -> None:
    stopped = runs.executions["stopped"]
    report = audit(dataclasses.replace(runs.record, executions={**runs.record.executions, stopped: "none"}))
    assert any(d.startswith(f"execution stopped ({stopped}) (none): ended 'canceled'") for d in report.details["lost"])
    assert report.counts["lost"] == 1 + 3, report.to_json()  # and its three Jobs: canceled, their execution not
    assert only(report, "lost") == {}


def _set_attrs(runs: Runs, path: str, **attrs: Any) -> None:
    result = runs.project.run("SetAttributes", path, {"attrs": attrs})
    assert result["success"], result


def test_a_job_left_running_is_stuck(runs: Runs) -> None:
    job = runs.jobs[("clean", "Transform")]
    _set_attrs(runs, job, status="running")
    try:
        report = audit(runs.record)
    finally:
        _set_attrs(runs, job, status="success")
    assert found(report, "stuck", job), report.to_json()
    assert only(report, "stuck") == {}


def test_a_job_that_failed_but_was_not_built_to_fail_is_lost(runs: Runs) -> None:
    job = runs.jobs[("remote", "Consume")]
    _set_attrs(runs, job, status="fail")
    try:
        report = audit(runs.record)
    finally:
        _set_attrs(runs, job, status="success")
    assert found(report, "lost", job), report.to_json()


def test_a_failure_without_a_reason_is_lost(runs: Runs) -> None:
    job = runs.jobs[("broken", "Transform")]
    stdout = runs.project.raw(job)["atr"]["stdout"]
    _set_attrs(runs, job, stdout="")
    try:
        report = audit(runs.record)
    finally:
        _set_attrs(runs, job, stdout=stdout)
    assert found(report, "lost", "without a reason"), report.to_json()


def test_a_corrupted_object_behind_a_data_info_is_corrupt(runs: Runs) -> None:
    info = DataInfo.from_json(runs.outputs[("clean", "Consume")])
    path = runs.store / info.data["filename"]
    original = path.read_bytes()
    stat = path.stat()
    path.write_bytes(bytes([original[0] ^ 0xFF]) + original[1:])  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime: only the bytes tell
    try:
        report = audit(runs.record)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert found(report, "corrupt", "job Consume of clean"), report.to_json()
    assert only(report, "corrupt") == {}


def test_a_corrupted_saved_artifact_is_corrupt(runs: Runs) -> None:
    info = DataInfo.from_json(runs.project.raw(runs.artifact)["atr"]["data"])
    path = runs.store / info.data["filename"]
    original = path.read_bytes()
    path.write_bytes(original + b"!")  # a longer file under the artifact's key
    try:
        report = audit(runs.record)
    finally:
        path.write_bytes(original)
    assert found(report, "corrupt", f"{runs.artifact} (artifact clean_total in MyArtifacts)"), report.to_json()
    assert only(report, "corrupt") == {}


def test_a_missing_object_behind_a_data_info_is_lost(runs: Runs) -> None:
    info = DataInfo.from_json(runs.outputs[("remote", "Consume")])
    path = runs.store / info.data["filename"]
    moved = path.with_name(path.name + ".aside")
    path.rename(moved)
    try:
        report = audit(runs.record)
    finally:
        moved.rename(path)
    assert found(report, "lost", "job Consume of remote"), report.to_json()


def test_a_temp_file_left_in_a_storage_root_is_corrupt(runs: Runs) -> None:
    info = DataInfo.from_json(runs.outputs[("clean", "Produce")])
    final = runs.store / info.data["filename"]
    temp = final.with_name(f".{final.name}.tmp-k3j2h1")  # what atomic_write leaves when killed mid-write
    temp.write_bytes(b"half an artifact")
    try:
        report = audit(runs.record)
    finally:
        temp.unlink()
    assert found(report, "corrupt", str(temp)), report.to_json()
    assert only(report, "corrupt") == {}


def _sleeper(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def test_an_orphan_job_process_is_found_by_marker_and_by_pgid(runs: Runs) -> None:
    assert runs.record.marker is not None
    marked = _sleeper({MARKER: runs.record.marker[1]})
    unmarked = _sleeper()
    try:
        by_marker = audit(runs.record)
        by_pgid = audit(dataclasses.replace(runs.record, job_pgids={unmarked.pid}))
    finally:
        for proc in (marked, unmarked):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert found(by_marker, "orphaned", f"pid {marked.pid} "), by_marker.to_json()
    assert only(by_marker, "orphaned") == {}
    assert by_pgid.counts["orphaned"] == 2 and any(f"pid {unmarked.pid} " in d for d in by_pgid.details["orphaned"])


def test_a_cache_over_its_cap_is_found(runs: Runs) -> None:
    (cache,) = runs.record.cache_dirs
    made = [Path(cache) / "objects" / "local" / "zz" / f"entry{n}" for n in range(2)]
    for path in made:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * (CACHE_CAP // 2 + 1))  # each within the cap, together over it
    try:
        report = audit(runs.record)
        alone = made.pop()
        alone.unlink()
        one_entry = audit(runs.record)  # one entry may exceed the cap: its own fetch never evicts it
    finally:
        for path in made:
            path.unlink()
    assert found(report, "over_cap", cache), report.to_json()
    assert one_entry.counts["over_cap"] == 0


# -------------------------------------------------------------------------------- results applied after requeue
def _remote_job(runs: Runs) -> tuple[str, Any]:
    """The executor job hash of the remote run's Transform and the real worker's start event of it."""
    job_hash = runs.project.raw(runs.jobs[("remote", "Transform")])["atr"]["execFiles"]
    (start,) = [e for e in worker_events(runs.record.worker_logs) if e.job == job_hash and e.kind == "start"]
    return job_hash, start


def _log_line(when: Any, name: str, message: str) -> str:
    return f"{when:%Y-%m-%d %H:%M:%S},{when.microsecond // 1000:03d} INFO {name}: {message}\n"


def _forged_worker_log(path: Path, client_id: str, job_hash: str, start: Any, report_after: Any | None) -> None:
    """The log of a worker that had the job before the real one (it froze and the server requeued it)."""
    early = start.when - timedelta(seconds=2)
    lines = [
        _log_line(early - timedelta(seconds=1), "deepforge_worker.daemon", f"worker {client_id} polling x (slots 1)"),
        _log_line(early, "deepforge_worker.execution", f"job {job_hash}: started pid 4194301 in slot 0"),
    ]
    if report_after is not None:
        lines.append(_log_line(report_after, "deepforge_worker.reports", f"job {job_hash}: reported SUCCESS"))
    path.write_text("".join(lines))


def test_a_late_report_in_the_worker_logs_is_duplicated(runs: Runs, tmp_path: Path) -> None:
    job_hash, start = _remote_job(runs)
    forged = tmp_path / "frozen-worker.log"
    # it woke up after the real worker had started the requeued job, and its report got through
    _forged_worker_log(forged, "frozen_4242", job_hash, start, report_after=start.when + timedelta(milliseconds=500))
    record = dataclasses.replace(runs.record, worker_logs=[*runs.record.worker_logs, str(forged)])
    report = audit(record)
    assert found(report, "duplicated", f"{job_hash} ({runs.jobs[('remote', 'Transform')]})"), report.to_json()
    assert "worker frozen_4242 reported SUCCESS" in report.details["duplicated"][0]
    assert only(report, "duplicated") == {}
    # the same frozen worker whose late report was dropped (no "reported" line): nothing to flag
    _forged_worker_log(forged, "frozen_4242", job_hash, start, report_after=None)
    assert audit(record).ok


def test_a_late_report_kept_by_the_executor_is_duplicated(runs: Runs, tmp_path: Path) -> None:
    job_hash, start = _remote_job(runs)
    forged = tmp_path / "frozen-worker.log"
    _forged_worker_log(forged, "frozen_4343", job_hash, start, report_after=None)  # its log was lost with it
    executor = ExecutorClient(runs.record.server_url)
    assert executor.get_info(job_hash)["worker"] == runs.worker.client_id
    executor.update_job(job_hash, {"worker": "frozen_4343"})  # what its late final report overlays
    try:
        report = audit(dataclasses.replace(runs.record, worker_logs=[*runs.record.worker_logs, str(forged)]))
    finally:
        executor.update_job(job_hash, {"worker": runs.worker.client_id})
    assert found(report, "duplicated", "the executor kept SUCCESS from worker frozen_4343"), report.to_json()
    assert only(report, "duplicated") == {}


def test_an_executor_job_left_created_is_stuck(runs: Runs) -> None:
    """The plugin recorded the job (its ``execFiles``) but no worker ever finished it."""
    executor = ExecutorClient(runs.record.server_url)
    job = runs.jobs[("remote", "Consume")]
    recorded = runs.project.raw(job)["atr"]["execFiles"]
    never_run = uuid.uuid4().hex[:40].ljust(40, "0")
    created = executor.create_job(never_run, labels=[f"nobody-{uuid.uuid4().hex[:6]}"])  # no worker offers it
    _set_attrs(runs, job, execFiles=never_run)
    try:
        report = audit(runs.record)
    finally:
        _set_attrs(runs, job, execFiles=recorded)
        executor.cancel_job(never_run, created["secret"])
    assert found(report, "stuck", f"executor job {never_run} ({job}): left CREATED"), report.to_json()
    assert only(report, "stuck") == {}


def test_a_temp_object_in_a_bucket_is_corrupt_and_an_open_multipart_upload_is_noted(seaweedfs_server: Any) -> None:
    config = seaweedfs_server.storage_config()
    s3 = seaweedfs_server.client()
    s3.create_bucket(Bucket=config["bucketName"])
    s3.put_object(Bucket=config["bucketName"], Key="p/executions/e/job/out", Body=b"final")
    record = RunRecord("http://127.0.0.1:9", "none+none", {}, buckets=[config], check_executor=False)
    assert audit(record).ok
    s3.put_object(Bucket=config["bucketName"], Key="p/executions/e/job/.out.tmp-x1y2z3", Body=b"half")
    upload = s3.create_multipart_upload(Bucket=config["bucketName"], Key="p/executions/e/job/big")
    try:
        report = audit(record)
    finally:
        s3.abort_multipart_upload(
            Bucket=config["bucketName"], Key="p/executions/e/job/big", UploadId=upload["UploadId"]
        )
    assert found(report, "corrupt", f"s3://{config['bucketName']}/p/executions/e/job/.out.tmp-x1y2z3"), report.to_json()
    assert any("p/executions/e/job/big: an incomplete multipart upload" in note for note in report.notes)
