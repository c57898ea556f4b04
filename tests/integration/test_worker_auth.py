"""Executor authentication: the worker runs the jobs of its API token's user; tokens never reach a log.

The stack requires a user on every executor request (``executor.authentication`` with guests refused).
The user is webgme's admin account (``WEBGME_authentication_adminAccount``); the API token is created the
way an operator would, with ``POST /rest/tokens/create/<name>``.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import python_config, upload_bundle

pytestmark = pytest.mark.integration

ADMIN = ("admin", "admin-pw-SECRET")


def test_token_authenticated_worker_and_compute(webgme_stack_factory: Any, worker_factory: Any) -> None:
    stack = webgme_stack_factory(
        worker_refresh_ms=250,
        executor_auth=True,
        webgme_auth=True,
        env={"WEBGME_authentication_adminAccount": ":".join(ADMIN)},
    )
    created = requests.post(f"{stack.url}/rest/tokens/create/gpu-box", auth=ADMIN, timeout=30)
    created.raise_for_status()
    token = created.json()["id"]
    jwt = requests.get(f"{stack.url}/api/user/token", auth=ADMIN, timeout=30).json()["webgmeToken"]

    anonymous = worker_factory(stack, wait=False)
    worker = worker_factory(stack, wait=False, env={"DEEPFORGE_WORKER_TOKEN": token})
    executor = ExecutorClient(stack.url, api_token=token)
    wait_for(lambda: worker.client_id in executor.get_workers(), 30, "the token worker to poll")

    # The plugin submits under the user's identity (the JWT), as DeepForge's gme client did.
    compute = get_client("gme", {"host": stack.url, "webgmeToken": jwt})
    bundle = upload_bundle(BlobClient(stack.url), {}, python_config("print('as admin')"))
    job_info = compute.start_job(ComputeJob(hash=bundle))
    updates = list(compute.watch(job_info, poll_interval=0.2))
    assert updates[-1].status == JobStatus.SUCCESS
    assert executor.get_info(bundle)["worker"] == worker.client_id

    wait_for(lambda: "executor poll failed" in anonymous.log(), 30, "the guest worker's refusal to be logged")
    assert anonymous.proc.poll() is None, "a refused worker keeps polling; it never exits on an error"
    assert "403" in anonymous.log() and anonymous.log().count("executor poll failed") == 1
    for log in (worker.log(), anonymous.log()):
        assert token not in log and jwt not in log and "SECRET" not in log
