"""The compute conformance suite (:mod:`deepforge_adapters.testing.compute`) for every registered backend.

Each built-in backend runs against the real thing: ``local`` with real supervisor processes, ``gme``
against a real WebGME server and a real ``deepforge-worker``, ``sciserver-compute`` against the SciServer
contract server.  The suite is parametrised over the compute registry: a backend registered without a
fixture here fails (it is not skipped).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import compute
from deepforge_adapters.compute import ComputeJob
from deepforge_adapters.storage import StorageClient
from deepforge_adapters.testing.compute import ComputeBackend, ComputeConformance
from deepforge_adapters.webgme.blob import BlobClient

from tests.fixtures.sciserver import SciServerHandle
from tests.fixtures.slurm import SlurmCluster
from tests.fixtures.worker import upload_bundle

pytestmark = pytest.mark.integration

#: Compute backend id -> the fixture below that makes its ComputeBackend.
FIXTURES = {
    "local": "local_backend",
    "gme": "gme_backend",
    "sciserver-compute": "sciserver_backend",
    "ray": "ray_backend",
    "slurm": "slurm_backend",
}


def bundle_dir(root: Path, files: Mapping[str, bytes], argv: Sequence[str]) -> Path:
    """A job bundle directory: ``files`` plus an ``executor_config.json`` running ``argv``."""
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "executor_config.json").write_text(json.dumps({"cmd": argv[0], "args": list(argv[1:])}))
    return root


@pytest.fixture
def shared_dir(tmp_path: Path) -> Path:
    path = tmp_path / "signals"
    path.mkdir()
    return path


@pytest.fixture
def local_backend(
    tmp_path: Path, job_env: dict[str, str], local_storage: StorageClient, shared_dir: Path
) -> ComputeBackend:
    counter = iter(range(1000))

    def make_job(files: Mapping[str, bytes], argv: Sequence[str]) -> ComputeJob:
        return ComputeJob(bundle=bundle_dir(tmp_path / f"bundle{next(counter)}", files, argv), name="conformance")

    config = {"workDir": str(tmp_path / "compute"), "processes": 1}
    return ComputeBackend("local", config, make_job, local_storage, shared_dir)


@pytest.fixture
def gme_backend(
    webgme_server: Any, worker_factory: Any, local_storage: StorageClient, shared_dir: Path
) -> ComputeBackend:
    worker_factory(webgme_server)
    blob = BlobClient(webgme_server.url)

    def make_job(files: Mapping[str, bytes], argv: Sequence[str]) -> ComputeJob:
        # The executor protocol streams stdout only and archives stderr in job_stderr.txt, as the Node worker
        # does (issue 18 item 7); a job that wants its stderr live merges it itself, as our runner does.
        config = {
            "cmd": "sh",
            "args": ["-c", 'exec "$0" "$@" 2>&1', *argv],
            "outputInterval": 100,
            "resultArtifacts": [
                {"name": "stdout", "resultPatterns": ["job_stdout.txt"]},
                {"name": "results", "resultPatterns": ["results.json"]},
            ],
        }
        return ComputeJob(hash=upload_bundle(blob, dict(files), config), name="conformance")

    return ComputeBackend("gme", {"host": webgme_server.url}, make_job, local_storage, shared_dir, python="python3")


@pytest.fixture
def sciserver_backend(
    sciserver: SciServerHandle, tmp_path: Path, local_storage: StorageClient, shared_dir: Path
) -> ComputeBackend:
    counter = iter(range(1000))

    def make_job(files: Mapping[str, bytes], argv: Sequence[str]) -> ComputeJob:
        return ComputeJob(bundle=bundle_dir(tmp_path / f"bundle{next(counter)}", files, argv), name="conformance")

    config = sciserver.config(racmUrl=sciserver.racm_url)
    return ComputeBackend("sciserver-compute", config, make_job, local_storage, shared_dir)


@pytest.fixture
def ray_backend(ray_head: Any, tmp_path: Path, local_storage: StorageClient, shared_dir: Path) -> ComputeBackend:
    counter = iter(range(1000))

    def make_job(files: Mapping[str, bytes], argv: Sequence[str]) -> ComputeJob:
        return ComputeJob(bundle=bundle_dir(tmp_path / f"bundle{next(counter)}", files, argv), name="conformance")

    return ComputeBackend("ray", {"dashboardUrl": ray_head.url}, make_job, local_storage, shared_dir)


@pytest.fixture
def slurm_backend(
    slurm_cluster: SlurmCluster, tmp_path: Path, job_env: dict[str, str], local_storage: StorageClient
) -> ComputeBackend:
    """A real Slurm (tests/fixtures/slurm.py), CLI transport; output through its shared directory."""
    counter = iter(range(1000))
    signals = slurm_cluster.shared / f"signals-{tmp_path.name}"
    signals.mkdir()

    def make_job(files: Mapping[str, bytes], argv: Sequence[str]) -> ComputeJob:
        return ComputeJob(bundle=bundle_dir(tmp_path / f"bundle{next(counter)}", files, argv), name="conformance")

    return ComputeBackend("slurm", slurm_cluster.config(), make_job, local_storage, signals)


def test_every_registered_compute_backend_has_a_conformance_fixture() -> None:
    assert set(compute.registry.ids()) <= set(FIXTURES), "add a fixture for it to tests/conformance"


class TestComputeConformance(ComputeConformance):
    @pytest.fixture(params=compute.registry.ids())
    def compute_backend(self, request: pytest.FixtureRequest) -> ComputeBackend:
        backend_id = request.param
        if backend_id not in FIXTURES:
            pytest.fail(f"compute backend {backend_id!r} is registered but has no conformance fixture in {__file__}")
        backend = request.getfixturevalue(FIXTURES[backend_id])
        assert isinstance(backend, ComputeBackend)
        return backend
