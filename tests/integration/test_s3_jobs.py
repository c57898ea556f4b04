"""s3 with the rest of the system: the worker cache, and a job bundle run through local compute and the worker.

Against the real S3 server (SeaweedFS, ``real_s3_config``): the job's runner signs with the credentials its
bundle carries, so a bundle that lost or garbled them fails here (moto would accept any secret).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.compute import ComputeClient, ComputeJob, JobStatus, JobUpdate
from deepforge_adapters.compute import get_client as get_compute
from deepforge_adapters.compute.local import LocalCompute
from deepforge_adapters.errors import IntegrityError
from deepforge_adapters.storage import DataInfo, get_client
from deepforge_adapters.storage.cache import WorkerCache
from deepforge_adapters.storage.s3 import S3Storage
from deepforge_adapters.webgme.blob import BlobClient

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_config(real_s3_config: dict[str, Any]) -> dict[str, Any]:
    return real_s3_config


@pytest.fixture
def s3(s3_config: dict[str, Any]) -> S3Storage:
    client = get_client("s3", s3_config)
    assert isinstance(client, S3Storage)
    return client


def test_worker_cache_never_serves_an_overwritten_object_stale(s3: S3Storage, tmp_path: Path) -> None:
    cache = WorkerCache(tmp_path / "cache")
    first = s3.put_file_stream("proj/executions/op/model", io.BytesIO(b"run 1 weights"))
    assert cache.fetch(s3, first).read_bytes() == b"run 1 weights"

    # A re-run writes the same key (DeepForge reuses <project>/executions/<op>/<name>).
    second = s3.put_file_stream("proj/executions/op/model", io.BytesIO(b"run 2 weights, longer"))
    path = cache.fetch(s3, second)
    assert path.read_bytes() == b"run 2 weights, longer"
    assert path != cache.path_for(s3, first)
    # The old dataInfo still names the old content: served from its own entry, never mixed up.
    assert cache.fetch(s3, first).read_bytes() == b"run 1 weights"

    # Without a cached copy, an outdated dataInfo is refused rather than filled with the new bytes.
    with pytest.raises(IntegrityError, match="PreconditionFailed"):
        WorkerCache(tmp_path / "cold").fetch(s3, first)


def test_put_file_stream_from_open_files(s3: S3Storage, tmp_path: Path) -> None:
    src = tmp_path / "out.bin"
    src.write_bytes(bytes(range(256)) * 40)
    with open(src, "rb") as f:  # a regular file at offset 0: uploaded by path
        info = s3.put_file_stream("f/whole", f, size=10240)
    with open(src, "rb") as f:
        f.seek(240)  # mid-file: uploads from the current position, as any readable
        rest = s3.put_file_stream("f/rest", f)
    with s3.get_file_stream(info) as a, s3.get_file_stream(rest) as b:
        assert a.read() == src.read_bytes() and b.read() == src.read_bytes()[240:]


REVERSE = """
import os
data = open("artifacts/weights", "rb").read()
os.makedirs("outputs/reversed")
open("outputs/reversed/data", "wb").write(data[::-1])
print("reversed", len(data), "bytes")
"""


def _reverse_bundle(s3: S3Storage, s3_config: dict[str, Any], make_bundle: Callable[..., Path]) -> Path:
    weights = s3.put_file_stream("data/weights", io.BytesIO(b"0123456789" * 1000))
    bundle = make_bundle(
        REVERSE,
        inputs={"weights": weights},
        outputs=["reversed"],
        storage_id="s3",
        storage_dir="guest+proj/executions/_K_a_b",
        storage_config=s3_config,
    )
    secret = s3_config["secretAccessKey"]
    for f in bundle.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f"{f} carries the S3 secret in plain text"
    return bundle


def _check_reversed(
    compute: ComputeClient, info: dict[str, Any], s3: S3Storage, s3_config: dict[str, Any], poll: float
) -> None:
    updates = list(compute.watch(info, poll_interval=poll))
    output = "".join(u.output for u in updates if u.kind == "output")
    assert updates[-1] == JobUpdate("end", status=JobStatus.SUCCESS), output
    assert "reversed 10000 bytes" in output
    assert s3_config["secretAccessKey"] not in output
    results = compute.get_results_info(info)
    result = DataInfo.from_json(results["reversed"]["dataInfo"])
    assert result.backend == "s3"
    assert re.fullmatch(r"guest\+proj/executions/_K_a_b/\d{8}T\d{6}Z-[0-9a-f]{8}/reversed", result.data["filename"])
    assert result.data["bucketName"] == s3.bucket and result.data["endpoint"] == s3.endpoint
    with s3.get_file_stream(result) as f:
        assert f.read() == (b"0123456789" * 1000)[::-1]
    assert json.loads(json.dumps(results)) == results


def test_job_bundle_with_s3_storage_runs_on_local_compute(
    job_env: dict[str, str],
    s3: S3Storage,
    s3_config: dict[str, Any],
    make_bundle: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEEPFORGE_WORKER_CACHE")  # jobs share <workDir>/cache
    compute = get_compute("local", {"workDir": str(tmp_path / "compute"), "processes": 1})
    assert isinstance(compute, LocalCompute)
    bundle = _reverse_bundle(s3, s3_config, make_bundle)
    info = compute.start_job(ComputeJob(bundle=bundle, name="reverse"))
    _check_reversed(compute, info, s3, s3_config, poll=0.1)


def test_job_bundle_with_s3_storage_runs_on_the_worker(
    job_env: dict[str, str],
    s3: S3Storage,
    s3_config: dict[str, Any],
    make_bundle: Callable[..., Path],
    webgme_server: Any,
    worker_factory: Any,
) -> None:
    """The same bundle as a blob artifact, claimed and run by a real deepforge-worker (gme compute)."""
    worker_factory(webgme_server, env={secrets.KEY_ENV: job_env[secrets.KEY_ENV]})
    bundle = _reverse_bundle(s3, s3_config, make_bundle)
    files = {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}
    bundle_hash = BlobClient(webgme_server.url).upload_artifact("reverse", files)
    compute = get_compute("gme", {"host": webgme_server.url})
    info = compute.start_job(ComputeJob(hash=bundle_hash, name="reverse"))
    _check_reversed(compute, info, s3, s3_config, poll=0.2)
