"""WorkerCache: one verified copy per content key, atomic downloads, cheap hit checks, LRU size cap."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from deepforge_adapters.errors import IntegrityError, StorageError
from deepforge_adapters.storage import DataInfo, ObjectInfo
from deepforge_adapters.storage.cache import WorkerCache
from deepforge_adapters.storage.local import LocalStorage


class CountingStore(LocalStorage):
    """Local storage that counts downloads and can be told to lie about the content (a broken backend)."""

    verifies_digest = False  # its corrupted stream checks nothing: the cache must hash it itself

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.downloads = 0
        self.corrupt_with: bytes | None = None
        self.key_override: str | None = None
        self.digest_override: tuple[str, str] | None = None

    def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
        self.downloads += 1
        if self.corrupt_with is not None:
            return io.BytesIO(self.corrupt_with)
        return super().get_file_stream(data_info)

    def cache_key(self, info: ObjectInfo) -> str:
        return self.key_override if self.key_override is not None else super().cache_key(info)

    def info(self, data_info: DataInfo) -> ObjectInfo:
        info = super().info(data_info)
        return dataclasses.replace(info, digest=self.digest_override) if self.digest_override else info


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore({"root": str(tmp_path / "store")})


@pytest.fixture
def cache(tmp_path: Path) -> WorkerCache:
    return WorkerCache(tmp_path / "cache")


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_fetch_downloads_once_then_hits(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("in/x", io.BytesIO(b"payload"))
    calls: list[tuple[int, int | None]] = []
    path = cache.fetch(store, info, progress=lambda d, t: calls.append((d, t)))
    assert path.read_bytes() == b"payload"
    assert path == cache.path_for(store, info)
    assert path.is_relative_to(cache.root / "objects" / "local")
    assert calls[-1] == (7, 7)
    assert cache.fetch(store, info) == path
    assert store.downloads == 1
    assert not os.access(path, os.W_OK) or os.geteuid() == 0  # shared copy is read-only
    assert cache.total_bytes() == 7


def test_same_content_under_two_names_is_one_entry(store: CountingStore, cache: WorkerCache) -> None:
    a = store.put_file_stream("a", io.BytesIO(b"same"))
    b = store.put_file_stream("b", io.BytesIO(b"same"))
    assert cache.fetch(store, a) == cache.fetch(store, b)
    assert store.downloads == 1


def test_changed_artifact_is_a_new_entry(store: CountingStore, cache: WorkerCache) -> None:
    v1 = store.put_file_stream("model", io.BytesIO(b"v1"))
    v1_path = cache.path_for(store, v1)  # before the rewrite: describing v1 afterwards is an IntegrityError
    v2 = store.put_file_stream("model", io.BytesIO(b"v2!"))
    assert cache.fetch(store, v2).read_bytes() == b"v2!"
    assert v1_path != cache.path_for(store, v2)


def test_hash_mismatch_raises_and_leaves_nothing(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"genuine"))
    store.corrupt_with = b"forgery"  # same size, different bytes
    with pytest.raises(IntegrityError, match=r"blake3 of the download is .*, expected .*; not cached"):
        cache.fetch(store, info)
    assert not cache.path_for(store, info).exists()
    assert [f for f in _files(cache.root) if not f.startswith("locks/")] == []


def test_size_mismatch_raises_and_leaves_nothing(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"genuine"))
    store.corrupt_with = b"short"
    with pytest.raises(IntegrityError, match="downloaded 5 bytes, expected 7"):
        cache.fetch(store, info)
    assert [f for f in _files(cache.root) if not f.startswith("locks/")] == []


def test_without_a_digest_the_size_is_still_checked(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"genuine"))

    class NoDigest(CountingStore):
        def info(self, data_info: DataInfo) -> ObjectInfo:
            return dataclasses.replace(super().info(data_info), digest=None)

    blind = NoDigest({"root": str(store.root)})
    assert cache.fetch(blind, info).read_bytes() == b"genuine"
    blind.corrupt_with = b"bad"
    cache.clear()
    with pytest.raises(IntegrityError, match="downloaded 3 bytes, expected 7"):
        cache.fetch(blind, info)


def test_a_failing_download_leaves_nothing(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"data"))

    class Dies(CountingStore):
        def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
            raise ConnectionError("backend down")

    with pytest.raises(ConnectionError):
        cache.fetch(Dies({"root": str(store.root)}), info)
    assert [f for f in _files(cache.root) if not f.startswith("locks/")] == []


def test_hit_with_a_truncated_object_is_fetched_again(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"complete"))
    path = cache.fetch(store, info)
    os.chmod(path, 0o644)
    path.write_bytes(b"comp")
    assert cache.fetch(store, info).read_bytes() == b"complete"
    assert store.downloads == 2


def test_hit_rehashes_only_when_mtime_moved(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"complete"))
    path = cache.fetch(store, info)
    os.utime(path, (1, 1))  # touched but intact: re-hashed, kept
    assert cache.fetch(store, info) == path
    assert store.downloads == 1
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")  # same size, different bytes, new mtime: re-hashed, replaced
    assert cache.fetch(store, info).read_bytes() == b"complete"
    assert store.downloads == 2


def test_missing_sidecar_means_fetch_again(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"abc"))
    cache.fetch(store, info)
    for sidecar in (cache.root / "meta").rglob("*.json"):
        sidecar.unlink()
    assert cache.fetch(store, info).read_bytes() == b"abc"
    assert store.downloads == 2


@pytest.mark.parametrize("key", ["", "/abs/key", "a/../../b", "a//b", "./a", "a\x00b"])
def test_unsafe_cache_keys_are_refused(store: CountingStore, cache: WorkerCache, key: str) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"abc"))
    store.key_override = key
    with pytest.raises(StorageError, match="is not a safe relative path"):
        cache.fetch(store, info)
    with pytest.raises(StorageError):
        cache.path_for(store, info)


def _age(cache: WorkerCache, store: CountingStore, info: DataInfo, seconds_ago: float) -> None:
    """Pretend the entry was last used ``seconds_ago`` (the sidecar's mtime is the LRU clock)."""
    key = store.get_cache_key(info)
    sidecar = (cache.root / "meta" / key).with_name(key.rsplit("/", 1)[-1] + ".json")
    stamp = time.time() - seconds_ago
    os.utime(sidecar, (stamp, stamp))


def test_evict_to_removes_least_recently_used_first(store: CountingStore, cache: WorkerCache) -> None:
    infos = {n: store.put_file_stream(n, io.BytesIO(n.encode() * 10)) for n in ("a", "b", "c")}
    for info in infos.values():
        cache.fetch(store, info)
    _age(cache, store, infos["a"], 300)
    _age(cache, store, infos["b"], 100)
    _age(cache, store, infos["c"], 200)
    cache.fetch(store, infos["a"])  # a hit makes "a" the most recent
    assert cache.evict_to(20) == 10
    assert not cache.path_for(store, infos["c"]).exists()
    assert cache.path_for(store, infos["a"]).exists() and cache.path_for(store, infos["b"]).exists()
    assert cache.evict_to(10) == 10
    assert not cache.path_for(store, infos["b"]).exists()
    assert cache.evict_to(100) == 0
    assert cache.total_bytes() == 10


def test_max_bytes_is_kept_by_fetch_and_the_new_entry_survives(store: CountingStore, tmp_path: Path) -> None:
    cache = WorkerCache(tmp_path / "capped", max_bytes=25)
    first = store.put_file_stream("1", io.BytesIO(b"x" * 10))
    second = store.put_file_stream("2", io.BytesIO(b"y" * 10))
    big = store.put_file_stream("3", io.BytesIO(b"z" * 30))
    cache.fetch(store, first)
    cache.fetch(store, second)
    assert cache.total_bytes() == 20
    path = cache.fetch(store, big)  # bigger than the cap on its own: kept, everything else goes
    assert path.read_bytes() == b"z" * 30
    assert cache.total_bytes() == 30
    assert not cache.path_for(store, first).exists()


def test_entries_held_by_a_lock_are_not_evicted(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("held", io.BytesIO(b"busy"))
    cache.fetch(store, info)
    with cache._locked(store.get_cache_key(info)) as locked:
        assert locked
        assert cache.evict_to(0) == 0
        assert cache.path_for(store, info).exists()
    assert cache.evict_to(0) == 4


def test_clear_removes_entries_and_abandoned_downloads(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("x", io.BytesIO(b"abc"))
    cache.fetch(store, info)
    (cache.root / "tmp" / "fetch-abandoned").write_bytes(b"half")
    cache.clear()
    assert [f for f in _files(cache.root) if not f.startswith("locks/")] == []
    assert cache.fetch(store, info).read_bytes() == b"abc"


def test_negative_cap_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        WorkerCache(tmp_path, max_bytes=-1)


def test_plain_hits_do_not_rehash(store: CountingStore, cache: WorkerCache, monkeypatch: pytest.MonkeyPatch) -> None:
    from deepforge_adapters.storage import cache as cache_module

    info = store.put_file_stream("x", io.BytesIO(b"abc" * 1000))
    cache.fetch(store, info)
    hashed: list[Path] = []
    real = cache_module.file_digest
    monkeypatch.setattr(cache_module, "file_digest", lambda p, a="sha256": hashed.append(Path(p)) or real(p, a))
    cache.fetch(store, info)
    cache.fetch(store, info)
    assert hashed == []
    os.utime(cache.path_for(store, info), (5, 5))
    cache.fetch(store, info)
    assert hashed == [cache.path_for(store, info)]
    cache.fetch(store, info)  # the sidecar learnt the new mtime
    assert len(hashed) == 1


def test_clear_spares_a_live_download(cache: WorkerCache) -> None:
    import fcntl

    (cache.root / "tmp").mkdir(parents=True)
    live = cache.root / "tmp" / "fetch-live"
    with open(live, "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        cache.clear()
        assert live.exists()
    cache.clear()
    assert not live.exists()


def test_a_held_entry_survives_eviction_and_others_can_still_fetch_it(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("in", io.BytesIO(b"input bytes"))
    with cache.hold(store, info) as path:
        assert path.read_bytes() == b"input bytes"
        assert cache.evict_to(0) == 0
        assert cache.fetch(store, info) == path  # holders share the lock: no waiting, no second download
        with cache.hold(store, info) as again:
            assert again == path
        assert path.exists()
    assert store.downloads == 1
    assert cache.evict_to(0) == len(b"input bytes")
    assert not path.exists()


def test_an_error_inside_hold_releases_the_entry(store: CountingStore, cache: WorkerCache) -> None:
    info = store.put_file_stream("in", io.BytesIO(b"abc"))
    with pytest.raises(RuntimeError), cache.hold(store, info):
        raise RuntimeError("job failed")
    assert cache.evict_to(0) == 3


class CountingHash:
    """A hashlib object that counts the bytes it is fed."""

    fed: list[int] = []

    def __init__(self, real: Any) -> None:
        self._real = real

    def update(self, data: bytes) -> None:
        CountingHash.fed.append(len(data))
        self._real.update(data)

    def hexdigest(self) -> str:
        return str(self._real.hexdigest())


def test_every_byte_is_hashed_once_per_fetch(
    tmp_path: Path, cache: WorkerCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fetch from local storage hashes each byte once (local's stream verifies the sha256 the cache would
    check; the cache used to hash it a second time), and the upload hashed each byte once too."""
    import deepforge_adapters.hashing as hashing

    real = hashing.new_hash
    monkeypatch.setattr(hashing, "new_hash", lambda name: CountingHash(real(name)))
    monkeypatch.setattr(CountingHash, "fed", [])
    store = LocalStorage({"root": str(tmp_path / "store")})
    data = os.urandom(3 * 1024 * 1024 + 5)
    info = store.put_file_stream("in/big", io.BytesIO(data))
    assert sum(CountingHash.fed) == len(data)
    CountingHash.fed.clear()
    assert cache.fetch(store, info).read_bytes() == data
    assert sum(CountingHash.fed) == len(data)


def test_a_verifying_backend_still_keeps_a_corrupt_download_out(store: CountingStore, cache: WorkerCache) -> None:
    """The cache trusts local's own check: a file changed on disk (same size) fails the fetch, leaves nothing."""
    info = store.put_file_stream("x", io.BytesIO(b"genuine"))
    path = store.path_for("x")
    path.write_bytes(b"forgery")
    with pytest.raises(IntegrityError, match=r"blake3 is .* but the dataInfo records"):
        cache.fetch(LocalStorage({"root": str(store.root)}), info)
    assert [f for f in _files(cache.root) if not f.startswith("locks/")] == []
