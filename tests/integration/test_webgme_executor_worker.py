"""Interop with WebGME's own executor worker (webgme-executor-worker 3.1.1): a job built and queued with our
BlobClient/ExecutorClient runs on the reference worker, and its outputs and results read back through ours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from deepforge_adapters.webgme import BlobClient, ExecutorClient, is_finished
from deepforge_dev.stack import webgme_dir

from tests.fixtures.waiting import wait_for
from tests.fixtures.webgme import StackFactory

pytestmark = pytest.mark.integration

RUN_PY = """
import sys
print("hello from the job", flush=True)
with open("result.txt", "w") as f:
    f.write(str(6 * 7))
"""


def test_reference_worker_runs_a_job_built_by_our_clients(webgme_stack_factory: StackFactory, tmp_path: Path) -> None:
    stack = webgme_stack_factory(worker_refresh_ms=200, nonce="peer-nonce")
    blob = BlobClient(stack.url)
    executor = ExecutorClient(stack.url, nonce="peer-nonce")
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.py").write_text(RUN_PY)
    (src / "executor_config.json").write_text(json.dumps({
        "cmd": "python3", "args": ["run.py"], "outputInterval": 100,
        "resultArtifacts": [{"name": "result", "resultPatterns": ["result.txt"]}],
    }))  # fmt: skip
    job = blob.upload_artifact("job", {name: src / name for name in ("run.py", "executor_config.json")})
    assert executor.create_job(job)["status"] == "CREATED"

    work = tmp_path / "worker"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({stack.url: {"executorNonce": "peer-nonce"}}))
    worker_dir = webgme_dir() / "node_modules" / "webgme-executor-worker"
    with open(work / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            ["node", "-r", str(webgme_dir() / "worker" / "nofile.js"), str(worker_dir / "node_worker.js"),
             str(work / "config.json"), str(work / "executor-temp")],
            cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:

        def finished() -> bool:
            assert worker.poll() is None, (work / "worker.log").read_text()
            return is_finished(executor.get_info(job)["status"])

        wait_for(finished, 90, f"job {job} to finish (log: {work / 'worker.log'})", interval=0.3)
        info = executor.get_info(job)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(10)
    assert info["status"] == "SUCCESS", (work / "worker.log").read_text()[-3000:]
    assert any("hello from the job" in o["output"] for o in executor.get_output(job))
    with blob.open(info["resultHashes"]["result"], subpath="result.txt") as f:
        assert f.read() == b"42"
