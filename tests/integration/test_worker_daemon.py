"""``deepforge-worker`` against the real WebGME server: jobs, failures, cancel, labels, through ``gme`` compute.

Every test runs the daemon as a real process (``python -m deepforge_worker.cli start``) and submits
through :class:`~deepforge_adapters.compute.gme.GmeCompute`, so both ends of the protocol are exercised.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.compute.gme import GmeCompute
from deepforge_adapters.errors import ComputeError
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.jobs import pid_gone
from tests.fixtures.waiting import run_to_end, wait_for
from tests.fixtures.worker import STUBBORN_JOB, python_config, upload_bundle

pytestmark = pytest.mark.integration


def gme(stack: Any, **config: Any) -> GmeCompute:
    client = get_client("gme", {"host": stack.url, **config})
    assert isinstance(client, GmeCompute)
    return client


def start_and_run(compute: GmeCompute, bundle_hash: str, labels: tuple[str, ...] = ()) -> tuple[dict, list]:
    """Start an uploaded bundle as a gme job and watch it to its end."""
    job_info = compute.start_job(ComputeJob(hash=bundle_hash, labels=labels))
    updates, _ = run_to_end(compute, job_info, poll_interval=0.2)
    return job_info, updates


def artifact_files(blob: BlobClient, artifact_hash: str) -> dict[str, bytes]:
    content = blob.metadata(artifact_hash)["content"]
    out = {}
    for relpath in content:
        with blob.open(artifact_hash, subpath=relpath) as fh:
            out[relpath] = fh.read()
    return out


GENERIC = (
    "import os, sys\n"
    "print('hello from', os.environ['ORIGIN_URL'])\n"
    "print('to stderr', file=sys.stderr)\n"
    "os.makedirs('outputs', exist_ok=True)\n"
    "open('outputs/result.txt', 'w').write('42')\n"
)


def test_generic_bundle_to_success(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    artifacts = [
        {"name": "stdout", "resultPatterns": ["job_stdout.txt"]},
        {"name": "results", "resultPatterns": ["outputs/**"]},
    ]
    bundle = upload_bundle(blob, {}, python_config(GENERIC, artifacts))
    compute = gme(webgme_server)
    job_info, updates = start_and_run(compute, bundle)
    assert updates[-1].kind == "end" and updates[-1].status == JobStatus.SUCCESS, updates
    live = "".join(u.output for u in updates if u.kind == "output")
    assert f"hello from {webgme_server.url}" in live
    assert "to stderr" not in live  # stderr stays in job_stderr.txt, as the Node worker keeps it
    info = ExecutorClient(webgme_server.url).get_info(bundle)
    assert info["status"] == "SUCCESS" and info["worker"] == worker.client_id
    assert info["startTime"] and info["finishTime"]
    assert set(info["resultHashes"]) == {"stdout", "results"}
    assert artifact_files(blob, info["resultHashes"]["results"]) == {"outputs/result.txt": b"42"}
    assert "to stderr" not in compute.get_console_output(job_info)
    assert worker.proc.poll() is None


def test_live_output_starts_at_chunk_zero_and_is_ordered(webgme_server: Any, worker_factory: Any) -> None:
    worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    code = "import time\nfor i in range(30):\n    print(f'line {i}', flush=True)\n    time.sleep(0.02)\n"
    bundle = upload_bundle(blob, {}, python_config(code, outputSegmentSize=5))
    _, updates = start_and_run(gme(webgme_server), bundle)
    assert updates[-1].status == JobStatus.SUCCESS
    chunks = ExecutorClient(webgme_server.url).get_output(bundle)
    assert [c["outputNumber"] for c in chunks] == list(range(len(chunks))) and len(chunks) >= 6
    expected = "".join(f"line {i}\n" for i in range(30))
    assert "".join(c["output"] for c in chunks) == expected
    assert "".join(u.output for u in updates if u.kind == "output") == expected


def test_failing_command_reports_the_error(webgme_server: Any, worker_factory: Any) -> None:
    worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    bundle = upload_bundle(blob, {}, python_config("raise ValueError('bad input 17')"))
    compute = gme(webgme_server)
    _job_info, updates = start_and_run(compute, bundle)
    assert updates[-1].status == JobStatus.FAILED
    assert updates[-1].reason and "ValueError: bad input 17" in updates[-1].reason
    assert ExecutorClient(webgme_server.url).get_info(bundle)["status"] == "FAILED_TO_EXECUTE"


def test_malformed_executor_config(webgme_server: Any, worker_factory: Any) -> None:
    worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    bundle = upload_bundle(blob, {"executor_config.json": '{"cmd": 42, "resultArtifacts": []}'})
    compute = gme(webgme_server)
    job_info, updates = start_and_run(compute, bundle)
    assert ExecutorClient(webgme_server.url).get_info(bundle)["status"] == "FAILED_EXECUTOR_CONFIG"
    assert updates[-1].status == JobStatus.FAILED
    assert updates[-1].reason and "field 'cmd': must be a non-empty string" in updates[-1].reason
    assert "'cmd'" in compute.get_console_output(job_info)


def evil_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (("executor_config.json", json.dumps(python_config("print(1)"))), ("../evil.txt", "x")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o100644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def test_zip_slip_bundle_is_refused(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    # A plain blob file is served as-is by /view/<hash>/, so this zip reaches the worker byte for byte.
    data = evil_zip()
    bundle, _ = blob.create_file(f"evil-{time.time_ns()}.zip", io.BytesIO(data), size=len(data))
    _job_info, updates = start_and_run(gme(webgme_server), bundle)
    assert ExecutorClient(webgme_server.url).get_info(bundle)["status"] == "FAILED_UNZIP"
    assert updates[-1].reason and "evil.txt" in updates[-1].reason
    assert not (worker.work_dir.parent / "evil.txt").exists() and not (worker.work_dir / "evil.txt").exists()


def test_cancel_kills_a_job_that_ignores_sigint(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    bundle = upload_bundle(blob, {}, python_config(STUBBORN_JOB))
    compute = gme(webgme_server)
    job_info = compute.start_job(ComputeJob(hash=bundle))
    pids: list[int] = []
    end = None
    for update in compute.watch(job_info, poll_interval=0.2):
        if update.kind == "output" and "pids" in update.output and not pids:
            pids = [int(p) for p in update.output.split("pids", 1)[1].split()[:2]]
            worker.extra_pids.extend(pids)
            assert all(not pid_gone(p) for p in pids)
            compute.cancel_job(job_info)
        if update.kind == "end":
            end = update
    assert end is not None and end.status == JobStatus.CANCELED
    assert ExecutorClient(webgme_server.url).get_info(bundle)["status"] == "CANCELED"
    wait_for(lambda: all(pid_gone(p) for p in pids), 10, "the canceled job's processes to be gone")


def test_labels_route_jobs(webgme_stack_factory: Any, worker_factory: Any) -> None:
    stack = webgme_stack_factory(worker_refresh_ms=250)
    plain = worker_factory(stack)
    gpu = worker_factory(stack, labels="gpu,cuda")
    blob = BlobClient(stack.url)
    executor = ExecutorClient(stack.url)
    compute = gme(stack)
    for _ in range(3):
        bundle = upload_bundle(blob, {}, python_config("print('on gpu')"))
        _, updates = start_and_run(compute, bundle, labels=("gpu",))
        assert updates[-1].status == JobStatus.SUCCESS
        assert executor.get_info(bundle)["worker"] == gpu.client_id
    with pytest.raises(ComputeError, match="tpu"):
        compute.start_job(ComputeJob(hash=upload_bundle(blob, {}, python_config("1")), labels=("tpu",)))
    assert plain.proc.poll() is None


def test_sigterm_drains_running_jobs(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    executor = ExecutorClient(webgme_server.url)
    code = "import time\nprint('working', flush=True)\ntime.sleep(2)\nprint('done')\n"
    bundle = upload_bundle(blob, {}, python_config(code))
    compute = gme(webgme_server)
    job_info = compute.start_job(ComputeJob(hash=bundle))
    wait_for(lambda: executor.get_info(bundle)["status"] == "RUNNING", 30, "the job to start")
    worker.signal(15)
    assert worker.wait(timeout=60) == 0
    info = executor.get_info(bundle)
    assert info["status"] == "SUCCESS", worker.log()
    assert "done" in compute.get_console_output(job_info)
    assert "draining" in worker.log()


def test_nonce_protected_executor_and_check(webgme_stack_factory: Any, worker_factory: Any) -> None:
    nonce = "nonce-SECRET-4711"
    stack = webgme_stack_factory(worker_refresh_ms=250, nonce=nonce)
    cli = [sys.executable, "-m", "deepforge_worker.cli"]
    refused = subprocess.run([*cli, "check", "--host", stack.url, "--nonce", "wrong-SECRET"], capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "403" in refused.stderr
    assert "SECRET" not in refused.stdout + refused.stderr
    worker = worker_factory(stack, wait=False, env={"DEEPFORGE_WORKER_NONCE": nonce})
    compute = gme(stack, nonce=nonce)
    wait_for(lambda: compute.executor.get_workers(), 30, "the worker to poll with the nonce")
    bundle = upload_bundle(BlobClient(stack.url), {}, python_config("print('behind a nonce')"))
    _, updates = start_and_run(compute, bundle)
    assert updates[-1].status == JobStatus.SUCCESS
    checked = subprocess.run([*cli, "check", "--host", stack.url], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "DEEPFORGE_WORKER_NONCE": nonce})  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert f"worker {worker.client_id}" in checked.stdout
    assert "SECRET" not in checked.stdout + checked.stderr + worker.log()


def test_label_probes_add_labels(webgme_stack_factory: Any, worker_factory: Any) -> None:
    stack = webgme_stack_factory(worker_refresh_ms=250)
    blob = BlobClient(stack.url)
    probes = {
        "python3": upload_bundle(blob, {}, python_config("import sys; print(sys.version)")),
        "no-such-tool": upload_bundle(blob, {}, {"cmd": "no-such-tool-xyz", "resultArtifacts": []}),
    }
    (stack.data_dir / "labelJobs.json").write_text(json.dumps(probes))
    stack.restart_server()  # the server reads labelJobs.json at start (and watches it afterwards)
    worker = worker_factory(stack, labels="base")
    executor = ExecutorClient(stack.url)
    labels = wait_for(
        lambda: "python3" in (w := executor.get_workers().get(worker.client_id, {})).get("labels", []) and w["labels"],
        30,
        "the python3 probe to add its label",
    )
    assert sorted(labels) == ["base", "python3"]
    bundle = upload_bundle(blob, {}, python_config("print('needs python3')"))
    _, updates = start_and_run(gme(stack), bundle, labels=("python3",))
    assert updates[-1].status == JobStatus.SUCCESS
    assert "no-such-tool" not in executor.get_workers()[worker.client_id]["labels"]
    assert not set(probes.values()) & set(executor.list_jobs()), "probes are never reported as executor jobs"


def test_large_output_is_chunked_below_the_servers_body_limit(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    # 600 kB in one write, with characters that grow when JSON-escaped: one chunk would be refused (413).
    code = "import sys\nsys.stdout.write(''.join(f'{i:06d} \\u00e9\\x01\\n' for i in range(60000)))\n"
    bundle = upload_bundle(blob, {}, python_config(code))
    _, updates = start_and_run(gme(webgme_server), bundle)
    assert updates[-1].status == JobStatus.SUCCESS
    chunks = ExecutorClient(webgme_server.url).get_output(bundle)
    expected = "".join(f"{i:06d} \u00e9\x01\n" for i in range(60000))
    assert "".join(c["output"] for c in chunks) == expected, worker.log()
    assert len(chunks) > 6
    assert "not accepted" not in worker.log() and "dropped" not in worker.log()


def test_gpu_slots_pin_concurrent_jobs_to_distinct_gpus(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server, gpus="0,1,2,3", processes=2, labels="multi-gpu")
    blob = BlobClient(webgme_server.url)
    executor = ExecutorClient(webgme_server.url)
    code = "import os, time\nprint('gpus', os.environ['CUDA_VISIBLE_DEVICES'], flush=True)\ntime.sleep(1.5)\n"
    compute = gme(webgme_server, labels="multi-gpu")
    bundles = [upload_bundle(blob, {}, python_config(code)) for _ in range(2)]
    infos = [compute.start_job(ComputeJob(hash=b)) for b in bundles]
    for info in infos:
        assert list(compute.watch(info, poll_interval=0.2))[-1].status == JobStatus.SUCCESS
    seen = [compute.get_console_output(i).split("gpus", 1)[1].split()[0] for i in infos]
    assert sorted(seen) == ["0,1", "2,3"], worker.log()
    jobs = [executor.get_info(b) for b in bundles]
    assert max(j["startTime"] for j in jobs) < min(j["finishTime"] for j in jobs), "the two jobs ran concurrently"


def test_a_saved_job_info_is_enough_to_resume_watching(webgme_server: Any, worker_factory: Any) -> None:
    worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    code = "import time\nfor i in range(5):\n    print(f'step {i}', flush=True)\n    time.sleep(0.3)\n"
    bundle = upload_bundle(blob, {}, python_config(code))
    saved = json.dumps(gme(webgme_server).start_job(ComputeJob(hash=bundle)))  # what the plugin stores
    # The process that started the job is gone; a new one, with a new client, picks it up from the model.
    resumed = gme(webgme_server)
    updates = list(resumed.watch(json.loads(saved), poll_interval=0.2))
    assert updates[-1].kind == "end" and updates[-1].status == JobStatus.SUCCESS
    assert "".join(u.output for u in updates if u.kind == "output") == "".join(f"step {i}\n" for i in range(5))
    assert resumed.get_status(json.loads(saved)) == JobStatus.SUCCESS


def test_second_sigterm_cancels_and_reports_then_exits_zero(webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    executor = ExecutorClient(webgme_server.url)
    bundle = upload_bundle(blob, {}, python_config("import time\nprint('long', flush=True)\ntime.sleep(600)\n"))
    gme(webgme_server).start_job(ComputeJob(hash=bundle))
    wait_for(lambda: executor.get_output(bundle), 30, "the job to run")
    worker.signal(15)
    wait_for(lambda: "draining" in worker.log(), 10, "the drain to start")
    assert executor.get_info(bundle)["status"] == "RUNNING", "the first SIGTERM lets the job run on"
    worker.signal(15)
    assert worker.wait(timeout=60) == 0
    assert executor.get_info(bundle)["status"] == "CANCELED", worker.log()
