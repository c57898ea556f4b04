"""Error paths of the SciServer backends that the contract server does not produce (outages, odd bodies)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import requests
import responses
from deepforge_adapters.compute import ComputeJob
from deepforge_adapters.compute.base import JobStatus
from deepforge_adapters.compute.sciserver_compute import STATUS_TABLE, SciServerCompute
from deepforge_adapters.errors import ComputeError, ConfigError, StorageError
from deepforge_adapters.sciserver.session import server_message
from deepforge_adapters.storage.sciserver_files import SciServerFilesStorage, check_name, normalize_volume

BASE = "http://sciserver.test/"
LOGIN = BASE + "login-portal/keystone/v3/tokens"
FILES = BASE + "fileservice/api/"
RACM = BASE + "racm"
CREDENTIALS = {"username": "alice", "token": "tok-secret-1234", "loginUrl": LOGIN, "fileServiceUrl": FILES}
CONFIG = {**CREDENTIALS, "volume": "alice/persistent"}  # sciserver-files on a volume every user has


def response(status: int, body: object) -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = json.dumps(body).encode() if not isinstance(body, bytes) else body
    r.reason = "Internal Server Error" if status == 500 else "X"
    return r


def test_server_message_shapes() -> None:
    assert server_message(response(500, {"status": "error", "error": "Volume does not exist"})) == (
        "HTTP 500: Volume does not exist"
    )
    assert server_message(response(500, {"error": {"message": "HTTP/1.1 401 Unauthorized", "time": 1}})) == (
        "HTTP 500: HTTP/1.1 401 Unauthorized"
    )
    spring = {"timestamp": "t", "status": 401, "error": "Unauthorized", "message": "Full auth", "path": "/x"}
    assert server_message(response(401, spring)) == "HTTP 401: Unauthorized: Full auth"
    assert server_message(response(413, b"<html>too large</html>")) == "HTTP 413: <html>too large</html>"
    assert server_message(response(502, b"")) == "HTTP 502: X"


def test_status_table_covers_the_eight_bit_flags() -> None:
    assert [STATUS_TABLE[c].status for c in (1, 2, 4, 8, 16, 32, 64, 128)] == [
        JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RUNNING,
        JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELED,
    ]  # fmt: skip
    assert STATUS_TABLE[3].status == JobStatus.FAILED and "unknown job status 3" in (STATUS_TABLE[3].reason or "")


def test_names_and_volumes() -> None:
    assert normalize_volume("Storage/alice/data", "Storage") == "alice/data"
    assert normalize_volume("/alice/data/", "Storage") == "alice/data"
    assert check_name("x", "a//b/") == "a/b"
    for bad in ("", "/", "a/../b", "./a"):
        with pytest.raises(StorageError):
            check_name("x", bad)


@responses.activate
def test_transient_502_is_retried_but_500_is_not() -> None:
    url = FILES + "jsontree/Storage/alice/persistent/d"
    responses.get(url, status=502)
    responses.get(url, json={"root": {"name": "d", "files": [{"name": "f", "size": 1, "lastModified": "t"}]}})
    files = SciServerFilesStorage(CONFIG)
    assert files.stat("d/f").data["size"] == 1
    responses.get(
        FILES + "jsontree/Storage/alice/persistent/e",
        status=500,
        json={"status": "error", "error": "Error when listing contents of 'e'. Path does not exist."},
    )
    with pytest.raises(StorageError, match="Path does not exist"):
        files.stat("e/f")
    assert (
        len([c for c in responses.calls if c.request.url.startswith(FILES + "jsontree/Storage/alice/persistent/e")])
        == 1
    )


@responses.activate
def test_malformed_jsontree_is_a_clear_error() -> None:
    responses.get(FILES + "jsontree/Storage/alice/persistent/d", body=b"<html>proxy page</html>")
    with pytest.raises(StorageError, match="unexpected jsontree answer"):
        SciServerFilesStorage(CONFIG).stat("d/f")


@responses.activate
def test_unreachable_login_portal_names_no_secret() -> None:
    responses.post(LOGIN, body=requests.ConnectionError("boom"))
    files = SciServerFilesStorage({**CONFIG, "token": None, "password": "pw-secret-5678"})
    with pytest.raises(StorageError, match="cannot reach the SciServer login portal") as exc:
        files.stat("a")
    assert "pw-secret-5678" not in str(exc.value)


@responses.activate
def test_whoami_failure_does_not_leak_the_token() -> None:
    responses.get(LOGIN + "/tok-secret-1234", body=requests.ConnectionError("no route to tok-secret-1234"))
    files = SciServerFilesStorage({**CONFIG, "username": None, "volume": None})  # USERNAME/deepforge_data
    with pytest.raises(StorageError) as exc:
        _ = files.volume
    assert "tok-secret-1234" not in str(exc.value)


@responses.activate
def test_submission_500_carries_the_server_message(tmp_path: Path) -> None:
    domain = {
        "name": "Small Jobs Domain",
        "apiEndpoint": "http://d/1/",
        "images": [{"name": "DeepForge"}],
        "userVolumes": [],
    }
    responses.get(RACM + "/jobm/rest/computedomains", json=[domain])
    message = "Error in job submission for user alice\n\tError creating DockerJob\nNo valid Docker image"
    responses.post(RACM + "/jobm/rest/jobs/docker", status=500, json={"status": "error", "error": message})
    compute = SciServerCompute({**CREDENTIALS, "racmUrl": RACM})
    uploads: list[str] = []
    deleted: list[str] = []

    class FakeScratch:
        def put_file_stream(self, name: str, src: io.BufferedReader, size: int | None = None) -> None:
            uploads.append(name)

        def delete_dir(self, prefix: str) -> None:
            deleted.append(prefix)

    compute.scratch = lambda: FakeScratch()  # type: ignore[assignment,method-assign,return-value]
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "executor_config.json").write_text('{"cmd": "true"}')
    with pytest.raises(ComputeError, match="No valid Docker image"):
        compute.start_job(ComputeJob(bundle=bundle, hash="h"))
    assert uploads and deleted == [uploads[0].rsplit("/", 1)[0]]  # scratch folder removed after the failure


@pytest.mark.parametrize("field", ["loginUrl", "fileServiceUrl"])
def test_service_urls_must_be_plain_urls(field: str) -> None:
    """The token is bound to these URLs, so one with user info or a query is a config error naming the field."""
    for bad in ("http://user@sciserver.test/x/", "http://sciserver.test/x/?a=1", "ftp://sciserver.test/"):
        with pytest.raises(ConfigError, match=field):
            SciServerFilesStorage({**CONFIG, field: bad})
