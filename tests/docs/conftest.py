"""Servers for the docs test, started only when a doc's runnable blocks name them (tests/docs/runner.py).

* ``docs_dev_server``: ``make dev``'s own command (``python -m deepforge_dev.stack dev``, with the Makefile's
  ``DEV_WORKER_CMD``: one ``deepforge-worker``) on a free port, run dir in pytest's temp dir; the docs'
  ``http://127.0.0.1:8888`` becomes its URL and ``.run/dev`` its run dir.
* ``docs_sciserver``: a SciServer contract server with the user ``alice`` and her volume
  ``alice/deepforge_data``, as the SciServer examples assume; its URLs and alice's password go into the
  ``DEEPFORGE_SCISERVER_*`` variables the backends read (its own, ``--export-urls``, for the jobs it runs:
  code in a real SciServer job reaches SciServer by default).
* The docs' S3 URLs become the session's moto server (``s3_server``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from deepforge_dev.stack import free_port, interrupt_then_kill, repo_root

from tests.fixtures.sciserver import SciServerProcess, running_sciserver
from tests.fixtures.waiting import wait_for

DEV_STARTUP_TIMEOUT = 240.0  # s: the database, the server, the demo project, on a loaded 2-core machine


@pytest.fixture(scope="session")
def docs_dev_server(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[tuple[str, str]]:
    """(URL, run dir) of ``make dev``'s command, started once per session."""
    base = tmp_path_factory.mktemp("docs-dev")
    log_path = base / "dev.log"
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "DEEPFORGE_POLICY"}  # the dev stack writes its own
    env.update(
        {
            "DEEPFORGE_PLUGIN_ZMQ_PORT": str(free_port()),  # not the shared default 5555
            "DEEPFORGE_SECRET_KEY": secret_key,
            "DEV_WORKER_CMD": f"{bin_dir / 'deepforge-worker'} start --host {{url}}",  # as the Makefile's
        }
    )
    argv = [sys.executable, "-m", "deepforge_dev.stack", "dev", "--run-dir", str(base / "run"), "--port", str(port)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=repo_root(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"`stack dev` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            return "demo project:" in log_path.read_text(errors="replace")

        wait_for(ready, DEV_STARTUP_TIMEOUT, f"`stack dev` to start (log: {log_path})", interval=0.25)
        url = f"http://127.0.0.1:{port}"

        def worker_polls() -> bool:
            return bool(requests.get(f"{url}/rest/executor/worker", timeout=10).json())

        wait_for(worker_polls, 60, f"the dev stack's worker to poll (log: {log_path})", interval=0.25)
        yield url, str(base / "run")
    finally:
        interrupt_then_kill(proc)


@pytest.fixture(scope="session")
def docs_sciserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment the SciServer examples run with (see the module docstring)."""
    with running_sciserver(tmp_path_factory.mktemp("docs-sciserver"), "--export-urls") as server:
        yield _alice(server)


def _alice(server: SciServerProcess) -> dict[str, str]:
    url = server.url
    password = secrets.token_urlsafe(16)
    server.admin("POST", "users", json={"username": "alice", "password": password})
    login = url + "login-portal/keystone/v3/tokens"
    body = {"auth": {"identity": {"password": {"user": {"name": "alice", "password": password}}}}}
    token = requests.post(login, json=body, timeout=10).headers["X-Subject-Token"]
    created = requests.put(
        url + "fileservice/api/volume/Storage/alice/deepforge_data", headers={"X-Auth-Token": token}, timeout=10
    )
    created.raise_for_status()
    env: dict[str, str] = {}
    for backend in ("SCISERVER_FILES", "SCISERVER_COMPUTE"):
        env[f"DEEPFORGE_{backend}_LOGIN_URL"] = login
        env[f"DEEPFORGE_{backend}_FILE_SERVICE_URL"] = url + "fileservice/api/"
        env[f"DEEPFORGE_{backend}_PASSWORD"] = password
    env["DEEPFORGE_SCISERVER_COMPUTE_RACM_URL"] = url + "racm"
    return env
