"""Issue 16, item 10: ``deepforge-worker check`` detects an API token the server does not know.

WebGME's executor maps an unknown ``x-api-token`` to no user and then answers it like a valid one (the
worker list, the job list: all empty), so ``check`` used to print "connection ok" for a worker that could
never get a job.  Against a real WebGME server with executor authentication on (guests refused), ``check``
with a valid token names the token's user and exits 0; with an unknown token it fails and says why; with no
token it fails (the server refuses it).  A real worker with the valid token still runs a job afterwards,
so the probe ``check`` leaves on the server (a CANCELED job record) is harmless.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import python_config, upload_bundle

pytestmark = pytest.mark.integration

ADMIN = ("admin", "admin-pw-SECRET")


def check(url: str, tmp_path: Path, token: str | None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "deepforge_worker.cli", "check", "--host", url, "--work-dir", str(tmp_path / "j")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFORGE_")}
    if token is not None:
        env["DEEPFORGE_WORKER_TOKEN"] = token
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def test_check_tells_a_valid_an_unknown_and_no_token_apart(
    webgme_stack_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    stack = webgme_stack_factory(
        worker_refresh_ms=250,
        executor_auth=True,
        webgme_auth=True,
        allow_guests=False,
        env={"WEBGME_authentication_adminAccount": ":".join(ADMIN)},
    )
    created = requests.post(f"{stack.url}/rest/tokens/create/check-{uuid.uuid4().hex[:8]}", auth=ADMIN, timeout=30)
    created.raise_for_status()
    token = created.json()["id"]
    unknown = str(uuid.uuid4())  # the shape of a real token, never issued

    valid = check(stack.url, tmp_path, token)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert "token ok: this worker runs the jobs of user admin" in valid.stdout

    bad = check(stack.url, tmp_path, unknown)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "connection ok" in bad.stdout  # the executor did answer...
    assert "does not know this API token" in bad.stderr  # ...but for nobody
    assert "token ok" not in bad.stdout

    anonymous = check(stack.url, tmp_path, None)
    assert anonymous.returncode == 1, anonymous.stdout + anonymous.stderr
    assert "FAILED" in anonymous.stderr and "connection ok" not in anonymous.stdout

    for result in (valid, bad, anonymous):
        assert token not in result.stdout + result.stderr and unknown not in result.stdout + result.stderr

    # The probe record is a canceled job no worker claims; a worker with the valid token still runs jobs.
    from deepforge_adapters.webgme.executor import IDENTITY_PROBE_HASH  # (after the asserts that fail on main)

    # (the last probe was the unknown token's: the record is that caller's, so it is read with that token)
    assert ExecutorClient(stack.url, api_token=unknown).get_info(IDENTITY_PROBE_HASH)["status"] == "CANCELED"
    executor = ExecutorClient(stack.url, api_token=token)
    worker = worker_factory(stack, wait=False, env={"DEEPFORGE_WORKER_TOKEN": token})
    wait_for(lambda: worker.client_id in executor.get_workers(), 30, "the token worker to poll")
    bundle = upload_bundle(BlobClient(stack.url, api_token=token), {}, python_config("print('ran')"))
    executor.create_job(bundle)
    wait_for(lambda: executor.get_info(bundle)["status"] == "SUCCESS", 60, "the job to succeed")
    assert ExecutorClient(stack.url, api_token=unknown).get_info(IDENTITY_PROBE_HASH)["status"] == "CANCELED"
