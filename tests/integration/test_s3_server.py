"""The s3 adapter against a real S3 server: SeaweedFS on loopback, which checks every SigV4 signature.

``s3_config`` here is a fresh bucket on the session's SeaweedFS (``real_s3_config``); moto appears only
where any server will do (a second endpoint, a TLS endpoint with a self-signed certificate).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from deepforge_adapters.endpoints import EndpointMismatchError
from deepforge_adapters.errors import IntegrityError, NotFoundError, StorageError
from deepforge_adapters.http import make_session
from deepforge_adapters.storage import DataInfo, get_client
from deepforge_adapters.storage.s3 import S3Storage, iso_timestamp

from tests.fixtures.s3 import DEEPFORGE_EXAMPLE_DATAINFO, MotoServer, SeaweedFSServer, moto_server
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    """Incompressible-ish, position-dependent bytes (a misplaced part changes the digest)."""
    block = hashlib.sha256(str(seed).encode()).digest() * (MiB // 32)
    return (block * (size // len(block) + 1))[:size]


def raw_client(config: dict[str, Any]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=config["endpoint"],
        aws_access_key_id=config["accessKeyId"],
        aws_secret_access_key=config["secretAccessKey"],
        region_name="us-east-1",
    )


def count_calls(client: Any) -> Counter[str]:
    """Counts API operations the client performs (one per operation, not per retry)."""
    calls: Counter[str] = Counter()

    def on_call(model: Any, **kwargs: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.s3", on_call)
    return calls


@pytest.fixture
def s3_config(real_s3_config: dict[str, Any]) -> dict[str, Any]:
    """This module's S3 server is the real one (SeaweedFS), not the suite's moto."""
    return real_s3_config


@pytest.fixture
def s3(s3_config: dict[str, Any]) -> S3Storage:
    client = get_client("s3", s3_config)
    assert isinstance(client, S3Storage)
    return client


class OneWayStream:
    """A non-seekable readable (like a pipe) that records the largest read it was asked for."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._fail_after = fail_after
        self.largest_read = 0

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) if size is None or size < 0 else size
        self.largest_read = max(self.largest_read, size)
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise OSError("source stream broke")
        chunk = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(chunk)
        return chunk


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("size", [0, 1234, 12 * MiB + 17], ids=["empty", "small", "multipart"])
def test_round_trip_stream_and_file(s3: S3Storage, tmp_path: Path, size: int) -> None:
    data = payload(size)
    info = s3.put_file_stream("proj/executions/op/model", io.BytesIO(data))
    d = info.data
    assert d["size"] == d["ContentLength"] == size
    assert d["filename"] == "proj/executions/op/model" and d["bucketName"] == s3.bucket
    assert d["endpoint"] == s3.endpoint
    assert ("-" in d["ETag"]) == (size > s3.config["chunkSize"])  # multipart ETag => it went in parts
    assert DataInfo.from_json(json.loads(info.dumps())) == info  # JSON-serialisable, unchanged

    with s3.get_file_stream(info) as stream:
        assert stream.read() == data
    dest = s3.get_file(info, tmp_path / "out" / "model")
    assert dest.read_bytes() == data

    src = tmp_path / "src.bin"
    src.write_bytes(data)
    info2 = s3.put_file("proj/file-upload", src)
    assert info2.data["size"] == size
    assert s3.get_file(info2, tmp_path / "b").read_bytes() == data

    digest = s3.get_content_digest(info)
    if "-" in d["ETag"]:
        assert digest is None  # a multipart ETag is not an MD5
    else:
        assert digest == ("md5", hashlib.md5(data).hexdigest())


def test_stat_and_metadata(s3: S3Storage) -> None:
    info = s3.put_file_stream("a/b.txt", io.BytesIO(b"hello"))
    assert s3.stat("a/b.txt") == info
    meta = s3.get_metadata(info)
    assert meta["size"] == 5 and meta["etag"] == info.data["ETag"]
    with pytest.raises(NotFoundError, match=r"NoSuchKey.*'a/missing'"):
        s3.stat("a/missing")


def test_non_seekable_stream_is_sent_in_parts(s3: S3Storage) -> None:
    data = payload(11 * MiB, seed=3)
    stream = OneWayStream(data)
    info = s3.put_file_stream("pipe/out", stream)
    assert info.data["ETag"].endswith('-3"')  # 5 + 5 + 1 MiB parts
    assert 0 < stream.largest_read <= s3.config["chunkSize"]  # never read(-1): never buffered whole
    with s3.get_file_stream(info) as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()


def test_failed_multipart_upload_leaves_nothing(s3: S3Storage, s3_config: dict[str, Any]) -> None:
    s3.ensure_bucket()
    broken = OneWayStream(payload(20 * MiB), fail_after=12 * MiB)
    with pytest.raises(StorageError, match="source stream broke") as excinfo:
        s3.put_file_stream("broken/out", broken)
    assert "broken/out" in str(excinfo.value)
    with pytest.raises(NotFoundError):
        s3.stat("broken/out")
    uploads = raw_client(s3_config).list_multipart_uploads(Bucket=s3.bucket)
    assert uploads.get("Uploads", []) == []  # s3transfer aborted the multipart upload


def test_progress_reports_totals(s3: S3Storage, tmp_path: Path) -> None:
    size = 11 * MiB
    seen: list[tuple[int, int | None]] = []
    info = s3.put_file_stream("p/up", io.BytesIO(payload(size)), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (size, size)
    assert all(t == size for _, t in seen)

    seen.clear()
    s3.get_file(info, tmp_path / "down", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (size, size) and len(seen) > 1

    seen.clear()
    s3.put_file_stream("p/empty", io.BytesIO(b""), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (0, 0)

    seen.clear()
    s3.put_file_stream("p/pipe", OneWayStream(b"x" * 1000), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (1000, None)  # unknown total for a pipe, but the byte count is right


# ------------------------------------------------------------------------------------------ buckets, delete
def test_bucket_is_created_once_per_client(s3: S3Storage) -> None:
    calls = count_calls(s3.client)
    for i in range(3):
        s3.put_file_stream(f"x/{i}", io.BytesIO(b"1"))
    assert calls["CreateBucket"] == 1
    assert calls["HeadBucket"] == 1


def test_delete_dir_pages_past_1000_keys(s3: S3Storage, s3_config: dict[str, Any]) -> None:
    s3.ensure_bucket()
    raw = raw_client(s3_config)
    keys = [f"run/outputs/{i:05d}" for i in range(2500)]
    survivors = ["run", "run-other/keep", "runs/keep"]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: raw.put_object(Bucket=s3.bucket, Key=k, Body=b"."), keys + survivors))

    calls = count_calls(s3.client)
    s3.delete_dir("run")
    assert calls["DeleteObjects"] == 3  # 1000 + 1000 + 500
    left = [o["Key"] for o in raw.list_objects_v2(Bucket=s3.bucket).get("Contents", [])]
    assert sorted(left) == sorted(survivors)
    s3.delete_dir("run/")  # nothing left: a no-op, not an error
    with pytest.raises(StorageError, match="empty prefix"):
        s3.delete_dir("/")


# ------------------------------------------------------------------------------------------ caching, integrity
def test_overwritten_object_changes_cache_key_and_old_info_is_refused(s3: S3Storage, tmp_path: Path) -> None:
    first = s3.put_file_stream("exec/op/model", io.BytesIO(b"version one"))
    second = s3.put_file_stream("exec/op/model", io.BytesIO(b"version two!"))
    assert s3.get_cache_key(first) != s3.get_cache_key(second)
    assert s3.get_cache_key(second) == s3.get_cache_key(s3.stat("exec/op/model"))
    with s3.get_file_stream(second) as f:
        assert f.read() == b"version two!"
    # The old dataInfo names an ETag the object no longer has: refuse instead of serving other bytes.
    with pytest.raises(IntegrityError, match="PreconditionFailed"):
        s3.get_file_stream(first)
    with pytest.raises(IntegrityError, match="PreconditionFailed"):
        s3.get_file(first, tmp_path / "old")
    assert not (tmp_path / "old").exists()


@pytest.mark.parametrize("pinned", [True, False], ids=["dataInfo-with-ETag", "dataInfo-without-ETag"])
def test_an_overwrite_during_a_ranged_download_is_refused_not_mixed(
    s3_config: dict[str, Any], tmp_path: Path, pinned: bool
) -> None:
    """Every ranged GET names the ETag the HEAD saw: parts of two objects never make one file."""
    s3 = get_client("s3", {**s3_config, "chunkSize": 5 * MiB, "maxConcurrency": 1})  # parts one after another
    assert isinstance(s3, S3Storage)
    info = s3.put_file_stream("exec/op/big", io.BytesIO(payload(3 * 5 * MiB, seed=1)))
    if not pinned:  # as DeepForge records it: no ETag, read whatever the key holds at the HEAD
        info = DataInfo("s3", {k: v for k, v in info.data.items() if k != "ETag"})
    raw = raw_client(s3_config)
    gets = 0

    def overwrite_after_the_first_part(model: Any, **kwargs: Any) -> None:
        nonlocal gets
        if model.name == "GetObject":
            gets += 1
            if gets == 2:
                raw.put_object(Bucket=s3.bucket, Key="exec/op/big", Body=payload(3 * 5 * MiB, seed=2))

    s3.client.meta.events.register("before-call.s3", overwrite_after_the_first_part)
    with pytest.raises(IntegrityError, match="PreconditionFailed"):
        s3.get_file(info, tmp_path / "big")
    assert gets == 2  # the second range was refused, and no range came after it
    assert list(tmp_path.iterdir()) == []  # nothing renamed into place, the temp file removed


def test_server_checksum_recorded_and_verified(s3: S3Storage, s3_config: dict[str, Any]) -> None:
    s3.ensure_bucket()
    data = payload(3000)
    raw_client(s3_config).put_object(Bucket=s3.bucket, Key="ck/obj", Body=data, ChecksumAlgorithm="SHA256")
    info = s3.stat("ck/obj")
    assert base64.b64decode(info.data["ChecksumSHA256"]) == hashlib.sha256(data).digest()
    with s3.get_file_stream(info) as f:
        assert f.read() == data


# ------------------------------------------------------------------------------------------ DeepForge compat
def test_reads_a_dataInfo_written_by_deepforge(s3: S3Storage, s3_config: dict[str, Any], tmp_path: Path) -> None:
    """The exact shape of an s3 dataInfo (aws-sdk headObject + 4 fields, docs/protocols.md), as stored in a model."""
    s3.ensure_bucket()
    key = "guest+proj/executions/_K_a_b/model"
    data = payload(1234)
    raw = raw_client(s3_config)
    raw.put_object(Bucket=s3.bucket, Key=key, Body=data, ContentType="application/octet-stream")
    head = raw.head_object(Bucket=s3.bucket, Key=key)
    text = (
        DEEPFORGE_EXAMPLE_DATAINFO.replace("2021-…Z", iso_timestamp(head["LastModified"]))
        .replace('"\\"…\\""', json.dumps(head["ETag"]))
        .replace('"deepforge"', json.dumps(s3.bucket))
        .replace("https://s3.amazonaws.com", s3_config["endpoint"])
    )
    info = DataInfo.from_json(text)
    assert s3.get_metadata(info)["size"] == 1234
    with s3.get_file_stream(info) as f:
        assert f.read() == data
    assert s3.get_file(info, tmp_path / "m").read_bytes() == data
    assert s3.get_cache_key(info) == s3.get_cache_key(s3.stat(key))  # one cache entry for the same object
    assert s3.get_content_digest(info) == ("md5", hashlib.md5(data).hexdigest())
    # Our own stat of the same object reads the same fields back.
    ours = s3.stat(key).data
    for field in ("AcceptRanges", "LastModified", "ContentLength", "ETag", "ContentType", "Metadata", "size"):
        assert ours[field] == info.data[field], field


@pytest.fixture(scope="module")
def second_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_server(tmp_path_factory.mktemp("moto-b")) as server:
        yield server


def test_a_dataInfo_from_another_endpoint_is_refused_not_followed(
    s3: S3Storage, s3_config: dict[str, Any], second_s3_server: MotoServer, tmp_path: Path
) -> None:
    """Credentials are bound to their endpoint (docs/security.md): B's client never signs for A."""
    info = s3.put_file_stream("routed/obj", io.BytesIO(b"lives on server A"))
    other = get_client("s3", {**s3_config, "endpoint": second_s3_server.url})
    assert other.endpoint != info.data["endpoint"]
    for call in (
        lambda: other.get_file_stream(info),
        lambda: other.get_file(info, tmp_path / "r"),
        lambda: other.get_download_url(info),
        lambda: other.copy(info, "copied/obj"),
    ):
        with pytest.raises(EndpointMismatchError) as caught:
            call()
        assert s3.endpoint in str(caught.value) and other.endpoint in str(caught.value)
    assert not (tmp_path / "r").exists()
    with pytest.raises(NotFoundError):
        other.stat("copied/obj")
    # Moving an artifact between servers takes a client for each: read with A's, write with B's.
    with s3.get_file_stream(info) as src:
        copied = other.put_file_stream("copied/obj", src)
    assert copied.data["endpoint"] == other.endpoint
    with other.get_file_stream(copied) as f:
        assert f.read() == b"lives on server A"


def test_copy_is_server_side_on_the_same_endpoint(s3: S3Storage) -> None:
    small = s3.put_file_stream("c/small", io.BytesIO(b"abc"))
    big_data = payload(11 * MiB, seed=9)
    big = s3.put_file_stream("c/big", io.BytesIO(big_data))
    calls = count_calls(s3.client)
    assert s3.copy(small, "c/small-copy").data["size"] == 3
    out = s3.copy(big, "c/big-copy")
    assert calls["CopyObject"] == 1 and calls["UploadPartCopy"] == 3
    assert calls["GetObject"] == 0 and calls["PutObject"] == 0 and calls["UploadPart"] == 0
    with s3.get_file_stream(out) as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(big_data).digest()


def test_presigned_url_is_downloadable(s3: S3Storage) -> None:
    info = s3.put_file_stream("u/file", io.BytesIO(b"via url"))
    url = s3.get_download_url(info)
    assert url is not None and "X-Amz-Signature=" in url
    assert s3.config["secretAccessKey"] not in url
    response = make_session().get(url)
    assert response.status_code == 200 and response.content == b"via url"


# ------------------------------------------------------------------------------------------ errors
def test_missing_bucket_is_named(s3_config: dict[str, Any], tmp_path: Path) -> None:
    s3 = get_client("s3", s3_config)
    info = DataInfo(
        "s3",
        {
            "filename": "k/x",
            "bucketName": "no-such-bucket-here",
            "endpoint": s3_config["endpoint"],
            "ETag": '"0"',
            "size": 1,
        },
    )
    with pytest.raises(NotFoundError, match=r"NoSuchBucket.*'no-such-bucket-here'") as excinfo:
        s3.get_file_stream(info)
    assert "k/x" in str(excinfo.value)
    with pytest.raises(NotFoundError, match=r"NoSuchBucket.*'no-such-bucket-here'"):
        s3.get_file(info, tmp_path / "x")
    with pytest.raises(NotFoundError, match="NoSuchBucket"):
        s3.stat("anything")  # own bucket not created yet: reads never create it


def auth_config(server: SeaweedFSServer, bucket: str, **creds: str) -> dict[str, Any]:
    return {"endpoint": server.url, "region": server.region, "bucketName": bucket, "maxAttempts": 2, **creds}


def creds_of(server: SeaweedFSServer, identity: str) -> dict[str, str]:
    ident = server.identities[identity]
    return {"accessKeyId": ident.access_key_id, "secretAccessKey": ident.secret_access_key}


def test_wrong_credentials_fail_with_the_server_code(
    seaweedfs_server: SeaweedFSServer, caplog: pytest.LogCaptureFixture
) -> None:
    """SeaweedFS checks signatures (moto accepts any secret): a wrong secret, an unknown key id and a key
    without write permission each fail with the server's own code, naming bucket and key, and no secret
    appears in an error, a repr or a log line (botocore's debug logs included)."""
    bucket = f"auth-{uuid.uuid4().hex[:12]}"
    good = get_client("s3", auth_config(seaweedfs_server, bucket, **creds_of(seaweedfs_server, "deepforge")))
    info = good.put_file_stream("k/obj", io.BytesIO(b"secret data"))  # real auth succeeds
    with good.get_file_stream(info) as f:
        assert f.read() == b"secret data"

    caplog.set_level(logging.DEBUG)  # botocore's debug logs too: they must not carry a secret either
    wrong_secret = f"wrong-{uuid.uuid4().hex}"
    admin = creds_of(seaweedfs_server, "deepforge")
    readonly = creds_of(seaweedfs_server, "readonly")
    cases = {
        "InvalidAccessKeyId": ({"accessKeyId": "AKIAUNKNOWN000000000", "secretAccessKey": wrong_secret}, True),
        "SignatureDoesNotMatch": ({"accessKeyId": admin["accessKeyId"], "secretAccessKey": wrong_secret}, True),
        "AccessDenied": (readonly, False),  # a valid key that may read and list but not write
    }
    for code, (creds, reads_fail) in cases.items():
        client = get_client("s3", auth_config(seaweedfs_server, bucket, **creds))
        if reads_fail:
            with pytest.raises(StorageError) as excinfo:
                client.get_file_stream(info)
            text = str(excinfo.value)
            assert code in text and f"{bucket!r}" in text and "'k/obj'" in text, text
        else:
            with client.get_file_stream(info) as f:
                assert f.read() == b"secret data"
        with pytest.raises(StorageError) as excinfo:
            client.put_file_stream("k/other", io.BytesIO(b"x"))
        text = str(excinfo.value)
        assert code in text and "'k/other'" in text, text
        for secret in (creds["secretAccessKey"], admin["secretAccessKey"]):
            assert secret not in text
            assert secret not in repr(client)
    assert "botocore" in caplog.text  # debug logging really was on
    for secret in (wrong_secret, admin["secretAccessKey"], readonly["secretAccessKey"]):
        assert secret not in caplog.text
    assert [o["Key"] for o in seaweedfs_server.client().list_objects_v2(Bucket=bucket)["Contents"]] == ["k/obj"]


def test_expired_session_token_is_refused(seaweedfs_server: SeaweedFSServer) -> None:
    """Temporary credentials from SeaweedFS's STS work until they expire, then every request is refused
    with an error that says the session token is the problem; a token the server never issued is refused."""
    bucket = f"sts-{uuid.uuid4().hex[:12]}"
    seaweedfs_server.client().create_bucket(Bucket=bucket)
    temp = seaweedfs_server.assume_role()
    config = auth_config(
        seaweedfs_server,
        bucket,
        accessKeyId=temp["AccessKeyId"],
        secretAccessKey=temp["SecretAccessKey"],
        sessionToken=temp["SessionToken"],
    )
    client = get_client("s3", config)
    info = client.put_file_stream("sts/obj", io.BytesIO(b"temporary"))  # valid while the token lives
    with client.get_file_stream(info) as f:
        assert f.read() == b"temporary"

    expires = temp["Expiration"].timestamp()
    wait_for(lambda: time.time() > expires + 1, SeaweedFSServer.STS_TOKEN_SECONDS + 30, "the session token to expire")
    for attempt in (lambda: client.get_file_stream(info), lambda: client.put_file_stream("sts/x", io.BytesIO(b"x"))):
        with pytest.raises(StorageError, match=r"temporary credentials \(sessionToken\): expired") as excinfo:
            attempt()
        assert temp["SecretAccessKey"] not in str(excinfo.value) and temp["SessionToken"] not in str(excinfo.value)

    forged = get_client("s3", {**config, **creds_of(seaweedfs_server, "deepforge"), "sessionToken": "forged-token"})
    with pytest.raises(StorageError, match="sessionToken"):
        forged.get_file_stream(info)


def test_secret_never_in_logs_or_errors(s3_config: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s3 = get_client("s3", s3_config)
    secret = s3_config["secretAccessKey"]
    info = s3.put_file_stream("log/obj", io.BytesIO(payload(6 * MiB)))
    with s3.get_file_stream(info) as f:
        f.read()
    with pytest.raises(NotFoundError) as excinfo:
        s3.stat("log/missing")
    assert "botocore" in caplog.text  # debug logging really was on
    assert secret not in caplog.text
    assert secret not in str(excinfo.value) and secret not in repr(s3) and secret not in info.dumps()
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != secret


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default(tmp_path: Path, s3_config: dict[str, Any]) -> None:
    with moto_server(tmp_path / "moto-tls", tls=True) as server:
        assert server.url.startswith("https://")
        config = {**s3_config, "endpoint": server.url, "maxAttempts": 1}
        with pytest.raises(StorageError, match=r"(?i)certificate|SSL"):
            get_client("s3", config).put_file_stream("tls/obj", io.BytesIO(b"x"))  # self-signed: refused
        insecure = get_client("s3", {**config, "verifyTLS": False})
        info = insecure.put_file_stream("tls/obj", io.BytesIO(b"over tls"))
        with insecure.get_file_stream(info) as f:
            assert f.read() == b"over tls"


def test_seaweedfs_restart_keeps_objects_and_credentials(seaweedfs_server: SeaweedFSServer) -> None:
    """The fixture's restart() (soak tests kill the server mid-run): same port, same data, same keys."""
    bucket = f"restart-{uuid.uuid4().hex[:12]}"
    client = get_client("s3", auth_config(seaweedfs_server, bucket, **creds_of(seaweedfs_server, "deepforge")))
    info = client.put_file_stream("r/obj", io.BytesIO(b"survives a restart"))
    url = seaweedfs_server.url
    seaweedfs_server.restart()
    assert seaweedfs_server.url == url
    with client.get_file_stream(info) as f:  # the same client: its endpoint and keys still work
        assert f.read() == b"survives a restart"
