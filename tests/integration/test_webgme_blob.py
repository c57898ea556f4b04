"""BlobClient against a real WebGME server: uploads, metadata, downloads, artifacts, interop, errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
import requests
from deepforge_adapters.errors import IntegrityError, NotFoundError, WebGMEError
from deepforge_adapters.webgme import BlobClient, file_metadata, metadata_hash
from deepforge_dev.stack import WebGMEStack

from tests.fixtures.webgme import StackFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def blob(webgme_server: WebGMEStack) -> BlobClient:
    return BlobClient(webgme_server.url)


class OneShotStream:
    """A non-seekable stream (like a pipe): proves uploads don't need seek or len."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self._data = io.BytesIO(data)
        self._chunk = chunk

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, self._chunk) if size > 0 else self._chunk)


def test_create_file_streams_and_hashes_match_local_computation(blob: BlobClient) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    progress: list[tuple[int, int | None]] = []
    md_hash, md = blob.create_file(
        "weights.bin", OneShotStream(data, 65536), progress=lambda done, total: progress.append((done, total))
    )
    content = hashlib.sha1(data).hexdigest()
    assert md["content"] == content and md["size"] == len(data)
    assert md_hash == metadata_hash(file_metadata("weights.bin", len(data), content)) == metadata_hash(md)
    assert progress[-1][0] == len(data)
    assert blob.metadata(md_hash)["content"] == content


def test_same_bytes_other_name_share_content_not_metadata(blob: BlobClient) -> None:
    h1, md1 = blob.create_file("a.txt", io.BytesIO(b"same"))
    h2, md2 = blob.create_file("dir/b.txt", io.BytesIO(b"same"))
    assert md1["content"] == md2["content"] and h1 != h2
    assert md2["name"] == "dir/b.txt"  # '/' travels URL-encoded in the filename


def test_empty_file(blob: BlobClient, tmp_path: Path) -> None:
    md_hash, md = blob.create_file("empty", io.BytesIO(b""))
    assert md["size"] == 0 and md["content"] == hashlib.sha1(b"").hexdigest()
    assert blob.download(md_hash, tmp_path / "e").read_bytes() == b""


def test_our_upload_is_read_back_identically_by_view_and_download(blob: BlobClient, webgme_server: WebGMEStack) -> None:
    data = os.urandom(200_000)
    md_hash, _ = blob.create_file("x.bin", io.BytesIO(data))
    for endpoint in ("view", "download"):
        raw = requests.get(f"{webgme_server.url}/rest/blob/{endpoint}/{md_hash}", timeout=30)
        assert raw.status_code == 200 and raw.content == data, endpoint
    stored = webgme_server.blob_dir / "wg-content" / hashlib.sha1(data).hexdigest()[:2]
    assert (stored / hashlib.sha1(data).hexdigest()[2:]).read_bytes() == data


def test_server_created_blob_is_read_by_our_client(
    blob: BlobClient, webgme_server: WebGMEStack, tmp_path: Path
) -> None:
    data = b"made by curl\n" * 1000
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", "@-",
         f"{webgme_server.url}/rest/blob/createFile/curl.txt"],
        input=data, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    ((md_hash, md),) = json.loads(out.stdout).items()
    assert md_hash == metadata_hash(md) and md["content"] == hashlib.sha1(data).hexdigest()
    assert blob.download(md_hash, tmp_path / "c.txt").read_bytes() == data
    with blob.open(md_hash, view=True) as f:
        assert f.read() == data


def test_server_js_blob_client_interop(blob: BlobClient, webgme_server: WebGMEStack) -> None:
    """WebGME's own Node BlobClient writes a file and an artifact; we read both, and it reads ours."""
    ours, _ = blob.create_file("ours.txt", io.BytesIO(b"from python"))
    js = """
    const BlobClient = require('webgme-engine').requirejs('blob/BlobClient');
    const url = new URL(process.argv[1]);
    const bc = new BlobClient({server: url.hostname, serverPort: +url.port, httpsecure: false,
                               logger: {debug(){}, info(){}, warn(){}, error: console.error}});
    (async () => {
      const fileHash = await bc.putFile('js.txt', Buffer.from('from node'));
      const art = bc.createArtifact('jsart');
      await art.addMetadataHash('py/ours.txt', process.argv[2]);
      await art.addFileAsSoftLink('js/one.txt', Buffer.from('one'));
      const artHash = await art.save();
      const back = await bc.getObjectAsString(process.argv[2]);
      console.log(JSON.stringify({fileHash, artHash, back}));
    })().catch(e => { console.error(e); process.exit(1); });
    """
    out = subprocess.run(["node", "-e", js, webgme_server.url, ours], cwd=webgme_server.webgme_dir,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["back"] == "from python"
    with blob.open(res["fileHash"]) as f:
        assert f.read() == b"from node"
    art_md = blob.metadata(res["artHash"])
    assert art_md["contentType"] == "complex" and metadata_hash(art_md) == res["artHash"]
    with blob.open(res["artHash"], subpath="py/ours.txt") as f:
        assert f.read() == b"from python"


def test_artifact_of_soft_links_downloads_as_zip(blob: BlobClient, tmp_path: Path) -> None:
    files = {"main.py": b"print('hi')\n", "data/input.bin": os.urandom(5000)}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    art = blob.upload_artifact("job", {rel: tmp_path / rel for rel in files})
    md = blob.metadata(art)
    assert md["name"] == "job.zip" and md["contentType"] == "complex"
    assert md["size"] == sum(len(d) for d in files.values())
    assert all(entry["contentType"] == "softLink" for entry in md["content"].values())
    zip_path = blob.download(art, tmp_path / "job.zip")
    with zipfile.ZipFile(zip_path) as z:
        assert {n: z.read(n) for n in z.namelist()} == files
    with blob.open(art, subpath="data/input.bin") as f:
        assert f.read() == files["data/input.bin"]
    # The same entries give the same artifact hash: computed locally, confirmed by the server.
    again = blob.create_artifact("job", {rel: md["content"][rel]["content"] for rel in files})
    assert again == art


def test_missing_metadata_is_not_found(blob: BlobClient, tmp_path: Path) -> None:
    missing = "0" * 40
    with pytest.raises(NotFoundError, match=missing):
        blob.metadata(missing)
    with pytest.raises(NotFoundError):
        blob.download(missing, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()


def test_missing_artifact_entry_is_not_found(blob: BlobClient) -> None:
    one, _ = blob.create_file("one", io.BytesIO(b"1"))
    art = blob.create_artifact("a", {"one": one})
    with pytest.raises(NotFoundError, match="nope"):
        blob.open(art, subpath="nope")


def test_bad_hash_is_rejected_before_any_request(blob: BlobClient) -> None:
    with pytest.raises(WebGMEError, match="40 lowercase hex"):
        blob.metadata("../../etc/passwd")


def test_declared_size_mismatch_is_an_integrity_error(blob: BlobClient) -> None:
    with pytest.raises(IntegrityError, match="short of the expected 10"):
        blob.create_file("short", io.BytesIO(b"abc"), size=10)


def test_unreachable_server_names_the_endpoint() -> None:
    from deepforge_adapters.http import make_session
    from deepforge_dev.stack import free_port

    client = BlobClient(f"http://127.0.0.1:{free_port()}", session=make_session(retries=0))
    with pytest.raises(WebGMEError, match="createFile 'f'"):
        client.create_file("f", OneShotStream(b"data"))


def test_auth_headers_are_sent_on_every_call_including_downloads(blob: BlobClient, webgme_server: WebGMEStack) -> None:
    seen: list[dict[str, str]] = []
    client = BlobClient(webgme_server.url, api_token="tok-123")
    client.session.hooks["response"].append(lambda r, *a, **k: seen.append(dict(r.request.headers)))
    md_hash, _ = client.create_file("h.txt", io.BytesIO(b"h"))
    client.metadata(md_hash)
    with client.open(md_hash) as f:
        f.read()
    assert len(seen) >= 4 and all(h.get("x-api-token") == "tok-123" for h in seen)
    bearer = BlobClient(webgme_server.url, webgme_token="jwt-abc")
    assert bearer.session.headers["Authorization"] == "Bearer jwt-abc"


def test_server_restart_mid_download_is_resumed(webgme_stack_factory: StackFactory, tmp_path: Path) -> None:
    stack: WebGMEStack = webgme_stack_factory()
    client = BlobClient(stack.url)
    data = os.urandom(64 * 1024 * 1024)
    md_hash, _ = client.create_file("big.bin", io.BytesIO(data))
    got = bytearray()
    with client.open(md_hash) as f:
        got += f.read(1024 * 1024)
        stack.stop_server(hard=True)  # the connection breaks mid-body
        restart = threading.Thread(target=stack.start_server)
        restart.start()
        while chunk := f.read(1024 * 1024):
            got += chunk
        restart.join()
        assert f._resumes >= 1
    assert bytes(got) == data


def test_interrupted_zip_download_fails_clearly(webgme_stack_factory: StackFactory, tmp_path: Path) -> None:
    stack: WebGMEStack = webgme_stack_factory()
    client = BlobClient(stack.url)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(64 * 1024 * 1024))
    art = client.upload_artifact("bigzip", {"big.bin": big})
    with client.open(art) as f:
        f.read(1024 * 1024)
        stack.stop_server(hard=True)
        time.sleep(0.2)
        with pytest.raises(WebGMEError, match="cannot be resumed"):
            while f.read(1024 * 1024):
                pass
