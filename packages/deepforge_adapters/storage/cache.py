"""The worker cache: inputs fetched once per content, verified, size-capped, shared by processes.

DeepForge keyed its cache by path, so a re-uploaded artifact with the same name was served stale.  Here an
entry is keyed by :meth:`StorageClient.cache_key` of the artifact's :meth:`StorageClient.info` (its content
hash, or a version token: an ETag, size+mtime), so a changed artifact is a different entry.  A fetch asks
the backend to describe the artifact once (``info``: one metadata request at most) and uses that answer
for the key, the expected size and the digest.

Layout under ``root``::

    objects/<key>        the cached bytes (read-only for jobs; hard-link or copy them, never edit)
    meta/<key>.json      sidecar: size, digest and the object's mtime when it was verified; its own mtime
                         is the entry's last use (the LRU clock)
    locks/<key>.lock     per-key ``fcntl.flock`` lock: shared by readers and holders, exclusive while the
                         key is downloaded, repaired or evicted
    tmp/                 downloads in progress (same filesystem, so the final rename is atomic), each
                         ``flock``-ed by its downloader so ``clear`` can tell abandoned ones from live ones

Guarantees:

* **One download per key, even across processes.**  A miss takes the key's lock exclusively and looks
  again before downloading; a second process blocks on the lock and then finds a complete entry.
* **Nothing unverified is ever visible.**  A download streams into ``tmp/`` while being hashed; only if its
  size matches ``info(...).size`` and its digest matches ``info(...).digest`` (when the backend knows
  one) is it renamed into ``objects/``.  Otherwise :class:`IntegrityError` and nothing is left behind.
* **Cheap verification on hit.**  A hit compares the object's size and mtime with the sidecar; only when the
  mtime moved is the object re-hashed (and replaced if the hash no longer matches).
* **Bounded size.**  With ``max_bytes``, least-recently-used entries are evicted after each fetch; an entry
  whose lock someone holds (being fetched, or in use through :meth:`WorkerCache.hold`) is skipped, and the
  entry just fetched is never evicted by its own fetch, even if it alone exceeds the cap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import IntegrityError, StorageError
from ..hashing import HashingReader, file_digest
from ..streams import ProgressCallback, atomic_write, copy_stream, early_writeback
from .base import DataInfo, ObjectInfo, StorageClient

log = logging.getLogger(__name__)

#: How often ``hold`` re-fetches an entry that another process evicted before it could take hold of it.
_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class _Entry:
    key: str
    path: Path
    size: int
    last_used: float


class WorkerCache:
    """A content-keyed cache of storage artifacts under ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.root = Path(root).expanduser().absolute()
        self.max_bytes = max_bytes
        self._objects = self.root / "objects"
        self._meta = self.root / "meta"
        self._locks = self.root / "locks"
        self._tmp = self.root / "tmp"

    # ------------------------------------------------------------------------------------ public API
    def path_for(self, client: StorageClient, data_info: DataInfo) -> Path:
        """Where the artifact's cached copy lives (whether or not it is there yet)."""
        return self._objects.joinpath(*self._key(client, client.info(data_info)).split("/"))

    def fetch(self, client: StorageClient, data_info: DataInfo, progress: ProgressCallback | None = None) -> Path:
        """The path of a complete, verified copy of the artifact; downloads it only if it is not cached.

        The entry may be evicted later by another fetch; to use it without copying, use :meth:`hold`.
        """
        with self.hold(client, data_info, progress) as path:
            return path

    @contextlib.contextmanager
    def hold(
        self, client: StorageClient, data_info: DataInfo, progress: ProgressCallback | None = None
    ) -> Iterator[Path]:
        """Like :meth:`fetch`, and the entry cannot be evicted until the block ends.

        Holders share the key's lock, so any number of jobs may hold one input while others fetch it; only a
        download or an eviction needs the lock exclusively.
        """
        info = client.info(data_info)  # the one describe request of this fetch
        key = self._key(client, info)
        path = self._objects.joinpath(*key.split("/"))
        size, digest = int(info.size), info.digest
        downloaded = False
        for _ in range(_MAX_ATTEMPTS):
            with self._locked(key, shared=True):
                if self._quick_hit(key, path, size, digest):
                    log.debug("cache hit %s", key)
                    self._touch(key)
                    if progress is not None and not downloaded:
                        progress(size, size)
                    if self.max_bytes is not None:
                        self.evict_to(self.max_bytes)  # skips our key: we hold its lock
                    yield path
                    return
            with self._locked(key):  # blocks while another process downloads the same key
                if not self._valid_hit(key, path, size, digest):
                    self._download(client, data_info, key, path, size, digest, progress)
                    downloaded = True
        raise StorageError(
            client.id,
            f"cache entry was evicted {_MAX_ATTEMPTS} times before it could be used; is max_bytes too small?",
            key,
        )

    def evict_to(self, max_bytes: int) -> int:
        """Evict least-recently-used entries until the cache holds at most ``max_bytes``; returns bytes freed.

        Entries whose lock is held (a fetch in progress, another holder) are skipped, so the result may stay
        above ``max_bytes``.
        """
        entries = sorted(self._entries(), key=lambda e: e.last_used)
        total = sum(e.size for e in entries)
        freed = 0
        for entry in entries:
            if total <= max_bytes:
                break
            with self._locked(entry.key, blocking=False) as locked:
                if not locked or not entry.path.exists():
                    continue
                self._remove_entry(entry.key)
            log.debug("cache evicted %s (%d bytes)", entry.key, entry.size)
            total -= entry.size
            freed += entry.size
        return freed

    def clear(self) -> None:
        """Remove every entry that nobody holds, and downloads abandoned by crashed processes."""
        self.evict_to(0)
        if self._tmp.is_dir():
            for tmp in self._tmp.iterdir():
                try:
                    fd = os.open(tmp, os.O_RDONLY)
                except FileNotFoundError:  # published or cleaned up meanwhile
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live download
                else:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
                finally:
                    os.close(fd)

    def total_bytes(self) -> int:
        """Bytes held by complete entries."""
        return sum(e.size for e in self._entries())

    # ------------------------------------------------------------------------------------ keys
    def _key(self, client: StorageClient, info: ObjectInfo) -> str:
        """The backend's cache key, checked to be a safe relative path (it becomes one under ``objects/``)."""
        key = client.cache_key(info)
        parts = key.split("/") if isinstance(key, str) else []
        bad = not parts or "\x00" in key or PurePosixPath(key).is_absolute() or any(p in ("", ".", "..") for p in parts)
        if bad:
            raise StorageError(client.id, f"cache key {key!r} is not a safe relative path", str(key))
        return key

    # ------------------------------------------------------------------------------------ hit / download
    def _quick_hit(self, key: str, path: Path, size: int, digest: tuple[str, str] | None) -> bool:
        """Is ``path`` a complete copy, judged by size, sidecar and mtime alone?  Reads only (shared lock)."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        meta = self._read_meta(key)
        return (
            meta is not None
            and st.st_size == size == meta.get("size")
            and meta.get("digest") == (list(digest) if digest else None)
            and meta.get("mtime_ns") == st.st_mtime_ns
        )

    def _valid_hit(self, key: str, path: Path, size: int, digest: tuple[str, str] | None) -> bool:
        """Is ``path`` a complete copy?  Size + sidecar always; a re-hash only if the mtime moved.

        Repairs what it can (new mtime, same bytes) and removes what it cannot: exclusive lock only.
        """
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        meta = self._read_meta(key)
        expected_digest = list(digest) if digest else None
        if st.st_size != size or meta is None or meta.get("size") != size or meta.get("digest") != expected_digest:
            log.warning("cache entry %s does not match its source (size or digest); fetching again", key)
            self._remove_entry(key)
            return False
        if meta.get("mtime_ns") == st.st_mtime_ns:
            return True
        if digest is None or file_digest(path, digest[0]) != digest[1]:
            log.warning("cache entry %s was modified on disk; fetching again", key)
            self._remove_entry(key)
            return False
        self._write_meta(key, {**meta, "mtime_ns": st.st_mtime_ns})
        return True

    def _download(
        self,
        client: StorageClient,
        data_info: DataInfo,
        key: str,
        path: Path,
        size: int,
        digest: tuple[str, str] | None,
        progress: ProgressCallback | None,
    ) -> None:
        """Stream into ``tmp/``, verify size and digest, then publish: sidecar first, object last."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix="fetch-", dir=self._tmp)
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks the download as live for clear(); released when fd closes
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                # Every byte is hashed once: by the backend's stream when it checks the digest itself.
                ours = digest is not None and not client.verifies_digest
                algorithms = (digest[0],) if digest and ours else ()
                with client.get_file_stream(data_info) as src, early_writeback(fd):
                    # a verifying stream goes to copy_stream as it is: a local file then copies in the kernel
                    reader = HashingReader(src, algorithms) if algorithms else None
                    count = copy_stream(reader or src, out, total=size, progress=progress)
                out.flush()
                os.fsync(out.fileno())
                if count != size:
                    raise IntegrityError(client.id, f"downloaded {count} bytes, expected {size}; not cached", key)
                if digest and reader is not None and reader.hexdigest(digest[0]) != digest[1]:
                    raise IntegrityError(
                        client.id,
                        f"{digest[0]} of the download is {reader.hexdigest(digest[0])}, expected {digest[1]}; "
                        "not cached",
                        key,
                    )
                os.chmod(tmp, 0o444)  # jobs share this copy: nobody may edit it in place
                path.parent.mkdir(parents=True, exist_ok=True)
                st = os.fstat(out.fileno())
                self._write_meta(
                    key,
                    {
                        "key": key,
                        "backend": client.id,
                        "size": size,
                        "digest": list(digest) if digest else None,
                        "mtime_ns": st.st_mtime_ns,
                    },
                )
                os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            if not path.exists():
                with contextlib.suppress(FileNotFoundError):
                    self._meta_path(key).unlink()
            raise
        log.info("cached %s from %s (%d bytes)", key, client.id, size)

    # ------------------------------------------------------------------------------------ sidecars
    def _meta_path(self, key: str) -> Path:
        return self._meta.joinpath(*key.split("/")).with_name(key.rsplit("/", 1)[-1] + ".json")

    def _read_meta(self, key: str) -> dict[str, Any] | None:
        try:
            meta = json.loads(self._meta_path(key).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _write_meta(self, key: str, meta: dict[str, Any]) -> None:
        with atomic_write(self._meta_path(key)) as f:
            f.write(json.dumps(meta, sort_keys=True).encode())

    def _touch(self, key: str) -> None:
        """Mark the entry as used now (the sidecar's mtime is the LRU clock; atime is often disabled)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self._meta_path(key))

    def _entries(self) -> Iterator[_Entry]:
        if not self._objects.is_dir():
            return
        for dirpath, _, filenames in os.walk(self._objects):
            for filename in filenames:
                path = Path(dirpath, filename)
                key = path.relative_to(self._objects).as_posix()
                try:
                    size = path.stat().st_size
                except FileNotFoundError:
                    continue
                try:
                    last_used = self._meta_path(key).stat().st_mtime
                except FileNotFoundError:
                    last_used = 0.0  # no sidecar: an orphan of a crash, the first to go
                yield _Entry(key, path, size, last_used)

    def _remove_entry(self, key: str) -> None:
        for path in (self._objects.joinpath(*key.split("/")), self._meta_path(key)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self._prune_empty_parents(path.parent)

    def _prune_empty_parents(self, directory: Path) -> None:
        while directory not in (self._objects, self._meta) and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # ------------------------------------------------------------------------------------ locks
    @contextlib.contextmanager
    def _locked(self, key: str, blocking: bool = True, shared: bool = False) -> Iterator[bool]:
        """Hold the key's lock (exclusive unless ``shared``); yields ``False`` if non-blocking and busy.

        Lock files are never deleted: unlinking a lock file another process is waiting on would let two
        processes "hold" the same key.
        """
        lock_path = self._locks.joinpath(*key.split("/")).with_name(key.rsplit("/", 1)[-1] + ".lock")
        with self._flock(lock_path, blocking, shared) as locked:
            yield locked

    @contextlib.contextmanager
    def _flock(self, lock_path: Path, blocking: bool, shared: bool = False) -> Iterator[bool]:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
                fcntl.flock(fd, mode | (0 if blocking else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    yield False
                    return
                raise
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
