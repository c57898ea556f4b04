"""The worker when things go wrong around it: server restarts, a worker killed mid-job; and runner bundles.

Each test gets its own stack (these restart servers and kill workers), with a short executor refresh so
the server's requeue (5 x refresh, checked every 10 s) happens within the test.
"""

from __future__ import annotations

import io
import json
import pickle
import time
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage import get_client as get_storage
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.jobs import pid_gone
from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import WorkerProcess, python_config, upload_bundle

pytestmark = pytest.mark.integration


def test_server_restart_while_a_job_runs(webgme_stack_factory: Any, worker_factory: Any) -> None:
    stack = webgme_stack_factory(worker_refresh_ms=300)
    worker = worker_factory(stack, env={"DEEPFORGE_WORKER_MAX_BACKOFF": "1"})
    blob = BlobClient(stack.url)
    executor = ExecutorClient(stack.url)
    code = "import time\nprint('before', flush=True)\ntime.sleep(3)\nprint('after', flush=True)\n"
    bundle = upload_bundle(blob, {}, python_config(code))
    compute = get_client("gme", {"host": stack.url})
    job_info = compute.start_job(ComputeJob(hash=bundle))
    wait_for(lambda: executor.get_output(bundle), 30, "the job's process to run")
    stack.stop_server()
    time.sleep(4)  # the job finishes while the server is down; its final report must wait and retry
    stack.start_server()
    wait_for(lambda: executor.get_info(bundle)["status"] not in ("RUNNING", "CREATED"), 90, "the final report")
    info = executor.get_info(bundle)
    assert info["status"] == "SUCCESS", worker.log()
    assert info["worker"] == worker.client_id
    console = compute.get_console_output(job_info)
    assert "before" in console and "after" in console
    assert worker.proc.poll() is None, "the daemon survives a server restart"

    def recovered() -> bool:
        log = worker.log()
        return log.count("executor poll failed") == log.count("executor reachable again")

    # The final report and the poll loop retry on their own: the report can land before the loop's next poll.
    try:
        wait_for(recovered, 30, "the poll loop to reach the server again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the worker's log:\n{worker.log()}") from None
    log = worker.log()
    assert log.count("executor poll failed") <= 1, "one log line per state change, not per poll"
    assert log.count("executor poll failed") == log.count("executor reachable again")
    assert "Retrying" not in log, "no log line per HTTP retry"


def job_running_on_a_worker(
    webgme_stack_factory: Any, worker_factory: Any, seconds: float
) -> tuple[Any, WorkerProcess, str, int]:
    """A fresh stack (refresh 200 ms) whose only worker runs a job that prints its pid, then sleeps."""
    stack = webgme_stack_factory(worker_refresh_ms=200)
    worker = worker_factory(stack)
    executor = ExecutorClient(stack.url)
    code = f"import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep({seconds})\nprint('finished')\n"
    bundle = upload_bundle(BlobClient(stack.url), {}, python_config(code))
    get_client("gme", {"host": stack.url}).start_job(ComputeJob(hash=bundle))
    outputs = wait_for(lambda: executor.get_output(bundle), 30, "the job to print its pid")
    assert executor.get_info(bundle)["worker"] == worker.client_id
    return stack, worker, bundle, int(outputs[0]["output"].split()[1])


def test_killed_worker_job_is_requeued_and_completed_by_another(webgme_stack_factory: Any, worker_factory: Any) -> None:
    stack, first, bundle, orphan = job_running_on_a_worker(webgme_stack_factory, worker_factory, seconds=3)
    executor = ExecutorClient(stack.url)
    first.extra_pids.append(orphan)  # killed at teardown whatever happens
    first.signal(9)
    first.wait(timeout=10)
    assert not pid_gone(orphan), "jobs run in their own session: a SIGKILLed daemon leaves them running"
    # Restarted on the same work dir (as supervisord would): it stops the orphan before claiming anything.
    second = worker_factory(stack, work_dir=str(first.work_dir))
    wait_for(lambda: pid_gone(orphan), 10, "the restarted daemon to stop the orphaned job")
    wait_for(lambda: executor.get_info(bundle).get("worker") == second.client_id, 60, "the requeue to the 2nd worker")
    wait_for(lambda: executor.get_info(bundle)["status"] == "SUCCESS", 60, "the second worker to finish")
    info = executor.get_info(bundle)
    assert info["worker"] == second.client_id, second.log()
    assert first.client_id not in executor.get_workers()


RUNNER_MAIN = """
import os, pickle
numbers = pickle.load(open("artifacts/numbers", "rb"))
offset = pickle.load(open("artifacts/offset", "rb"))
print("adding", offset, "to", numbers, flush=True)
for name, value in (("shifted", [n + offset for n in numbers]), ("total", sum(numbers) + offset)):
    os.makedirs(f"outputs/{name}")
    pickle.dump(value, open(f"outputs/{name}/data", "wb"))
    open(f"outputs/{name}/metadata.json", "w").write('{"type": "%s"}' % type(value).__name__)
"""


@pytest.mark.parametrize("storage_id", ["gme", "local"])
def test_runner_bundle_with_inputs_and_outputs(
    storage_id: str, webgme_server: Any, worker_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = secrets.generate_key()
    monkeypatch.setenv(secrets.KEY_ENV, key)
    cache = tmp_path / "shared-cache"
    worker = worker_factory(webgme_server, cache_dir=str(cache), env={secrets.KEY_ENV: key})
    local = get_storage("local", {"root": str(tmp_path / "store")})
    gme = get_storage("gme", {"host": webgme_server.url})
    numbers = gme.put_file_stream("in/numbers", io.BytesIO(pickle.dumps([1, 2, 3])))
    offset = local.put_file_stream("in/offset", io.BytesIO(pickle.dumps(10)))
    storage_config = {"host": webgme_server.url} if storage_id == "gme" else {"root": str(tmp_path / "store")}
    compute = get_client("gme", {"host": webgme_server.url})
    blob = BlobClient(webgme_server.url)

    def run_once(n: int) -> dict[str, Any]:
        directory = build_bundle(
            tmp_path / f"bundle{n}",
            storage_id=storage_id,
            storage_dir="proj/executions/op",
            storage_config=storage_config,
            inputs={
                "numbers": (numbers, {"host": webgme_server.url}),
                "offset": (offset, {"root": str(tmp_path / "store")}),
            },
            outputs=["shifted", "total"],
            main_py=RUNNER_MAIN,
            output_interval=100,
        )
        files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
        bundle_hash = blob.upload_artifact(f"job{n}", files)
        job_info = compute.start_job(ComputeJob(hash=bundle_hash))
        updates = list(compute.watch(job_info, poll_interval=0.2))
        assert updates[-1].status == JobStatus.SUCCESS, compute.get_console_output(job_info) + worker.log()
        assert "adding 10 to [1, 2, 3]" in "".join(u.output for u in updates if u.kind == "output")
        return compute.get_results_info(job_info)

    results = run_once(1)
    assert results["shifted"]["type"] == "list" and results["total"]["type"] == "int"
    out_store = gme if storage_id == "gme" else local
    for name, expected in (("shifted", [11, 12, 13]), ("total", 16)):
        info = DataInfo.from_json(results[name]["dataInfo"])
        assert info.backend == storage_id
        with out_store.get_file_stream(info) as fh:
            assert pickle.loads(fh.read()) == expected
    cached = sorted(p for p in (cache / "objects").rglob("*") if p.is_file())
    assert len(cached) == 2, "both inputs go through the worker's shared cache"
    mtimes = {p: p.stat().st_mtime_ns for p in cached}
    run_once(2)  # a second job with the same inputs downloads nothing (cache entries are not rewritten)
    assert {p: p.stat().st_mtime_ns for p in cached} == mtimes
    json.dumps(results)


def test_late_report_of_a_requeued_job_does_not_clobber_the_new_result(
    webgme_stack_factory: Any, worker_factory: Any
) -> None:
    stack, first, bundle, job_pid = job_running_on_a_worker(webgme_stack_factory, worker_factory, seconds=2)
    first.extra_pids.append(job_pid)
    executor = ExecutorClient(stack.url)
    first.signal(19)  # SIGSTOP: the daemon is frozen (a stuck or partitioned worker); its job runs on
    try:
        second = worker_factory(stack)
        wait_for(lambda: executor.get_info(bundle).get("worker") == second.client_id, 60, "the requeue")
        wait_for(lambda: executor.get_info(bundle)["status"] == "SUCCESS", 60, "the second worker's result")
        result = executor.get_info(bundle)
    finally:
        first.signal(18)  # SIGCONT: the first daemon wakes up with a finished job to report
    # Either its late report is dropped, or it stops its copy first and never reports (drop_jobs_given_away).
    late = ("not reporting", "dropping our late", "stopping our copy without reporting it", f"{bundle}: reported")
    wait_for(lambda: any(m in first.log() for m in late), 60, "the first worker to handle its late report")
    after = executor.get_info(bundle)
    assert f"{bundle}: reported" not in first.log()
    assert after["worker"] == second.client_id and after["resultHashes"] == result["resultHashes"]
    assert after["finishTime"] == result["finishTime"]


def test_a_frozen_worker_stops_its_copy_of_a_job_given_to_another(
    webgme_stack_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    """Once awake, the worker stops a job the server requeued to another worker, instead of running it twice.

    The job waits on a gate file the test opens only at the end, so only the worker stopping it can end the
    first copy early (the soak run, issue 15: copies of requeued jobs held every slot of a fleet).
    """
    gate = tmp_path / "gate"
    stack = webgme_stack_factory(worker_refresh_ms=200)
    first = worker_factory(stack)
    executor = ExecutorClient(stack.url)
    code = (
        "import os, time\nprint('pid', os.getpid(), flush=True)\n"
        f"while not os.path.exists({str(gate)!r}):\n    time.sleep(0.1)\nprint('finished')\n"
    )
    bundle = upload_bundle(BlobClient(stack.url), {}, python_config(code))
    get_client("gme", {"host": stack.url}).start_job(ComputeJob(hash=bundle))
    outputs = wait_for(lambda: executor.get_output(bundle), 30, "the job to print its pid")
    first_copy = int(outputs[0]["output"].split()[1])
    first.extra_pids.append(first_copy)
    first.signal(19)  # SIGSTOP: the daemon is frozen past the server's timeout; its job waits on
    try:
        try:
            second = worker_factory(stack)
            wait_for(lambda: executor.get_info(bundle).get("worker") == second.client_id, 60, "the requeue")
        finally:
            first.signal(18)  # SIGCONT
        wait_for(lambda: pid_gone(first_copy), 60, "the first worker to stop its copy of the requeued job")
        assert "stopping our copy without reporting it" in first.log()
    finally:
        gate.touch()  # every copy still waiting ends, whatever failed above
    wait_for(lambda: executor.get_info(bundle)["status"] == "SUCCESS", 60, "the second worker's result")
    assert executor.get_info(bundle)["worker"] == second.client_id
    assert f"{bundle}: reported" not in first.log()
