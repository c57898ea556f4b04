"""Issue 16, item 4: credentials are bound to the endpoint they were configured for.

A dataInfo is data: it travels in models, job bundles and results that other users write.  Before the fix an
``s3`` dataInfo whose ``endpoint`` named an attacker's server made ``get_file``/``copy``/``delete``/the worker
cache send requests signed with the *reader's* access key id and session token there, and ``copy`` (what the
Output operation runs on the server) stored the attacker's bytes in the real bucket.  A ``sciserver-files``
dataInfo could walk out of the FileService with ``..`` segments and hand the user's token to other SciServer
APIs.  Now every such dataInfo is refused before any request, naming both endpoints.

Real servers only: the moto S3 server (``s3_server``), the SciServer contract server (``sciserver``), an
attacker's HTTP listener on 127.0.0.1 that records every request, and the real runner subprocess.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from deepforge_adapters import storage
from deepforge_adapters.errors import DataInfoError, DeepForgeError
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage.cache import WorkerCache
from deepforge_adapters.storage.s3 import S3Storage
from deepforge_adapters.storage.sciserver_files import SciServerFilesStorage

from tests.fixtures.attacker import AttackerServer
from tests.fixtures.jobs import last_line, run_runner
from tests.fixtures.sciserver import SciServerHandle

pytestmark = pytest.mark.integration

ATTACKER_BYTES = b"attacker's bytes, not the model's"
ATTACKER_ETAG = f'"{hashlib.md5(ATTACKER_BYTES).hexdigest()}"'  # consistent, so nothing but the fix refuses them
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN-item04"


# ---------------------------------------------------------------------------------------------- attacker
@pytest.fixture
def attacker() -> Iterator[AttackerServer]:
    """The attacker answers like an object server, so a client that followed the dataInfo would get bytes."""
    server = AttackerServer(answer="object", body=ATTACKER_BYTES, etag=ATTACKER_ETAG).start()
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------- s3
@pytest.fixture
def s3_victim(s3_config: dict[str, Any]) -> dict[str, Any]:
    """The reader's config: the real server, with a session token so we can see whether it travels."""
    return {**s3_config, "sessionToken": SESSION_TOKEN}


@pytest.fixture
def s3(s3_victim: dict[str, Any]) -> S3Storage:
    client = storage.get_client("s3", s3_victim)
    assert isinstance(client, S3Storage)
    return client


def evil_info(endpoint: str, bucket: str, key: str = "proj/executions/op/model", **extra: Any) -> DataInfo:
    """What an attacker writes into a model: a well-formed s3 dataInfo whose endpoint is theirs."""
    data = {
        "filename": key,
        "bucketName": bucket,
        "endpoint": endpoint,
        "ETag": ATTACKER_ETAG,
        "ContentLength": len(ATTACKER_BYTES),
        "size": len(ATTACKER_BYTES),
        "LastModified": "2026-12-01T10:00:00.000Z",
        **extra,
    }
    return DataInfo("s3", data)


def bucket_keys(config: dict[str, Any]) -> list[str]:
    raw = boto3.client(
        "s3",
        endpoint_url=config["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=config["accessKeyId"],
        aws_secret_access_key=config["secretAccessKey"],
    )
    try:
        return [o["Key"] for o in raw.list_objects_v2(Bucket=config["bucketName"]).get("Contents", [])]
    except raw.exceptions.NoSuchBucket:
        return []


def assert_refused(call: Callable[[], Any], named: str, configured: str) -> str:
    """``call`` raises our error, and its message names the dataInfo's endpoint and the configured one."""
    with pytest.raises(DeepForgeError) as caught:
        call()
    message = str(caught.value)
    assert named in message and configured in message, message
    return message


def assert_nothing_reached(listener: AttackerServer, *secrets: str) -> None:
    assert listener.leaked(*secrets) == [], "credentials reached the attacker"
    assert listener.requests == [], f"the attacker's listener got requests: {listener.requests}"


def test_s3_get_file_of_a_foreign_endpoint_is_refused_before_any_request(
    s3: S3Storage, s3_victim: dict[str, Any], attacker: AttackerServer, tmp_path: Path
) -> None:
    info = evil_info(attacker.url, s3.bucket)
    dest = tmp_path / "input"
    assert_refused(lambda: s3.get_file(info, dest), attacker.url, s3.endpoint)
    assert_refused(lambda: s3.get_file_stream(info).read(), attacker.url, s3.endpoint)
    assert not dest.exists()
    assert_nothing_reached(attacker, s3_victim["accessKeyId"], SESSION_TOKEN)


def test_s3_copy_from_a_foreign_endpoint_stores_nothing_in_the_real_bucket(
    s3: S3Storage, s3_victim: dict[str, Any], attacker: AttackerServer
) -> None:
    """What the Output operation does on the server: copy the job's result into the project's bucket."""
    s3.put_file_stream("proj/real", io.BytesIO(b"the real model"))
    before = bucket_keys(s3_victim)
    info = evil_info(attacker.url, s3.bucket)
    assert_refused(lambda: s3.copy(info, "proj/outputs/model"), attacker.url, s3.endpoint)
    assert bucket_keys(s3_victim) == before == ["proj/real"]
    assert_nothing_reached(attacker, s3_victim["accessKeyId"], SESSION_TOKEN)


def test_s3_stat_metadata_cache_key_url_and_delete_of_a_foreign_endpoint_are_refused(
    s3: S3Storage, s3_victim: dict[str, Any], attacker: AttackerServer
) -> None:
    info = evil_info(attacker.url, s3.bucket)
    for call in (
        lambda: s3.get_metadata(info),
        lambda: s3.get_cache_key(info),
        lambda: s3.get_download_url(info),  # a pre-signed URL carries the access key id and the token
        lambda: s3.delete_file(info),
    ):
        assert_refused(call, attacker.url, s3.endpoint)
    assert_nothing_reached(attacker, s3_victim["accessKeyId"], SESSION_TOKEN)


def test_s3_worker_cache_fetch_of_a_foreign_endpoint_is_refused(
    s3: S3Storage, s3_victim: dict[str, Any], attacker: AttackerServer, tmp_path: Path
) -> None:
    cache = WorkerCache(tmp_path / "cache")
    info = evil_info(attacker.url, s3.bucket)
    assert_refused(lambda: cache.fetch(s3, info), attacker.url, s3.endpoint)
    assert cache.total_bytes() == 0
    assert not any(p.is_file() and p.read_bytes() == ATTACKER_BYTES for p in (tmp_path / "cache").rglob("*"))
    assert_nothing_reached(attacker, s3_victim["accessKeyId"], SESSION_TOKEN)


@pytest.mark.parametrize(
    "shape",
    [
        "userinfo",  # http://user@127.0.0.1:<attacker>/
        "real-as-userinfo",  # http://127.0.0.1:<real>@127.0.0.1:<attacker>/ : looks like the real one
        "other-scheme-case-port",  # HTTP://127.0.0.1:<attacker>/ (normalised, still the attacker)
    ],
)
def test_s3_endpoint_disguises_are_refused(
    s3: S3Storage, s3_victim: dict[str, Any], attacker: AttackerServer, tmp_path: Path, shape: str
) -> None:
    host_port = attacker.url.removeprefix("http://")
    real = s3_victim["endpoint"].removeprefix("http://")
    endpoint = {
        "userinfo": f"http://user:pw@{host_port}/",
        "real-as-userinfo": f"http://{real}@{host_port}/",
        "other-scheme-case-port": f"HTTP://{host_port}/",
    }[shape]
    with pytest.raises(DeepForgeError) as caught:
        s3.get_file(evil_info(endpoint, s3.bucket), tmp_path / "x")
    message = str(caught.value)
    assert host_port in message and s3.endpoint in message, message
    assert "pw" not in message.replace(host_port, "")  # userinfo is never echoed
    assert_nothing_reached(attacker, s3_victim["accessKeyId"], SESSION_TOKEN)


@pytest.mark.parametrize(
    ("bucket", "key"),
    [
        ("arn:aws:s3:us-east-1:123456789012:accesspoint/evil", "k"),  # botocore would route an ARN to another host
        ("evil@127.0.0.1", "k"),
        ("a..b", "k"),
        (None, "../../other-bucket/k"),
        (None, "proj/./x/../../k"),
    ],
)
def test_s3_bucket_and_key_cannot_smuggle_another_location(
    s3: S3Storage, s3_victim: dict[str, Any], tmp_path: Path, bucket: str | None, key: str
) -> None:
    """Refused while reading the dataInfo (DataInfoError), not by whatever server the request reached."""
    info = evil_info(s3.endpoint, bucket or s3.bucket, key)
    calls = (lambda: s3.get_file(info, tmp_path / "x"), lambda: s3.copy(info, "proj/x"), lambda: s3.delete_file(info))
    for call in calls:
        with pytest.raises(DataInfoError, match="bucketName" if bucket else "filename"):
            call()
    assert not (tmp_path / "x").exists()
    assert bucket_keys(s3_victim) == []


def test_s3_legitimate_dataInfos_still_read(s3: S3Storage, s3_victim: dict[str, Any], tmp_path: Path) -> None:
    info = s3.put_file_stream("proj/executions/op/model", io.BytesIO(b"the real model"))
    assert s3.get_file(info, tmp_path / "a").read_bytes() == b"the real model"
    # The same server written differently: case, default trailing slash, virtual-host addressing of the bucket.
    port = s3_victim["endpoint"].rsplit(":", 1)[1]
    for endpoint in (
        s3_victim["endpoint"].upper(),
        s3_victim["endpoint"] + "/",
        f"http://{s3.bucket}.127.0.0.1:{port}",
    ):
        same = DataInfo("s3", {**info.data, "endpoint": endpoint})
        with s3.get_file_stream(same) as f:
            assert f.read() == b"the real model"
    # A dataInfo without an endpoint (older DeepForge ones) means the configured one.
    bare = DataInfo("s3", {k: v for k, v in info.data.items() if k != "endpoint"})
    assert WorkerCache(tmp_path / "cache").fetch(s3, bare).read_bytes() == b"the real model"
    copied = s3.copy(info, "proj/copied")
    assert copied.data["endpoint"] == s3.endpoint and copied.data["size"] == len(b"the real model")


def test_runner_refuses_an_input_from_a_foreign_endpoint(
    job_env: dict[str, str],
    s3: S3Storage,
    s3_victim: dict[str, Any],
    attacker: AttackerServer,
    make_bundle: Callable[..., Path],
) -> None:
    """The real runner subprocess: the job fails at the input, with a last line naming both endpoints."""
    bundle = make_bundle(
        "open('outputs/ran', 'w').write('operation ran')\n",
        inputs={"weights": evil_info(attacker.url, s3.bucket)},
        outputs=[],
        storage_id="s3",
        storage_dir="proj/executions/op",
        storage_config=s3_victim,
    )
    result = run_runner(bundle, job_env)
    line = last_line(result.stdout + result.stderr)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "input 'weights'" in line and attacker.url in line and s3.endpoint in line, line
    assert not (bundle / "outputs" / "ran").exists()
    assert_nothing_reached(attacker, s3_victim["accessKeyId"], SESSION_TOKEN)


# ---------------------------------------------------------------------------------------------- sciserver
@pytest.fixture
def files(sciserver: SciServerHandle) -> SciServerFilesStorage:
    client = storage.get_client("sciserver-files", sciserver.config())
    assert isinstance(client, SciServerFilesStorage)
    return client


def outside_fileservice(sciserver: SciServerHandle) -> list[dict[str, Any]]:
    return [r for r in sciserver.requests() if not r["path"].startswith(("/fileservice/api/", "/login-portal/"))]


@pytest.mark.parametrize(
    "data",
    [
        {"filename": "../../../../../../racm/jobm/rest/jobs"},  # out of fileservice/api into RACM, with the token
        {"filename": "a/./../../../../../../../racm/jobm/rest/jobs"},
        {"volume": "../../../../racm/jobm", "filename": "rest/jobs"},
        {"volumePool": "../..", "filename": "y"},
    ],
)
def test_sciserver_dataInfo_cannot_walk_out_of_the_file_service(
    files: SciServerFilesStorage, sciserver: SciServerHandle, tmp_path: Path, data: dict[str, Any]
) -> None:
    info = DataInfo(
        "sciserver-files", {"volume": f"{sciserver.username}/persistent", "volumePool": "Storage", "size": 1, **data}
    )
    files.session.token()  # log in first, so that any request below is one the dataInfo caused
    before = len(sciserver.requests())
    for call in (
        lambda: files.get_file(info, tmp_path / "x"),
        lambda: files.copy(info, "proj/copied"),
        lambda: files.get_cache_key(info),
        lambda: files.delete_file(info),
    ):
        with pytest.raises(DeepForgeError, match="sciserver-files"):
            call()
    assert sciserver.requests()[before:] == [], "refused only after sending the token"
    assert outside_fileservice(sciserver) == []
    assert not (tmp_path / "x").exists()


def test_sciserver_dataInfo_naming_another_file_service_is_refused(
    files: SciServerFilesStorage, sciserver: SciServerHandle, attacker: AttackerServer, tmp_path: Path
) -> None:
    real = files.put_file_stream("proj/model", io.BytesIO(b"the real model"))
    for url_field, url in (("fileServiceUrl", attacker.url + "/fileservice/api/"), ("loginUrl", attacker.url + "/x")):
        info = DataInfo("sciserver-files", {**real.data, url_field: url})
        with pytest.raises(DeepForgeError) as caught:
            files.get_file(info, tmp_path / "x")
        message = str(caught.value)
        assert attacker.url in message and sciserver.url.rstrip("/") in message and "sciserver-files" in message
    assert attacker.requests == []
    assert files.get_file(real, tmp_path / "ok").read_bytes() == b"the real model"
    written_differently = "HTTP://" + sciserver.files_url.removeprefix("http://").rstrip("/")  # same service
    same = DataInfo("sciserver-files", {**real.data, "fileServiceUrl": written_differently})
    assert files.get_file(same, tmp_path / "same").read_bytes() == b"the real model"


def test_sciserver_token_is_only_sent_under_the_configured_service_urls(
    files: SciServerFilesStorage, sciserver: SciServerHandle, attacker: AttackerServer
) -> None:
    """The session itself is bound: a URL outside fileServiceUrl/racmUrl/loginUrl never gets the token."""
    token = files.session.token()
    for url in (attacker.url + "/fileservice/api/file/x", sciserver.files_url + "../../racm/jobm/rest/jobs"):
        with pytest.raises(DeepForgeError) as caught:
            files.session.request("GET", url, what="probe")
        assert "sciserver-files" in str(caught.value) and token not in str(caught.value)
    assert attacker.leaked(token) == [] and attacker.requests == []
    assert outside_fileservice(sciserver) == []


def test_sciserver_token_does_not_follow_a_redirect_to_another_host(attacker: AttackerServer, tmp_path: Path) -> None:
    """requests keeps custom headers (X-Auth-Token) across a redirect to another host; the session never follows."""
    seen: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", attacker.url + "/fileservice/api/file/Storage/u/v/x")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    token = "item04-sciserver-token-value"
    try:
        files = storage.get_client(
            "sciserver-files",
            {
                "token": token,
                "loginUrl": base + "/login-portal/keystone/v3/tokens",
                "fileServiceUrl": base + "/fileservice/api/",
                "volume": "u/v",
            },
        )
        info = DataInfo("sciserver-files", {"volume": "u/v", "volumePool": "Storage", "filename": "x", "size": 1})
        with pytest.raises(DeepForgeError, match="sciserver-files"):
            files.get_file(info, tmp_path / "x")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert seen, "the configured file service was not asked"
    assert attacker.leaked(token) == [] and attacker.requests == []
    assert not (tmp_path / "x").exists()
