"""Issue 16, item 6: a job's processes cannot escape cancel or completion.

The operation double-forks a grandchild that calls ``setsid()`` (so it is in no process group of the job),
records its pid and sleeps; in the ``keeps stdout open`` variant the grandchild also keeps the job's stdout
open, which used to keep the job from ever ending.  For local compute (real supervisor processes) and a real
``deepforge-worker`` against the real WebGME server, for SUCCESS and for CANCELED: the job ends in the right
state and the grandchild is gone afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.compute.local import LocalCompute
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import python_config, upload_bundle

pytestmark = pytest.mark.integration

#: How long an outcome may take to show up (a deadline for polling, never a timing assertion).
DEADLINE = 60.0


def escaping_operation(pid_file: Path, keep_stdout: bool, then: str) -> str:
    """Python code: double-fork + setsid a sleeping grandchild that writes its pid to ``pid_file``."""
    close = "" if keep_stdout else "        os.close(0); os.close(1); os.close(2)\n"
    path = repr(str(pid_file))
    return (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"{close}"
        f"        open({path} + '.tmp', 'w').write(str(os.getpid()))\n"
        f"        os.rename({path} + '.tmp', {path})\n"
        "        time.sleep(3600)\n"
        "    os._exit(0)\n"
        f"while not os.path.exists({path}):\n"
        "    time.sleep(0.05)\n"
        "print('grandchild started', flush=True)\n"
        f"{then}"
    )


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_gone(pid: int) -> bool:
    return wait_for(lambda: not alive(pid), DEADLINE, f"process {pid} to be gone", interval=0.1)


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def read_pid(path: Path) -> int:
    wait_for(path.exists, DEADLINE, f"the grandchild to write {path}")
    return int(path.read_text())


CASES = [
    pytest.param(False, "success", id="success"),
    pytest.param(True, "success", id="success-keeps-stdout-open"),
    pytest.param(False, "cancel", id="canceled"),
    pytest.param(True, "cancel", id="canceled-keeps-stdout-open"),
]
THEN = {"success": "print('main done', flush=True)\n", "cancel": "time.sleep(3600)\n"}


# ------------------------------------------------------------------------------------------------ local
@pytest.mark.parametrize("cgroup", ["auto", "0"], ids=["cgroup-if-allowed", "subreaper-only"])
@pytest.mark.parametrize(("keep_stdout", "end"), CASES)
def test_local_compute_kills_an_escaped_grandchild(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    leftovers: list[int],
    keep_stdout: bool,
    end: str,
    cgroup: str,
) -> None:
    monkeypatch.setenv("DEEPFORGE_JOB_CGROUP", cgroup)
    monkeypatch.setenv("DEEPFORGE_CANCEL_GRACE", "1")
    pid_file = tmp_path / "grandchild.pid"
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    code = escaping_operation(pid_file, keep_stdout, THEN[end])
    (bundle / "executor_config.json").write_text(json.dumps({"cmd": "python3", "args": ["-c", code]}))
    compute = get_client("local", {"workDir": str(tmp_path / "compute")})
    assert isinstance(compute, LocalCompute)

    info = compute.start_job(ComputeJob(bundle=bundle))
    grandchild = read_pid(pid_file)
    leftovers.append(grandchild)
    if end == "cancel":
        compute.cancel_job(info)
    want = JobStatus.SUCCESS if end == "success" else JobStatus.CANCELED
    status = wait_for(
        lambda: (s := compute.get_status(info)).finished and s, DEADLINE, f"local job {info['hash']} to end"
    )
    assert status == want, compute.get_console_output(info)
    assert wait_gone(grandchild), f"the job's setsid() grandchild {grandchild} outlived the {end}"


# ------------------------------------------------------------------------------------------------ worker
@pytest.mark.parametrize(("keep_stdout", "end"), CASES)
def test_worker_kills_an_escaped_grandchild(
    webgme_server: Any, worker_factory: Any, tmp_path: Path, leftovers: list[int], keep_stdout: bool, end: str
) -> None:
    worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)
    pid_file = tmp_path / "grandchild.pid"
    bundle = upload_bundle(blob, {}, python_config(escaping_operation(pid_file, keep_stdout, THEN[end])))
    compute = get_client("gme", {"host": webgme_server.url})
    job_info = compute.start_job(ComputeJob(hash=bundle))
    grandchild = read_pid(pid_file)
    leftovers.append(grandchild)
    if end == "cancel":
        compute.cancel_job(job_info)
    executor = ExecutorClient(webgme_server.url)
    want = "SUCCESS" if end == "success" else "CANCELED"
    status = wait_for(
        lambda: (s := executor.get_info(bundle)["status"]) not in ("CREATED", "RUNNING") and s,
        DEADLINE,
        f"job {bundle} to end",
    )
    assert status == want
    assert wait_gone(grandchild), f"the job's setsid() grandchild {grandchild} outlived the {end}"
