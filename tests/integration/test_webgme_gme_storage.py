"""The ``gme`` storage adapter against a real WebGME server."""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from deepforge_adapters import storage
from deepforge_adapters.errors import DataInfoError, NotFoundError, StorageError
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage.cache import WorkerCache
from deepforge_adapters.storage.gme import GmeStorage
from deepforge_dev.stack import WebGMEStack

from tests.fixtures.webgme import StackFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def gme(webgme_server: WebGMEStack) -> GmeStorage:
    client = storage.get_client("gme", {"host": webgme_server.url})
    assert isinstance(client, GmeStorage)
    return client


def test_put_get_roundtrip_with_deepforge_data_info(gme: GmeStorage, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    done: list[int] = []
    info = gme.put_file("guest+proj/executions/run1/model", src, progress=lambda d, t: done.append(d))
    assert info.backend == "gme" and len(info.data) == 40
    assert DataInfo.from_json(info.dumps()) == info and info.dumps() == f'{{"backend":"gme","data":"{info.data}"}}'
    assert done[-1] == src.stat().st_size
    got: list[tuple[int, int | None]] = []
    out = gme.get_file(info, tmp_path / "out" / "model.bin", progress=lambda d, t: got.append((d, t)))
    assert out.read_bytes() == src.read_bytes() and got[-1] == (src.stat().st_size, src.stat().st_size)
    with gme.get_file_stream(info) as f:
        assert f.read() == src.read_bytes()


def test_metadata_cache_key_and_digest_follow_content(gme: GmeStorage) -> None:
    data = b"weights v1"
    sha1 = hashlib.sha1(data).hexdigest()
    a = gme.put_file_stream("a/model", io.BytesIO(data))
    b = gme.put_file_stream("b/renamed", io.BytesIO(data))
    c = gme.put_file_stream("a/model", io.BytesIO(b"weights v2"))
    assert a != b  # other name: other metadata hash ...
    assert gme.get_cache_key(a) == gme.get_cache_key(b) == f"gme/{sha1[:2]}/{sha1[2:]}"  # ... same content
    assert gme.get_cache_key(c) != gme.get_cache_key(a)
    assert gme.get_content_digest(a) == ("sha1", sha1)
    md = gme.get_metadata(a)
    assert md["size"] == len(data) and md["name"] == "a/model" and md["content"] == sha1


def test_stat_by_metadata_hash(gme: GmeStorage) -> None:
    info = gme.put_file_stream("s", io.BytesIO(b"s"))
    assert gme.stat(info.data) == info
    with pytest.raises(NotFoundError):
        gme.stat("f" * 40)
    with pytest.raises(StorageError, match="metadata hash"):
        gme.stat("some/path")


def test_download_url_is_served_by_the_server(gme: GmeStorage) -> None:
    info = gme.put_file_stream("u.txt", io.BytesIO(b"by url"))
    url = gme.get_download_url(info)
    assert url == f"{gme.host}/rest/blob/download/{info.data}/"
    assert requests.get(url, timeout=30).content == b"by url"


def test_delete_is_a_logged_no_op(gme: GmeStorage, caplog: pytest.LogCaptureFixture) -> None:
    info = gme.put_file_stream("d", io.BytesIO(b"d"))
    with caplog.at_level(logging.INFO, logger="deepforge_adapters.storage.gme"):
        gme.delete_file(info)
        gme.delete_dir("guest+proj/executions")
    assert "not deleted" in caplog.text and info.data in caplog.text
    assert gme.stat(info.data) == info  # still there: immutable


def test_bad_data_info_is_refused(gme: GmeStorage) -> None:
    with pytest.raises(DataInfoError, match="40-hex"):
        gme.get_metadata(DataInfo("gme", {"not": "a hash"}))
    with pytest.raises(StorageError, match="belongs to backend 's3'"):
        gme.get_metadata(DataInfo("s3", "a" * 40))


def test_host_defaults_and_secret_masking(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("DEEPFORGE_HOST", raising=False)
    monkeypatch.delenv("DEEPFORGE_GME_HOST", raising=False)
    assert GmeStorage().host == "http://127.0.0.1:8888"
    monkeypatch.setenv("DEEPFORGE_HOST", "http://127.0.0.1:1/")
    secret = "tok-very-secret-42"
    client = GmeStorage({"apiToken": secret})
    assert client.host == "http://127.0.0.1:1" and secret not in repr(client)
    assert client.blob.session.headers["x-api-token"] == secret
    with caplog.at_level(logging.DEBUG), pytest.raises(Exception) as err:
        client.stat("a" * 40)  # nothing listens on port 1
    assert secret not in str(err.value) and secret not in caplog.text


def test_api_token_is_used_when_the_server_refuses_guests(
    webgme_stack_factory: StackFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = webgme_stack_factory(webgme_auth=True, allow_guests=False)
    stack.add_user("bob", "pw-bob")
    token = stack.create_token("bob", "pw-bob")
    with caplog.at_level(logging.DEBUG):
        gme = GmeStorage({"host": stack.url, "apiToken": token})
        info = gme.put_file_stream("private", io.BytesIO(b"private bytes"))
        assert gme.get_file(info, tmp_path / "p").read_bytes() == b"private bytes"
        with pytest.raises(StorageError) as err:
            GmeStorage({"host": stack.url}).get_metadata(info)  # a guest is refused
    assert "not authenticated" in str(err.value)  # WebGME redirects guests to its login page
    assert token not in caplog.text and token not in str(err.value) and token not in repr(gme)


def test_a_cached_fetch_costs_one_metadata_request(webgme_server: WebGMEStack, tmp_path: Path) -> None:
    """The worker cache describes an input once (``info``) and downloads it without asking again."""
    data = os.urandom(300_000)
    info = GmeStorage({"host": webgme_server.url}).put_file_stream("inputs/data", io.BytesIO(data))

    def fetch_through_a_fresh_client(cache: WorkerCache) -> tuple[Path, list[str]]:
        client = GmeStorage({"host": webgme_server.url})  # what a worker's job has: nothing known yet
        seen: list[str] = []
        client.blob.session.hooks["response"].append(
            lambda response, *args, **kwargs: seen.append(
                f"{response.request.method} {urlsplit(response.request.url).path}"
            )
        )
        return cache.fetch(client, info), seen

    cache = WorkerCache(tmp_path / "cache")
    path, seen = fetch_through_a_fresh_client(cache)
    assert path.read_bytes() == data
    assert [r for r in seen if r.startswith("GET /rest/blob/metadata/")] == [f"GET /rest/blob/metadata/{info.data}"]
    assert [r for r in seen if r.startswith("GET /rest/blob/download/")] == [f"GET /rest/blob/download/{info.data}/"]
    path, seen = fetch_through_a_fresh_client(cache)  # a hit: described once, not downloaded
    assert seen == [f"GET /rest/blob/metadata/{info.data}"]
