"""The storage conformance suite (``deepforge_adapters.testing.storage``) against every registered backend.

Parametrised over the storage registry: a backend that is registered (built in or by entry point) but has no
fixture here FAILS every test, so a new backend cannot ship without running the suite.  Each fixture gives a
fresh store or namespace on a real server: local (a temp root), gme (the WebGME server fixture), s3 (the
SeaweedFS server fixture, a fresh bucket), sciserver-files (the SciServer contract server, a fresh user).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import boto3
import pytest
from deepforge_adapters.storage import DataInfo, registry
from deepforge_adapters.storage.gme import GmeStorage
from deepforge_adapters.storage.local import LocalStorage
from deepforge_adapters.storage.s3 import S3Storage
from deepforge_adapters.storage.sciserver_files import SciServerFilesStorage
from deepforge_adapters.testing.storage import StorageBackend, StorageConformance
from deepforge_dev.stack import WebGMEStack

from tests.fixtures.sciserver import SciServerHandle

pytestmark = pytest.mark.integration


def _overwrite(path: Path, data: bytes) -> None:
    """Rewrite a file in place as another writer would (even a read-only one), bumping its mtime."""
    before = path.stat()
    os.chmod(path, before.st_mode | stat.S_IWUSR)
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    os.chmod(path, before.st_mode)


@pytest.fixture
def local_backend(tmp_path: Path) -> StorageBackend:
    client = LocalStorage({"root": str(tmp_path / "store")})
    return StorageBackend(client, tamper=lambda info, data: _overwrite(client.path_for(info.data["filename"]), data))


@pytest.fixture
def gme_backend(webgme_server: WebGMEStack) -> StorageBackend:
    client = GmeStorage({"host": webgme_server.url})

    def tamper(info: DataInfo, data: bytes) -> None:
        content = client.get_metadata(info)["content"]  # the server keeps a file's bytes under their sha1
        _overwrite(webgme_server.blob_dir / "wg-content" / content[:2] / content[2:], data)

    return StorageBackend(
        client,
        tamper=tamper,
        stat_name=lambda info, name: str(info.data),  # the blob has no paths: stat takes a metadata hash
        missing_name=hashlib.sha1(b"conformance: never uploaded").hexdigest(),
        deletes=False,  # WebGME's blob is immutable: delete_file/delete_dir are documented, logged no-ops
    )


@pytest.fixture
def s3_backend(real_s3_config: dict[str, Any]) -> StorageBackend:
    s3_config = real_s3_config  # SeaweedFS: a server that checks signatures and serves real ranged GETs
    client = S3Storage(s3_config)
    raw = boto3.client(
        "s3",
        endpoint_url=s3_config["endpoint"],
        aws_access_key_id=s3_config["accessKeyId"],
        aws_secret_access_key=s3_config["secretAccessKey"],
        region_name=s3_config["region"],
    )

    def tamper(info: DataInfo, data: bytes) -> None:
        raw.put_object(Bucket=info.data["bucketName"], Key=info.data["filename"], Body=data)

    return StorageBackend(client, tamper=tamper)


@pytest.fixture
def sciserver_backend(sciserver: SciServerHandle) -> StorageBackend:
    client = SciServerFilesStorage(sciserver.config())
    return StorageBackend(
        client,
        tamper=lambda info, data: _overwrite(
            sciserver.volume_path(name="deepforge_data") / info.data["filename"], data
        ),
    )


FIXTURES = {
    "local": "local_backend",
    "gme": "gme_backend",
    "s3": "s3_backend",
    "sciserver-files": "sciserver_backend",
}


@pytest.fixture(params=registry.ids())
def storage_backend(request: pytest.FixtureRequest) -> StorageBackend:
    fixture = FIXTURES.get(request.param)
    if fixture is None:
        pytest.fail(
            f"storage backend {request.param!r} is registered but has no conformance fixture: add one to "
            f"FIXTURES in {__name__} (a configured client on a real store, and a tamper function)"
        )
    backend = request.getfixturevalue(fixture)
    assert isinstance(backend, StorageBackend) and backend.client.id == request.param
    return backend


class TestStorageConformance(StorageConformance):
    """Every test of the suite, once per registered storage backend."""
