"""Unit-level paths of the WebGME clients: the hash rule, and the retry policy on server errors."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import requests
import responses
from deepforge_adapters.errors import IntegrityError, WebGMEError
from deepforge_adapters.webgme import BlobClient, ExecutorClient, file_metadata, metadata_hash
from deepforge_adapters.webgme._rest import auth_headers

HOST = "http://webgme.test"


def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("deepforge_adapters.webgme._rest.time.sleep", lambda s: None)
    monkeypatch.setattr("deepforge_adapters.webgme.blob.time.sleep", lambda s: None)


def test_metadata_hash_matches_a_hash_the_server_gave() -> None:
    # POST /rest/blob/createFile/hello.txt with b"hello" answered this hash (webgme-engine 2.31.0).
    md = file_metadata("hello.txt", 5, hashlib.sha1(b"hello").hexdigest())
    assert md["mime"] == "text/plain"
    assert metadata_hash(md) == "f2b53188d5b4c564eb3b4f2600858595d09fee1d"
    assert metadata_hash({**md, "lastModified": "2026-01-01T00:00:00Z"}) == metadata_hash(md)


def test_metadata_hash_normalises_like_blob_metadata_serialize() -> None:
    entry_a = {"content": "a" * 40, "contentType": "softLink"}
    entry_b = {"content": "b" * 40, "contentType": "object"}
    one = {"name": "x.zip", "size": 2, "mime": "application/zip", "isPublic": False, "tags": ["t2", "t1"],
           "content": {"b": entry_b, "a": entry_a}, "contentType": "complex"}  # fmt: skip
    two = {"contentType": "complex", "content": {"a": entry_a, "b": entry_b}, "tags": ["t1", "t2"],
           "isPublic": False, "mime": "application/zip", "size": 2, "name": "x.zip"}  # fmt: skip
    assert metadata_hash(one) == metadata_hash(two)
    text = ('{"name":"x.zip","size":2,"mime":"application/zip","isPublic":false,"tags":["t1","t2"],'
            f'"content":{{"a":{json.dumps(entry_a, separators=(",", ":"))},'
            f'"b":{json.dumps(entry_b, separators=(",", ":"))}}},"contentType":"complex"}}')  # fmt: skip
    assert metadata_hash(one) == hashlib.sha1(text.encode()).hexdigest()
    assert (
        metadata_hash({"name": "ü.txt", "content": "c" * 40})
        == hashlib.sha1(
            '{"name":"ü.txt","size":0,"mime":"","isPublic":false,"tags":[],"content":"cccccccccccccccccccccccccccccccccccccccc","contentType":"object"}'.encode()
        ).hexdigest()
    )


def test_auth_header_precedence() -> None:
    assert auth_headers("tok", "jwt", "n") == {"x-api-token": "tok", "x-executor-nonce": "n"}
    assert auth_headers(None, "jwt") == {"Authorization": "Bearer jwt"}
    assert auth_headers() == {}


def _created(body: bytes, name: str = "f") -> dict[str, object]:
    md = file_metadata(name, len(body), hashlib.sha1(body).hexdigest())
    return {metadata_hash(md): md}


@responses.activate
def test_create_metadata_is_replayed_after_a_5xx(monkeypatch: pytest.MonkeyPatch) -> None:
    no_sleep(monkeypatch)
    md = {"name": "a.zip", "size": 0, "mime": "application/zip", "content": {}, "contentType": "complex"}
    url = f"{HOST}/rest/blob/createMetadata"
    responses.post(url, status=502)
    responses.post(url, json={metadata_hash(md): md})
    assert BlobClient(HOST).create_metadata(md) == metadata_hash(md)
    assert len(responses.calls) == 2


@responses.activate
def test_create_metadata_hash_mismatch_is_an_integrity_error() -> None:
    md = {"name": "a.zip", "content": {}, "contentType": "complex"}
    responses.post(f"{HOST}/rest/blob/createMetadata", json={"0" * 40: md})
    with pytest.raises(IntegrityError, match="computed"):
        BlobClient(HOST).create_metadata(md)


class Pipe:
    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)


def _consuming(status: int, body: bytes) -> object:
    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        sent = b"".join(request.body) if not isinstance(request.body, bytes | str | None) else request.body
        assert sent == body or status >= 500
        return status, {}, json.dumps(_created(body)) if status < 300 else "boom"

    return callback


@responses.activate
def test_a_consumed_stream_is_never_replayed() -> None:
    responses.add_callback(responses.POST, f"{HOST}/rest/blob/createFile/f", callback=_consuming(503, b"data"))
    with pytest.raises(WebGMEError) as err:
        BlobClient(HOST).create_file("f", Pipe(b"data"))
    assert err.value.status_code == 503 and len(responses.calls) == 1 and "not retried" in str(err.value)


@responses.activate
def test_a_seekable_upload_is_replayed_from_its_start(monkeypatch: pytest.MonkeyPatch) -> None:
    no_sleep(monkeypatch)
    url = f"{HOST}/rest/blob/createFile/f"
    responses.add_callback(responses.POST, url, callback=_consuming(500, b"data"))
    responses.add_callback(responses.POST, url, callback=_consuming(200, b"data"))
    _, md = BlobClient(HOST).create_file("f", io.BytesIO(b"data"), size=4)
    assert md["content"] == hashlib.sha1(b"data").hexdigest() and len(responses.calls) == 2


@responses.activate
def test_server_storing_other_bytes_is_an_integrity_error() -> None:
    responses.add_callback(responses.POST, f"{HOST}/rest/blob/createFile/f",
                           callback=lambda r: (200, {}, json.dumps(_created(b"other"))))  # fmt: skip
    with pytest.raises(IntegrityError, match="were sent"):
        BlobClient(HOST).create_file("f", Pipe(b"data"))


@responses.activate
def test_worker_poll_is_not_replayed_but_update_is(monkeypatch: pytest.MonkeyPatch) -> None:
    no_sleep(monkeypatch)
    responses.post(f"{HOST}/rest/executor/worker", status=500)
    with pytest.raises(WebGMEError) as err:
        ExecutorClient(HOST).poll_worker("w", 1, [], [])
    assert err.value.status_code == 500 and "worker poll w" in str(err.value) and len(responses.calls) == 1
    job = "a" * 40
    responses.post(f"{HOST}/rest/executor/update/{job}", status=503)
    responses.post(f"{HOST}/rest/executor/update/{job}", body="OK")
    ExecutorClient(HOST).update_job(job, {"status": "SUCCESS"})
    assert len(responses.calls) == 3
    assert json.loads(responses.calls[-1].request.body) == {"status": "SUCCESS", "hash": job}


@responses.activate
def test_malformed_answers_are_named() -> None:
    responses.get(f"{HOST}/rest/executor/info/{'b' * 40}", body="<html>")
    with pytest.raises(WebGMEError, match="not JSON"):
        ExecutorClient(HOST).get_info("b" * 40)
    responses.get(f"{HOST}/rest/blob/metadata/{'c' * 40}", json=["not", "a", "dict"])
    with pytest.raises(WebGMEError, match="expected a JSON object"):
        BlobClient(HOST).metadata("c" * 40)


def test_an_existing_mongo_gets_a_database_per_stack() -> None:
    from deepforge_dev.stack import _with_database

    uri = "mongodb://user:pw@db.example:27017/admin?authSource=admin"
    assert _with_database(uri, "deepforge_1") == "mongodb://user:pw@db.example:27017/deepforge_1?authSource=admin"
    assert _with_database("mongodb://127.0.0.1:27017", "d") == "mongodb://127.0.0.1:27017/d"


def test_executor_status_is_webgmes_vocabulary() -> None:
    """One enum: its values are JobInfo.js's strings, it serialises as them, and 'finished' is JobInfo's list."""
    import json

    from deepforge_adapters.webgme.executor import FINISHED_STATUSES, ExecutorStatus, is_finished

    assert json.dumps({"status": ExecutorStatus.FAILED_UNZIP}) == '{"status": "FAILED_UNZIP"}'
    assert f"{ExecutorStatus.SUCCESS}" == "SUCCESS"
    assert {s for s in ExecutorStatus if not s.finished} == {"CREATED", "RUNNING"}
    assert len(FINISHED_STATUSES) == 12 and is_finished("CANCELED") and not is_finished("RUNNING")
