"""The s3 adapter without an S3 server: config, dataInfo parsing, cache keys, digests, error mapping, retries."""

from __future__ import annotations

import functools
import io
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import FlexibleChecksumError
from botocore.response import StreamingBody
from botocore.stub import Stubber
from deepforge_adapters.endpoints import EndpointMismatchError
from deepforge_adapters.errors import ConfigError, DataInfoError, IntegrityError, NotFoundError, StorageError
from deepforge_adapters.storage import DataInfo, get_client, registry
from deepforge_adapters.storage.s3 import (
    AWS_ENDPOINT,
    S3ObjectReader,
    S3Storage,
    TransferProgress,
    is_aws,
    iso_timestamp,
    normalize_endpoint,
)

from tests.fixtures.s3 import DEEPFORGE_EXAMPLE_DATAINFO

MINIO = {"endpoint": "http://minio.example:9000", "accessKeyId": "AKIAUNIT", "secretAccessKey": "unit-secret-value"}


def make(config: dict[str, Any] | None = None, **extra: Any) -> S3Storage:
    client = get_client("s3", {**(config if config is not None else MINIO), **extra})
    assert isinstance(client, S3Storage)
    return client


def info(**data: Any) -> DataInfo:
    base = {
        "filename": "p/model",
        "bucketName": "deepforge",
        "endpoint": MINIO["endpoint"],
        "ETag": '"abc"',
        "size": 3,
        "ContentLength": 3,
    }
    return DataInfo("s3", {**base, **data})


# ------------------------------------------------------------------------------------------ config
def test_schema_matches_deepforge_names_and_marks_secrets() -> None:
    assert registry.get_class("s3") is S3Storage and S3Storage.name == "S3 Storage"
    fields = {f["name"]: f for f in S3Storage.schema.to_config_structure()}
    for name in ("endpoint", "accessKeyId", "secretAccessKey", "bucketName"):
        assert name in fields
    assert fields["bucketName"]["value"] == "deepforge"
    assert {n for n, f in fields.items() if f.get("isAuth")} == {"accessKeyId", "secretAccessKey", "sessionToken"}


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="secretAccessKey"):
        make({"endpoint": "http://x:1", "accessKeyId": "only-id"})
    with pytest.raises(ConfigError, match="endpoint"):
        make({"endpoint": "ftp://x"})
    with pytest.raises(ConfigError, match=r"endpoint.*user info"):
        make({"endpoint": "http://key:pw@minio.example:9000"})
    with pytest.raises(ConfigError, match="chunkSize"):
        make(chunkSize=1024)
    with pytest.raises(ConfigError, match="addressingStyle"):
        make(addressingStyle="sideways")


def test_credentials_fall_back_to_the_standard_aws_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    s3 = make({"endpoint": "http://x:1"})
    creds = s3._session.get_credentials()
    assert creds is not None and creds.access_key == "AKIAFROMENV"
    monkeypatch.setenv("DEEPFORGE_S3_SECRET_ACCESS_KEY", "df-secret")
    monkeypatch.setenv("DEEPFORGE_S3_ACCESS_KEY_ID", "AKIADF")
    creds = make({"endpoint": "http://x:1"})._session.get_credentials()
    assert creds is not None and creds.access_key == "AKIADF"


def test_client_settings_follow_config() -> None:
    s3 = make(maxConcurrency=16, chunkSize=16 * 1024 * 1024, retryMode="adaptive", maxAttempts=7, readTimeout=30)
    cfg = s3.client.meta.config
    assert cfg.s3 is not None and cfg.s3["addressing_style"] == "path"  # non-AWS endpoint
    assert cfg.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert cfg.read_timeout == 30 and cfg.max_pool_connections >= 16
    assert s3.client.meta.endpoint_url == MINIO["endpoint"]
    tc = s3.transfer_config
    assert tc.multipart_chunksize == tc.multipart_threshold == 16 * 1024 * 1024
    assert tc.max_request_concurrency == 16 and tc.max_in_memory_upload_chunks == 16
    # A stream upload buffers 4 parts (peak RSS < 128 MiB)
    stream = s3.stream_transfer_config
    assert stream.max_request_concurrency == 16 and stream.max_in_memory_upload_chunks == 4

    aws = make({"region": "eu-west-1"})
    assert aws.endpoint == AWS_ENDPOINT
    assert aws.client.meta.config.s3 is not None and aws.client.meta.config.s3["addressing_style"] == "auto"
    assert make(verifyTLS=False).client._endpoint.http_session._verify is False


def test_repr_masks_secrets() -> None:
    s3 = make()
    assert "unit-secret-value" not in repr(s3) and "AKIAUNIT" not in repr(s3)


# ------------------------------------------------------------------------------------------ dataInfo
def test_deepforge_example_dataInfo_reads_unchanged() -> None:
    example = DataInfo.from_json(DEEPFORGE_EXAMPLE_DATAINFO)
    aws = make({"accessKeyId": MINIO["accessKeyId"], "secretAccessKey": MINIO["secretAccessKey"]})
    loc = aws.locate(example)
    assert (loc.bucket, loc.key, loc.endpoint) == ("deepforge", "guest+proj/executions/_K_a_b/model", AWS_ENDPOINT)
    assert aws.get_metadata(example)["size"] == 1234
    assert re.fullmatch(r"s3/[0-9a-f]{2}/[0-9a-f]{62}", aws.get_cache_key(example))  # the base's one format
    assert aws.get_content_digest(example) is None  # '"…"' is not an MD5
    url = aws.get_download_url(example)  # signed offline; the before-sign guard accepts AWS's own host
    assert url is not None and url.startswith("https://deepforge.s3.amazonaws.com/guest%2Bproj/")
    # A client configured for another server never sends its credentials where the dataInfo says.
    with pytest.raises(EndpointMismatchError, match=r"https://s3\.amazonaws\.com.*http://minio\.example:9000"):
        make().locate(example)


@pytest.mark.parametrize(
    ("endpoint", "accepted"),
    [
        ("HTTP://MINIO.example:9000/", True),  # case, trailing slash
        ("http://deepforge.minio.example:9000", True),  # virtual-host addressing of the dataInfo's bucket
        ("", True),  # no endpoint recorded: the configured one
        ("http://other.example:9000/", False),
        ("https://minio.example:9000", False),  # another scheme
        ("http://minio.example:9001", False),  # another port
        ("http://minio.example", False),  # the default port is another port
        ("http://minio.example:9000/prefix", False),  # another path
        ("http://evil.minio.example:9000", False),  # a subdomain that is not the bucket
        ("http://user@minio.example:9000", False),  # user info is never an endpoint
        ("http://minio.example:9000@evil.example/", False),
        ("http://minio.example:9000/?x=1", False),
        ("http://minio.example:9000\\@evil.example", False),
        (9000, False),
    ],
)
def test_dataInfo_endpoint_is_compared_never_followed(endpoint: object, accepted: bool) -> None:
    s3 = make()
    if accepted:
        assert s3.locate(info(endpoint=endpoint)).endpoint == s3.endpoint
    else:
        with pytest.raises(EndpointMismatchError) as caught:
            s3.locate(info(endpoint=endpoint))
        assert "http://minio.example:9000" in str(caught.value) and "user@" not in str(caught.value)


@pytest.mark.parametrize(
    ("endpoint", "accepted"),
    [
        ("https://s3.amazonaws.com", True),  # what DeepForge records
        ("https://s3.eu-west-1.amazonaws.com/", True),  # this client's region
        ("https://deepforge.s3.eu-west-1.amazonaws.com", True),
        ("https://s3.us-west-2.amazonaws.com", False),  # another region: not this client's default
        ("http://s3.amazonaws.com", False),
        ("https://abc.execute-api.eu-west-1.amazonaws.com", False),  # AWS-hosted, but anyone's
    ],
)
def test_aws_client_accepts_the_default_endpoint_of_its_region(endpoint: str, accepted: bool) -> None:
    aws = make({"region": "eu-west-1"})
    if accepted:
        aws.locate(info(endpoint=endpoint))
    else:
        with pytest.raises(EndpointMismatchError, match=r"https://s3\.amazonaws\.com"):
            aws.locate(info(endpoint=endpoint))


def test_before_sign_guard_refuses_other_hosts() -> None:
    """The last line under locate(): nothing is signed for a host botocore derived from a bucket or redirect."""
    minio, aws = make(), make({"region": "eu-west-1"})
    minio._guard_request(SimpleNamespace(url="http://minio.example:9000/deepforge/k?x-id=GetObject"))
    for url in (
        "http://myap-123456789012.minio.example:9000/k",
        "http://evil.example:9000/deepforge/k",
        "http://minio.example:9000/deepforge/../k",
    ):
        with pytest.raises(EndpointMismatchError, match="signed"):
            minio._guard_request(SimpleNamespace(url=url), operation_name="GetObject")
    for url in (
        "https://s3.amazonaws.com/b/k",
        "https://b.s3.eu-west-1.amazonaws.com/k",
        "https://s3.us-west-2.amazonaws.com/b/k",
        "https://ap-1.s3-accesspoint.eu-west-1.amazonaws.com/k",
    ):
        aws._guard_request(SimpleNamespace(url=url))
    for url in (
        "http://s3.amazonaws.com/b/k",
        "https://evil.example/b/k",
        "https://s3.amazonaws.com:8443/b",
        "https://x@s3.amazonaws.com/b",
        "https://abc.execute-api.eu-west-1.amazonaws.com/k",
    ):
        with pytest.raises(EndpointMismatchError, match="not an AWS S3 host"):
            aws._guard_request(SimpleNamespace(url=url))


def test_dataInfo_bucket_and_key_are_checked() -> None:
    s3 = make()
    for bucket in ("arn:aws:s3:us-east-1:123456789012:accesspoint/x", "a@b", "a..b", "ab", "-ab", "a/b", 7):
        with pytest.raises(DataInfoError, match="bucketName"):
            s3.locate(info(bucketName=bucket))
    assert s3.locate(info(bucketName="Legacy_Bucket.name-1")).bucket == "Legacy_Bucket.name-1"
    for key in ("../k", "a/./k", "a/..", "a\x00b", "", "/"):
        with pytest.raises(DataInfoError, match="filename"):
            s3.locate(info(filename=key))
    with pytest.raises(StorageError, match="segments"):
        s3.put_file_stream("p/../q", io.BytesIO(b""))


def test_cache_key_follows_content_identity() -> None:
    s3 = make()
    key = s3.get_cache_key(info())
    assert re.fullmatch(r"s3/[0-9a-f]{2}/[0-9a-f]{62}", key)  # the base's one format
    other_server = make({**MINIO, "endpoint": "http://minio-b.example:9000"})
    assert other_server.get_cache_key(info(endpoint="http://minio-b.example:9000")) != key  # scoped by endpoint
    assert s3.get_cache_key(info()) == key
    assert s3.get_cache_key(info(ETag='"def"')) != key
    assert s3.get_cache_key(info(VersionId="v2")) != key
    assert s3.get_cache_key(info(filename="p/other")) != key
    # A dataInfo without an ETag is described by what its key holds now (one HeadObject, as DeepForge reads
    # it): tests/deepforge/test_item09_writers_never_overwrite.py, against a real server.


def test_content_digest_only_for_single_part_md5_etags() -> None:
    s3 = make()
    md5 = "5d41402abc4b2a76b9719d911017c592"
    assert s3.get_content_digest(info(ETag=f'"{md5}"')) == ("md5", md5)
    assert s3.get_content_digest(info(ETag=f'"{md5}-3"')) is None
    assert s3.get_content_digest(info(ETag=f'"{md5}"', ServerSideEncryption="aws:kms")) is None


def test_locate_rejects_malformed_dataInfo() -> None:
    s3 = make()
    with pytest.raises(DataInfoError, match="filename"):
        s3.locate(DataInfo("s3", {"bucketName": "b"}))
    with pytest.raises(DataInfoError):
        s3.locate(DataInfo("s3", "not-an-object"))
    with pytest.raises(StorageError, match="gme"):
        s3.locate(DataInfo("gme", "e93b7917c1fc457e4041cf7d5f0568ef8d91040c"))
    with pytest.raises(StorageError, match="empty"):
        s3.put_file_stream("/", io.BytesIO(b""))


def test_helpers() -> None:
    when = datetime(2021, 3, 4, 5, 6, 7, 891000, tzinfo=timezone(timedelta(hours=2)))
    assert iso_timestamp(when) == "2021-03-04T03:06:07.891Z"
    assert normalize_endpoint("HTTPS://S3.Example.com:443/") == "https://s3.example.com"
    assert normalize_endpoint("http://127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert is_aws(None) and is_aws("https://s3.eu-west-1.amazonaws.com") and not is_aws("http://minio:9000")


def test_progress_handles_rewinds_and_reports_the_end() -> None:
    calls: list[tuple[int, int | None]] = []
    p = TransferProgress(lambda d, t: calls.append((d, t)), 10)
    for step in (6, -6, 6, 4):  # s3transfer rewinds a retried part with a negative increment
        p.on_progress(None, step)  # type: ignore[arg-type]
    p.finish()
    assert calls[-1] == (10, 10) and all(d >= 0 for d, _ in calls)
    assert len(calls) == 4  # finish() does not repeat the last report


# ------------------------------------------------------------------------------------------ error mapping
@pytest.mark.parametrize(
    ("code", "status", "error_type"),
    [
        ("AccessDenied", 403, StorageError),
        ("NoSuchKey", 404, NotFoundError),
        ("NoSuchBucket", 404, NotFoundError),
        ("SlowDown", 503, StorageError),
        ("PreconditionFailed", 412, IntegrityError),
    ],
)
def test_client_errors_name_bucket_key_and_code(code: str, status: int, error_type: type) -> None:
    s3 = make()
    with Stubber(s3.client) as stub:
        stub.add_client_error("get_object", service_error_code=code, service_message="nope", http_status_code=status)
        with pytest.raises(error_type) as excinfo:
            s3.get_file_stream(info())
    text = str(excinfo.value)
    assert code in text and "'deepforge'" in text and "'p/model'" in text and MINIO["endpoint"] in text
    assert type(excinfo.value) is error_type
    assert "unit-secret-value" not in text


def test_short_body_and_bad_checksum_are_integrity_errors() -> None:
    s3 = make()
    with Stubber(s3.client) as stub:
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"abc"), 3), "ContentLength": 5})
        stream = s3.get_file_stream(info())
        with pytest.raises(IntegrityError, match="p/model"):
            stream.read()

    class BadChecksumBody(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise FlexibleChecksumError(error_msg="Expected checksum abc did not match calculated checksum def")

    fail = functools.partial(s3._raise, op="GetObject", bucket="deepforge", key="p/model", endpoint=s3.endpoint)
    reader = S3ObjectReader(BadChecksumBody(), 3, lambda exc: fail(exc))
    with pytest.raises(IntegrityError, match="did not match"):
        reader.read(3)


class _SlowDownServer(ThreadingHTTPServer):
    def __init__(self, fail_times: int) -> None:
        super().__init__(("127.0.0.1", 0), _SlowDownHandler)
        self.fail_times = fail_times
        self.hits = 0
        self.lock = threading.Lock()


class _SlowDownHandler(BaseHTTPRequestHandler):
    server: _SlowDownServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits += 1
            hit = self.server.hits
        if hit <= self.server.fail_times:
            body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
            self.send_response(503)
        else:
            body = b"payload"
            self.send_response(200)
            self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_down_server(request: pytest.FixtureRequest) -> Iterator[_SlowDownServer]:
    server = _SlowDownServer(fail_times=request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("slow_down_server", [2], indirect=True)
def test_slow_down_is_retried(slow_down_server: _SlowDownServer) -> None:
    url = f"http://127.0.0.1:{slow_down_server.server_address[1]}"
    s3 = make({**MINIO, "endpoint": url, "maxAttempts": 3})
    with s3.get_file_stream(info(endpoint=url, ETag=None, size=7)) as f:
        assert f.read() == b"payload"
    assert slow_down_server.hits == 3


@pytest.mark.parametrize("slow_down_server", [100], indirect=True)
def test_slow_down_gives_up_after_max_attempts(slow_down_server: _SlowDownServer) -> None:
    url = f"http://127.0.0.1:{slow_down_server.server_address[1]}"
    s3 = make({**MINIO, "endpoint": url, "maxAttempts": 2})
    with pytest.raises(StorageError, match=r"SlowDown \(HTTP 503\).*'p/model'"):
        s3.get_file_stream(info(endpoint=url))
    assert slow_down_server.hits == 2


def test_get_file_short_download_is_refused_and_leaves_no_file(tmp_path: Any) -> None:
    s3 = make()
    with Stubber(s3.client) as stub:
        stub.add_response("head_object", {"ContentLength": 5, "ETag": '"abc"'})
        stub.add_response(
            "get_object",
            {"Body": StreamingBody(io.BytesIO(b"abc"), 3), "ContentLength": 3, "ContentRange": "bytes 0-4/5"},
            {"Bucket": "deepforge", "Key": "p/model", "IfMatch": '"abc"', "Range": "bytes=0-4"},
        )
        for _ in range(4):  # each retry asks for what is still missing, and gets nothing more
            stub.add_response(
                "get_object",
                {"Body": StreamingBody(io.BytesIO(b""), 0), "ContentLength": 0, "ContentRange": "bytes 3-4/5"},
                {"Bucket": "deepforge", "Key": "p/model", "IfMatch": '"abc"', "Range": "bytes=3-4"},
            )
        with pytest.raises(IntegrityError, match=r"download: 3 read, but total bytes expected is 5"):
            s3.get_file(info(), tmp_path / "dest")
        stub.assert_no_pending_responses()
    assert list(tmp_path.iterdir()) == []  # the temp file was removed, nothing renamed into place


def test_get_file_refuses_a_server_that_ignores_the_range(tmp_path: Any) -> None:
    s3 = make()
    with Stubber(s3.client) as stub:
        stub.add_response("head_object", {"ContentLength": 5, "ETag": '"abc"'})
        stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"other"), 5), "ContentLength": 5})
        with pytest.raises(IntegrityError, match=r"asked for bytes=0-4 of 5 bytes.*Content-Range None"):
            s3.get_file(info(), tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []


def test_delete_dir_reports_the_keys_the_server_refused() -> None:
    s3 = make()
    with Stubber(s3.client) as stub:
        stub.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": f"run/{i}"} for i in range(3)], "IsTruncated": False},
            {"Bucket": "deepforge", "Prefix": "run/"},
        )
        stub.add_response(
            "delete_objects",
            {"Errors": [{"Key": "run/1", "Code": "AccessDenied", "Message": "Access Denied"}]},
        )
        with pytest.raises(StorageError) as excinfo:
            s3.delete_dir("run")
    text = str(excinfo.value)
    assert "1 keys under 'run/'" in text and "'run/1' (AccessDenied" in text and "(2 deleted)" in text
