"""The ``local`` backend: round trips, dataInfo shape, confinement to the root, deletes, copies, integrity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from pathlib import Path

import blake3
import pytest
from deepforge_adapters.config import ConfigSchema, Field
from deepforge_adapters.errors import DataInfoError, IntegrityError, NotFoundError, StorageError
from deepforge_adapters.hashing import CHUNK_SIZE
from deepforge_adapters.secrets import REDACTED, redact
from deepforge_adapters.storage import DataInfo, get_client
from deepforge_adapters.storage.local import LocalStorage, default_root

DATA = os.urandom(CHUNK_SIZE * 3 + 17)


def test_put_stream_then_get_round_trips(local_store: LocalStorage, tmp_path: Path) -> None:
    info = local_store.put_file_stream("guest+proj/executions/_K_a_b/model", io.BytesIO(DATA))
    assert info.backend == "local"
    assert info.data["filename"] == "guest+proj/executions/_K_a_b/model"
    assert info.data["size"] == len(DATA)
    assert info.data["blake3"] == blake3.blake3(DATA).hexdigest()
    assert isinstance(info.data["mtime"], float)
    assert set(info.data) == {"filename", "size", "blake3", "mtime"}
    assert DataInfo.from_json(info.dumps()) == info

    dest = local_store.get_file(info, tmp_path / "out" / "model")
    assert dest.read_bytes() == DATA
    with local_store.get_file_stream(info) as f:
        assert f.read(10) == DATA[:10]
        assert f.read() == DATA[10:]


def test_put_overwrites_atomically(local_store: LocalStorage) -> None:
    local_store.put_file_stream("x", io.BytesIO(b"old"))
    info = local_store.put_file_stream("x", io.BytesIO(b"new!"))
    assert (local_store.root / "x").read_bytes() == b"new!"
    assert info.data["size"] == 4


class _Broken(io.RawIOBase):
    def __init__(self) -> None:
        self.sent = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.sent:
            self.sent = True
            return b"partial bytes"
        raise ConnectionError("source went away")


def test_a_failed_upload_leaves_nothing_and_keeps_the_old_file(local_store: LocalStorage) -> None:
    local_store.put_file_stream("d/x", io.BytesIO(b"old"))
    with pytest.raises(ConnectionError):
        local_store.put_file_stream("d/x", _Broken())
    with pytest.raises(ConnectionError):
        local_store.put_file_stream("d/new", _Broken())
    assert sorted(os.listdir(local_store.root / "d")) == ["x"]
    assert (local_store.root / "d" / "x").read_bytes() == b"old"


def test_a_short_upload_is_not_stored(local_store: LocalStorage) -> None:
    with pytest.raises(IntegrityError, match="delivered 3 bytes, expected 10; nothing stored"):
        local_store.put_file_stream("short", io.BytesIO(b"abc"), size=10)
    assert not (local_store.root / "short").exists()
    assert os.listdir(local_store.root) == []


def test_stat(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("s/t", io.BytesIO(DATA))
    assert local_store.stat("s/t") == info
    assert local_store.stat("s//./t") == info  # the same name, canonicalised
    with pytest.raises(NotFoundError, match="'s/none': no such file"):
        local_store.stat("s/none")
    with pytest.raises(StorageError, match="is a directory"):
        local_store.stat("s")


# ---------------------------------------------------------------------------------------------- confinement


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "empty name"),
        ("/", "empty name"),
        ("./", "refers to the storage root"),
        ("../escape", "'..' is not allowed"),
        ("a/../../escape", "'..' is not allowed"),
        ("a/..", "'..' is not allowed"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("C:\\Windows\\x", "absolute paths are not allowed"),
        ("a\x00b", "NUL byte"),
    ],
)
def test_names_that_could_escape_are_rejected(local_store: LocalStorage, name: str, fragment: str) -> None:
    for call in (
        lambda: local_store.put_file_stream(name, io.BytesIO(b"x")),
        lambda: local_store.stat(name),
        lambda: local_store.delete_dir(name),
    ):
        with pytest.raises(StorageError) as info:
            call()
        assert fragment in str(info.value)
        assert info.value.backend == "local"
        assert info.value.name in (name, repr(name))
    assert not (local_store.root.parent / "escape").exists()


def test_datainfo_filenames_are_confined_too(local_store: LocalStorage) -> None:
    sha = "0" * 64
    evil = DataInfo("local", {"filename": "../../etc/passwd", "size": 1, "sha256": sha, "mtime": 0.0})
    for call in (local_store.get_file_stream, local_store.delete_file, local_store.get_metadata):
        with pytest.raises(StorageError, match=r"'\.\.' is not allowed"):
            call(evil)


def test_symlink_out_of_the_root_is_rejected(local_store: LocalStorage, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"top secret")
    local_store.root.mkdir(parents=True)
    (local_store.root / "link").symlink_to(outside)
    (local_store.root / "filelink").symlink_to(outside / "secret")
    with pytest.raises(StorageError, match="resolves outside the storage root"):
        local_store.put_file_stream("link/planted", io.BytesIO(b"x"))
    with pytest.raises(StorageError, match="resolves outside the storage root"):
        local_store.stat("filelink")
    with pytest.raises(StorageError, match="resolves outside the storage root"):
        local_store.delete_dir("link")
    assert sorted(os.listdir(outside)) == ["secret"]


def test_symlink_inside_the_root_is_followed(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("real/file", io.BytesIO(b"data"))
    (local_store.root / "alias").symlink_to(local_store.root / "real")
    assert local_store.stat("alias/file").data["blake3"] == info.data["blake3"]


def test_root_that_is_a_symlink_works(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "linked").symlink_to(tmp_path / "real")
    store = LocalStorage({"root": str(tmp_path / "linked")})
    store.put_file_stream("x", io.BytesIO(b"1"))
    assert (tmp_path / "real" / "x").read_bytes() == b"1"


def test_name_collisions_with_directories_are_clear_errors(local_store: LocalStorage) -> None:
    local_store.put_file_stream("dir/file", io.BytesIO(b"x"))
    with pytest.raises(StorageError, match="a directory of that name exists"):
        local_store.put_file_stream("dir", io.BytesIO(b"x"))
    with pytest.raises(StorageError, match="a parent of this name is a file"):
        local_store.put_file_stream("dir/file/child", io.BytesIO(b"x"))


# ---------------------------------------------------------------------------------------------- deletes, copy


def test_delete_file_removes_it_and_empty_parents(local_store: LocalStorage) -> None:
    keep = local_store.put_file_stream("a/keep", io.BytesIO(b"k"))
    gone = local_store.put_file_stream("a/b/c/gone", io.BytesIO(b"g"))
    local_store.delete_file(gone)
    assert not (local_store.root / "a" / "b").exists()
    assert local_store.stat("a/keep") == keep
    with pytest.raises(NotFoundError):
        local_store.delete_file(gone)


def test_delete_dir(local_store: LocalStorage) -> None:
    for name in ("job/out/a", "job/out/sub/b", "job/other", "jobs/x"):
        local_store.put_file_stream(name, io.BytesIO(name.encode()))
    local_store.delete_dir("job/out")
    assert not (local_store.root / "job" / "out").exists()
    assert local_store.stat("job/other").data["size"] == len(b"job/other")
    local_store.delete_dir("job")
    assert local_store.stat("jobs/x")  # a sibling that merely shares the prefix string survives
    local_store.delete_dir("job")  # already gone: nothing to do
    with pytest.raises(StorageError, match="is a file, not a directory"):
        local_store.delete_dir("jobs/x")


def test_copy_is_a_new_verified_file(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("src", io.BytesIO(DATA))
    calls: list[int] = []
    copied = local_store.copy(info, "dst/copy", progress=lambda d, t: calls.append(d))
    assert copied.data["filename"] == "dst/copy"
    assert copied.data["blake3"] == info.data["blake3"]
    assert (local_store.root / "dst" / "copy").read_bytes() == DATA
    assert calls[-1] == len(DATA)
    local_store.delete_file(info)
    assert local_store.stat("dst/copy") == copied  # independent of the source


def test_copy_of_a_changed_source_fails_and_stores_nothing(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("src", io.BytesIO(b"abcd"))
    (local_store.root / "src").write_bytes(b"abce")
    with pytest.raises(IntegrityError):
        local_store.copy(info, "dst")
    assert not (local_store.root / "dst").exists()


# ---------------------------------------------------------------------------------------------- integrity


def test_size_change_is_detected_on_open(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("f", io.BytesIO(b"1234"))
    (local_store.root / "f").write_bytes(b"12345")
    with pytest.raises(IntegrityError, match="file is 5 bytes but the dataInfo records 4"):
        local_store.get_file_stream(info)
    with pytest.raises(IntegrityError, match="file is 5 bytes"):
        local_store.get_metadata(info)


def test_content_change_is_detected_when_read_to_the_end(local_store: LocalStorage, tmp_path: Path) -> None:
    info = local_store.put_file_stream("f", io.BytesIO(DATA))
    tampered = bytearray(DATA)
    tampered[-1] ^= 0xFF
    (local_store.root / "f").write_bytes(bytes(tampered))
    with pytest.raises(IntegrityError, match=r"blake3 is .* but the dataInfo records"):
        local_store.get_file(info, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert os.listdir(tmp_path) == ["store"]


def test_file_that_grew_while_reading_is_detected(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("f", io.BytesIO(b"abc"))
    with local_store.get_file_stream(info) as f:
        with open(local_store.root / "f", "ab") as grow:
            grow.write(b"more")
        with pytest.raises(IntegrityError, match="grew past the recorded 3 bytes"):
            f.read()


def test_missing_file(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("f", io.BytesIO(b"abc"))
    (local_store.root / "f").unlink()
    with pytest.raises(NotFoundError):
        local_store.get_file_stream(info)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("e93b7917c1fc457e4041cf7d5f0568ef8d91040c", "must be an object, got str"),
        ({"size": 1, "sha256": "0" * 64}, "'filename'"),
        ({"filename": "f", "sha256": "0" * 64}, "'size'"),
        ({"filename": "f", "size": True, "sha256": "0" * 64}, "'size'"),
        ({"filename": "f", "size": 1, "sha256": "XYZ"}, "'sha256'"),
        ({"filename": "f", "size": 1, "blake3": "XYZ"}, "'blake3'"),
        ({"filename": "f", "size": 1}, "'blake3'"),
    ],
)
def test_malformed_local_datainfo(local_store: LocalStorage, data: object, fragment: str) -> None:
    with pytest.raises(DataInfoError) as info:
        local_store.get_file_stream(DataInfo("local", data))
    assert fragment in str(info.value)


def test_datainfo_of_another_backend_is_refused(local_store: LocalStorage) -> None:
    with pytest.raises(StorageError, match="belongs to backend 's3'"):
        local_store.get_file_stream(DataInfo("s3", {"filename": "f"}))


# ---------------------------------------------------------------------------------------------- metadata, keys


def test_metadata_cache_key_digest_and_url(local_store: LocalStorage) -> None:
    info = local_store.put_file_stream("m", io.BytesIO(b"content"))
    h = blake3.blake3(b"content").hexdigest()
    assert local_store.get_metadata(info) == {"size": 7, "blake3": h, "mtime": info.data["mtime"]}
    assert local_store.get_cache_key(info) == f"local/{h[:2]}/{h[2:]}"
    assert local_store.get_content_digest(info) == ("blake3", h)
    assert local_store.get_download_url(info) is None


# ---------------------------------------------------------------------------------------------- older dataInfos


def sha256_datainfo(local_store: LocalStorage, name: str, data: bytes) -> DataInfo:
    """A dataInfo as this backend wrote it before BLAKE3: ``sha256`` where ``blake3`` is now (verbatim JSON)."""
    path = local_store.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    text = json.dumps(
        {
            "backend": "local",
            "data": {"filename": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "mtime": 1.5},
        }
    )
    return DataInfo.from_json(text)


def test_a_sha256_datainfo_written_before_blake3_is_read_and_verified(
    local_store: LocalStorage, tmp_path: Path
) -> None:
    info = sha256_datainfo(local_store, "old/model", DATA)
    assert local_store.get_file(info, tmp_path / "out").read_bytes() == DATA
    with local_store.get_file_stream(info) as f:
        assert f.read() == DATA
    sha = hashlib.sha256(DATA).hexdigest()
    assert local_store.get_content_digest(info) == ("sha256", sha)
    assert local_store.get_cache_key(info) == f"local/{sha[:2]}/{sha[2:]}"
    assert local_store.get_metadata(info) == {"size": len(DATA), "sha256": sha, "mtime": 1.5}
    copied = local_store.copy(info, "new/model")  # a copy is a new artifact: written with blake3
    assert copied.data["blake3"] == blake3.blake3(DATA).hexdigest() and "sha256" not in copied.data

    tampered = bytearray(DATA)
    tampered[0] ^= 1
    (local_store.root / "old" / "model").write_bytes(bytes(tampered))
    with pytest.raises(IntegrityError, match=r"sha256 is .* but the dataInfo records"):
        local_store.get_file(info, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_a_sha256_datainfo_is_fetched_into_the_cache_verified(local_store: LocalStorage, tmp_path: Path) -> None:
    from deepforge_adapters.storage.cache import WorkerCache

    cache = WorkerCache(tmp_path / "cache")
    info = sha256_datainfo(local_store, "old/input", b"old bytes")
    path = cache.fetch(local_store, info)
    assert path.read_bytes() == b"old bytes"
    os.utime(path, ns=(1, 1))  # mtime moved: the hit re-hashes with the entry's own algorithm (sha256)
    assert cache.fetch(local_store, info) == path


# ---------------------------------------------------------------------------------------------- config


def test_root_from_config_env_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPFORGE_LOCAL_ROOT", raising=False)
    monkeypatch.setenv("DEEPFORGE_STORAGE_ROOT", str(tmp_path / "env-root"))
    assert get_client("local").root == (tmp_path / "env-root").resolve()  # type: ignore[attr-defined]
    assert LocalStorage({"root": str(tmp_path / "given")}).root == (tmp_path / "given").resolve()
    monkeypatch.delenv("DEEPFORGE_STORAGE_ROOT")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert LocalStorage().root == (tmp_path / "xdg" / "deepforge" / "storage").resolve()
    assert default_root({"HOME": "/h"}).parts[-3:] == ("share", "deepforge", "storage")
    assert default_root({"XDG_DATA_HOME": "/x"}) == Path("/x/deepforge/storage")


def test_schema_and_repr(local_store: LocalStorage) -> None:
    assert LocalStorage.schema.to_config_structure()[0]["name"] == "root"
    assert "LocalStorage" in repr(local_store)
    assert LocalStorage.name == "Local Storage"


def test_the_base_registers_the_configs_secrets_for_redaction(tmp_path: Path) -> None:
    class Tokened(LocalStorage):  # any backend: the base constructor does it, not the backend or its caller
        id = "tokened"
        schema = ConfigSchema("tokened", (Field("root"), Field("token", is_auth=True)))

    secret = f"tok-{uuid.uuid4().hex}"
    assert redact(f"sent {secret}") == f"sent {secret}"  # unknown so far
    Tokened({"root": str(tmp_path), "token": secret})
    assert redact(f"sent {secret}") == f"sent {REDACTED}"


def test_get_and_put_of_files_copy_in_the_kernel_and_hash_what_landed(
    local_store: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified local copy never moves the bytes through Python (issue 14: get ÷ cp+fsync >= 0.8)."""
    from deepforge_adapters.storage import local as local_module

    calls: list[int] = []
    real = os.copy_file_range

    def counted(*args: int) -> int:
        calls.append(args[2])
        return real(*args)

    def no_reads(*args: object) -> bytes:
        raise AssertionError("a file-to-file copy must not read() through Python")

    monkeypatch.setattr(local_module.os, "copy_file_range", counted)
    (tmp_path / "src").write_bytes(DATA)
    with open(tmp_path / "src", "rb") as src:
        info = local_store.put_file_stream("k", src, size=len(DATA))
    assert calls, "put of an open file did not use copy_file_range"
    assert info.data["blake3"] == blake3.blake3(DATA).hexdigest()
    calls.clear()
    monkeypatch.setattr(local_module._VerifyingFile, "read", no_reads)
    assert local_store.get_file(info, tmp_path / "out").read_bytes() == DATA
    assert calls, "get into a file did not use copy_file_range"


def test_put_of_a_partly_read_file_stores_the_rest(local_store: LocalStorage, tmp_path: Path) -> None:
    (tmp_path / "src").write_bytes(DATA)
    with open(tmp_path / "src", "rb") as src:
        src.read(1000)  # buffered: the OS offset is past 1000, tell() is 1000
        info = local_store.put_file_stream("rest", src)
        assert src.tell() == len(DATA)
    assert (local_store.root / "rest").read_bytes() == DATA[1000:]
    assert info.data["size"] == len(DATA) - 1000


def test_a_kernel_copy_of_a_changed_file_is_refused(local_store: LocalStorage, tmp_path: Path) -> None:
    from deepforge_adapters.streams import copy_stream

    info = local_store.put_file_stream("f", io.BytesIO(DATA))
    with local_store.get_file_stream(info) as f:
        with open(local_store.root / "f", "ab") as grow:
            grow.write(b"more")
        with open(tmp_path / "out", "w+b") as out, pytest.raises(IntegrityError, match="grew past the recorded"):
            copy_stream(f, out)
    (local_store.root / "f").write_bytes(DATA[:-1] + bytes([DATA[-1] ^ 1]))
    for mode in ("w+b", "wb"):  # a read-write destination is hashed back; a write-only one through the source
        with (
            local_store.get_file_stream(info) as f,
            open(tmp_path / mode, mode) as out,
            pytest.raises(IntegrityError, match=r"blake3 is .* but the dataInfo records"),
        ):
            copy_stream(f, out)
