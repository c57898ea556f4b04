"""Issue 16, item 5: an executor job hash is never used as a path.

WebGME's executor accepts any string as a job hash (``POST /rest/executor/create/%2Ftmp%2Fvictim``).  A real
``deepforge-worker`` given such jobs must not touch the named directory, must end each job in a failed
state (not RUNNING, so it is not requeued forever) and must go on serving good jobs.  Local compute's
``purge_job`` must only ever delete under its own work dir, whatever ``jobDir`` a job_info names.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_adapters.compute import get_client
from deepforge_adapters.compute.local import LocalCompute
from deepforge_adapters.errors import ComputeError
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient, is_finished

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import python_config, upload_bundle

pytestmark = pytest.mark.integration

DEADLINE = 60.0


def victim_dir(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return victim


def test_worker_refuses_job_hashes_that_are_paths(webgme_server: Any, worker_factory: Any, tmp_path: Path) -> None:
    victim = victim_dir(tmp_path)
    worker = worker_factory(webgme_server)
    executor = ExecutorClient(webgme_server.url)

    def rest(verb: str, job_hash: str, **kwargs: Any) -> requests.Response:
        """The executor REST API as an attacker (or any client) calls it: the hash percent-encoded."""
        segment = urllib.parse.quote(job_hash, safe="").replace(".", "%2E")
        response = requests.request(
            "POST" if verb == "create" else "GET", f"{webgme_server.url}/rest/executor/{verb}/{segment}", **kwargs
        )
        assert response.status_code in (200, 201), (verb, job_hash, response.status_code, response.text)
        return response

    relative = "../" * 12 + str(victim).lstrip("/")
    bad = [str(victim), relative, "..", str(victim) + "/../victim"]
    for job_hash in bad:
        rest("create", job_hash, json={"hash": job_hash, "labels": []}, timeout=30)

    def ended(job_hash: str) -> str | None:
        status = rest("info", job_hash, timeout=30).json().get("status")
        return status if is_finished(status) else None

    for job_hash in bad:
        status = wait_for(lambda h=job_hash: ended(h), DEADLINE, f"bad job {job_hash!r} to be failed")
        assert status.startswith("FAILED"), status
        output = "".join(chunk.get("output", "") for chunk in rest("output", job_hash, timeout=30).json())
        assert "not a blob hash" in output, output
    assert (victim / "precious.txt").read_text() == "keep me"

    # ... and the worker still runs a good job.
    good = upload_bundle(BlobClient(webgme_server.url), {}, python_config("print('still serving')"))
    executor.create_job(good)
    assert wait_for(lambda: ended(good), DEADLINE, "the good job to end") == "SUCCESS"
    assert worker.proc.poll() is None
    assert (victim / "precious.txt").read_text() == "keep me"


def test_local_purge_never_deletes_a_job_dir_named_by_job_info(tmp_path: Path) -> None:
    victim = victim_dir(tmp_path)
    compute = get_client("local", {"workDir": str(tmp_path / "compute")})
    assert isinstance(compute, LocalCompute)
    job_hash = "ab" * 20
    (tmp_path / "compute" / "jobs" / job_hash).mkdir(parents=True)

    compute.purge_job({"hash": job_hash, "jobDir": str(victim), "workDir": str(victim.parent)})
    assert (victim / "precious.txt").read_text() == "keep me"
    assert not (tmp_path / "compute" / "jobs" / job_hash).exists()  # the derived dir is what is purged

    for bad in ("..", str(victim), "../" * 8 + str(victim).lstrip("/")):
        with pytest.raises(ComputeError, match="40 lowercase hex"):
            compute.purge_job({"hash": bad})
    assert (victim / "precious.txt").read_text() == "keep me"
    assert (tmp_path / "compute").is_dir()


def test_sciserver_purge_only_deletes_a_scratch_folder_it_created(sciserver: Any) -> None:
    """The same rule for SciServer Compute: a job_info's scratchDir must be one ``start_job`` could name."""
    from deepforge_adapters.compute.sciserver_compute import SciServerCompute

    made = get_client("sciserver-compute", sciserver.config(racmUrl=sciserver.racm_url))
    assert isinstance(made, SciServerCompute)
    scratch = sciserver.volume_path("Temporary", "scratch")
    precious = scratch / "precious"
    precious.mkdir(parents=True, exist_ok=True)
    (precious / "data.txt").write_text("keep me")
    for forged in (".", "precious", "deepforge-jobs/../precious", "deepforge-jobs"):
        with pytest.raises(ComputeError, match="not a folder this backend created"):
            made.purge_job({"id": 1, "hash": "h", "scratchDir": forged})
    assert (precious / "data.txt").read_text() == "keep me"
    own = scratch / "deepforge-jobs" / f"{'ab' * 20}-0123abcd"
    own.mkdir(parents=True)
    made.purge_job({"id": 1, "hash": "ab" * 20, "scratchDir": f"deepforge-jobs/{own.name}"})
    assert not own.exists()
