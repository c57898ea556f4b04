"""The storage conformance suite: what every :class:`~deepforge_adapters.storage.StorageClient` must do.

Every built-in backend runs it (``tests/conformance/test_storage_conformance.py``); a third-party backend
runs the same tests by subclassing :class:`StorageConformance` in a test module and giving ONE fixture,
``storage_backend``, that returns a configured client (a fresh, empty store or namespace per test is best)
wrapped in a :class:`StorageBackend` that says how to change stored bytes behind the adapter's back::

    import pytest
    from deepforge_adapters.testing.storage import StorageBackend, StorageConformance

    class TestVaultStorage(StorageConformance):
        @pytest.fixture
        def storage_backend(self, tmp_path):
            client = VaultStorage({"url": ..., "token": ...})
            return StorageBackend(client, tamper=lambda info, data: vault_admin.overwrite(info.data["key"], data))

What is checked: round trips of an empty and a multi-MiB file through the file and the stream APIs (with
progress, and from a stream of unknown size); ``stat`` and ``info`` of what was written (size, digest,
metadata, the derived cache key); the dataInfo's JSON round trip; ``copy``; ``delete_file`` and
``delete_dir`` (or the documented no-op of an immutable store, ``deletes=False``); the cache key following
the content (same bytes, same key where the store is content-addressed; a rewrite changes it); integrity (a
stale dataInfo never reads other bytes; bytes changed behind the adapter's back are refused on read, by the
worker cache too, with an :class:`~deepforge_adapters.errors.IntegrityError` naming the backend); and a
missing object's :class:`~deepforge_adapters.errors.NotFoundError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from ..errors import IntegrityError, NotFoundError, StorageError
from ..hashing import bytes_digest
from ..storage.base import DataInfo, StorageClient
from ..storage.cache import WorkerCache

MiB = 1024 * 1024
#: Big enough to be multi-part for S3's smallest part size (5 MiB) and many chunks everywhere else.
LARGE = 6 * MiB + 17


@dataclass
class StorageBackend:
    """A configured client plus what the suite cannot know about its store.

    ``tamper(data_info, data)``: replace the stored bytes of ``data_info`` by ``data`` (same length) without
    going through the adapter, as another writer or a disk fault would.  ``stat_name(data_info, name)``: what
    :meth:`StorageClient.stat` takes for the artifact written under ``name`` (default ``name``; a
    content-addressed blob store takes a hash).  ``missing_name``: a ``stat`` argument naming nothing.
    ``deletes``: ``False`` for an immutable store whose ``delete_file``/``delete_dir`` are documented no-ops.
    """

    client: StorageClient
    tamper: Callable[[DataInfo, bytes], None] | None = None
    stat_name: Callable[[DataInfo, str], str] | None = None
    missing_name: str = "conformance-missing/never-written"
    deletes: bool = True

    def stat_of(self, data_info: DataInfo, name: str) -> DataInfo:
        return self.client.stat(self.stat_name(data_info, name) if self.stat_name else name)


def payload(size: int) -> bytes:
    """Random bytes: unique per call (no two tests share content), and a misplaced chunk changes the digest."""
    return os.urandom(size)


class OneWayStream:
    """A readable of unknown size that cannot seek (a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)


def read_all(client: StorageClient, data_info: DataInfo, chunk: int = 256 * 1024) -> bytes:
    """Every byte through the stream API, in chunks (so end-of-stream checks run as they do for callers)."""
    parts = []
    with client.get_file_stream(data_info) as f:
        while block := f.read(chunk):
            parts.append(block)
    return b"".join(parts)


def _get(backend: StorageClient | StorageBackend) -> StorageBackend:
    return backend if isinstance(backend, StorageBackend) else StorageBackend(backend)


class StorageConformance:
    """Subclass in a test module and provide the ``storage_backend`` fixture (see the module docstring)."""

    @pytest.fixture
    def backend(self, storage_backend: StorageClient | StorageBackend) -> StorageBackend:
        return _get(storage_backend)

    @pytest.fixture
    def prefix(self) -> str:
        """A fresh name prefix per test, so tests sharing one store never see each other's artifacts."""
        return f"conformance-{uuid.uuid4().hex[:10]}"

    # ------------------------------------------------------------------------------------ round trips
    def test_empty_file_round_trips_through_the_file_api(
        self, backend: StorageBackend, prefix: str, tmp_path: Path
    ) -> None:
        client = backend.client
        (tmp_path / "empty").write_bytes(b"")
        name = f"{prefix}/empty"
        info = client.put_file(name, tmp_path / "empty")
        assert info.backend == client.id
        described = client.info(info)
        assert described.size == 0
        if described.digest is not None:
            assert bytes_digest(b"", described.digest[0]) == described.digest[1]
        assert backend.stat_of(info, name) == info
        assert client.get_file(info, tmp_path / "out" / "empty").read_bytes() == b""
        assert read_all(client, info) == b""

    def test_empty_stream_round_trips(self, backend: StorageBackend, prefix: str, tmp_path: Path) -> None:
        client = backend.client
        info = client.put_file_stream(f"{prefix}/empty-stream", io.BytesIO(b""), size=0)
        assert client.info(info).size == 0
        assert read_all(client, info) == b""
        assert client.get_file(info, tmp_path / "e").read_bytes() == b""

    def test_multi_mib_file_round_trips_with_progress(
        self, backend: StorageBackend, prefix: str, tmp_path: Path
    ) -> None:
        client = backend.client
        data = payload(LARGE)
        (tmp_path / "src").write_bytes(data)
        sent: list[tuple[int, int | None]] = []
        info = client.put_file(f"{prefix}/large", tmp_path / "src", progress=lambda d, t: sent.append((d, t)))
        assert sent and sent[-1] == (LARGE, LARGE), "upload progress must end at (size, size) for a file"
        assert len(sent) > 2, "upload progress must be reported while streaming, not only at the end"
        got: list[tuple[int, int | None]] = []
        out = client.get_file(info, tmp_path / "out" / "large", progress=lambda d, t: got.append((d, t)))
        assert out == tmp_path / "out" / "large"
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
        assert got and got[-1] == (LARGE, LARGE), "download progress must end at (size, size)"
        assert [p.name for p in out.parent.iterdir()] == ["large"]  # no temporary file left beside it

    def test_multi_mib_stream_of_unknown_size_round_trips(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        data = payload(LARGE)
        info = client.put_file_stream(f"{prefix}/piped", OneWayStream(data))
        assert client.info(info).size == LARGE
        assert hashlib.sha256(read_all(client, info)).digest() == hashlib.sha256(data).digest()
        sized = client.put_file_stream(f"{prefix}/sized", io.BytesIO(data), size=LARGE)
        assert hashlib.sha256(read_all(client, sized)).digest() == hashlib.sha256(data).digest()

    # ------------------------------------------------------------------------------------ describing
    def test_stat_and_info_describe_what_was_written(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        data = payload(1000)
        name = f"{prefix}/described"
        written = client.put_file_stream(name, io.BytesIO(data))
        assert backend.stat_of(written, name) == written
        info = client.info(written)
        assert info.size == len(data)
        if info.digest is not None:
            algorithm, hexdigest = info.digest
            assert bytes_digest(data, algorithm) == hexdigest  # hashlib's names and blake3
        assert client.get_metadata(written)["size"] == len(data)
        assert client.get_content_digest(written) == info.digest
        assert client.get_cache_key(written) == client.cache_key(info)

    def test_data_info_json_round_trips(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        data = payload(300)
        written = client.put_file_stream(f"{prefix}/json", io.BytesIO(data))
        text = written.dumps()
        assert json.loads(text) == {"backend": client.id, "data": written.data}
        again = DataInfo.from_json(text)
        assert again == written
        assert read_all(client, again) == data
        assert client.get_cache_key(again) == client.get_cache_key(written)

    # ------------------------------------------------------------------------------------ copy, delete
    def test_copy_is_an_independent_artifact(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        data = payload(5000)
        source = client.put_file_stream(f"{prefix}/source", io.BytesIO(data))
        copied = client.copy(source, f"{prefix}/copied")
        assert copied.backend == client.id and copied != source
        assert read_all(client, copied) == data
        assert backend.stat_of(copied, f"{prefix}/copied") == copied
        if backend.deletes:
            client.delete_file(source)
            assert read_all(client, copied) == data

    def test_delete_file(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        data = payload(100)
        name = f"{prefix}/doomed"
        info = client.put_file_stream(name, io.BytesIO(data))
        client.delete_file(info)
        if not backend.deletes:  # the documented no-op of an immutable store: still there, unchanged
            assert read_all(client, info) == data
            return
        with pytest.raises(NotFoundError) as caught:
            backend.stat_of(info, name)
        assert caught.value.backend == client.id
        with pytest.raises(NotFoundError):
            read_all(client, info)

    def test_delete_dir_removes_the_tree_and_nothing_else(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        names = (f"{prefix}/run/a", f"{prefix}/run/sub/b")
        inside = {n: client.put_file_stream(n, io.BytesIO(n.encode())) for n in names}
        sibling_name = f"{prefix}/run-other/c"
        sibling = client.put_file_stream(sibling_name, io.BytesIO(b"sibling"))
        client.delete_dir(f"{prefix}/run")
        client.delete_dir(f"{prefix}/run")  # already gone: nothing to do, no error
        assert backend.stat_of(sibling, sibling_name) == sibling  # shares the prefix string, not the directory
        assert read_all(client, sibling) == b"sibling"
        for name, info in inside.items():
            if backend.deletes:
                with pytest.raises(NotFoundError):
                    backend.stat_of(info, name)
            else:
                assert read_all(client, info) == name.encode()

    # ------------------------------------------------------------------------------------ cache keys
    def test_cache_key_follows_content(self, backend: StorageBackend, prefix: str) -> None:
        client = backend.client
        first_bytes, second_bytes = payload(64), payload(96)
        first = client.put_file_stream(f"{prefix}/model", io.BytesIO(first_bytes))
        same = client.put_file_stream(f"{prefix}/renamed", io.BytesIO(first_bytes))
        key = client.get_cache_key(first)
        parts = key.split("/")
        assert parts[0] == client.id and not PurePosixPath(key).is_absolute()
        assert all(p not in ("", ".", "..") for p in parts), f"cache key {key!r} is not a safe relative path"
        assert client.get_cache_key(first) == key  # stable
        if client.info(first).content_addressed:
            assert client.get_cache_key(same) == key  # same bytes, same entry, whatever the name
        else:
            assert client.get_cache_key(same) != key  # another object
        rewritten = client.put_file_stream(f"{prefix}/model", io.BytesIO(second_bytes))
        assert client.get_cache_key(rewritten) != key

    def test_worker_cache_fetches_what_was_written(self, backend: StorageBackend, prefix: str, tmp_path: Path) -> None:
        client = backend.client
        data = payload(2000)
        info = client.put_file_stream(f"{prefix}/input", io.BytesIO(data))
        cache = WorkerCache(tmp_path / "cache")
        path = cache.fetch(client, info)
        assert path.read_bytes() == data
        assert cache.fetch(client, info) == path

    # ------------------------------------------------------------------------------------ integrity
    def test_a_stale_data_info_never_reads_the_new_bytes(
        self, backend: StorageBackend, prefix: str, tmp_path: Path
    ) -> None:
        client = backend.client
        name = f"{prefix}/rewritten"
        old = client.put_file_stream(name, io.BytesIO(b"version one"))
        client.put_file_stream(name, io.BytesIO(b"version two!"))
        reads: list[Callable[[], bytes]] = [
            lambda: read_all(client, old),
            lambda: WorkerCache(tmp_path / "cache").fetch(client, old).read_bytes(),
        ]
        for read in reads:
            try:
                got = read()
            except (IntegrityError, NotFoundError) as exc:
                assert exc.backend == client.id
            else:  # an immutable store still serves what the old dataInfo named
                assert got == b"version one"

    def test_bytes_changed_behind_the_adapters_back_are_refused(
        self, backend: StorageBackend, prefix: str, tmp_path: Path
    ) -> None:
        client = backend.client
        if backend.tamper is None:
            pytest.fail(
                f"the storage_backend fixture for {client.id!r} gives no tamper(data_info, data): the suite "
                "needs a way to change stored bytes behind the adapter's back (see StorageBackend)"
            )
        data = payload(3000)
        info = client.put_file_stream(f"{prefix}/victim", io.BytesIO(data))
        forged = bytes(b ^ 0x5A for b in data)  # same length, other bytes
        backend.tamper(info, forged)
        reads: list[Callable[[], object]] = [
            lambda: read_all(client, info),
            lambda: client.get_file(info, tmp_path / "out" / "victim"),
            lambda: WorkerCache(tmp_path / "cache").fetch(client, info),
        ]
        for read in reads:
            with pytest.raises(IntegrityError) as caught:
                read()
            assert caught.value.backend == client.id and str(caught.value)
        assert not (tmp_path / "out" / "victim").exists()
        cached = [p for p in (tmp_path / "cache" / "objects").rglob("*") if p.is_file()]
        assert cached == [], "a refused download must not be cached"

    # ------------------------------------------------------------------------------------ errors
    def test_a_missing_object_is_a_clear_not_found(self, backend: StorageBackend) -> None:
        client = backend.client
        with pytest.raises(NotFoundError) as caught:
            client.stat(backend.missing_name)
        assert isinstance(caught.value, StorageError) and caught.value.backend == client.id
        assert backend.missing_name in str(caught.value)


__all__ = ["LARGE", "OneWayStream", "StorageBackend", "StorageConformance", "payload", "read_all"]
