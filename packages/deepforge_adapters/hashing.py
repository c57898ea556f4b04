"""The one hashing helper: digests computed while bytes stream past or land, never by a second pass over a file.

WebGME's blob is content-addressed with sha1, our local store uses blake3 (older local dataInfos: sha256),
S3 gives MD5-ish ETags; every place that hashes goes through :class:`HashingReader`,
:class:`BackgroundHasher`, :class:`WrittenFileHasher` or :func:`file_digest` so the chunk size and the
algorithm names live in one module.
``blake3`` (PyPI ``blake3``) is known to :func:`new_hash` beside every :mod:`hashlib` name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import re
import threading
from collections.abc import Iterable
from typing import IO, BinaryIO, Protocol

from .errors import InvalidHashError

CHUNK_SIZE = 1024 * 1024  # 1 MiB: large enough for throughput, small enough to keep memory flat
#: The buffer :class:`WrittenFileHasher` reads a file back through (one per hasher).
READBACK_CHUNK = 4 * 1024 * 1024


#: A sha1 hex digest as WebGME's blob, its executor and our job ids spell it: exactly 40 lowercase hex digits.
SHA1_HEX_LENGTH = 40
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")


def is_sha1_hex(value: object) -> bool:
    """Whether ``value`` is a str of exactly 40 lowercase hex digits (nothing a path or URL could abuse)."""
    return isinstance(value, str) and _SHA1_HEX.fullmatch(value) is not None


def check_sha1_hex(value: object, what: str = "hash") -> str:
    """``value`` if it is 40 lowercase hex digits, else :class:`InvalidHashError` naming ``what``.

    The one check for every hash that becomes a path (job directories, cache entries) or a URL segment
    (blob, executor): a job id such as ``/tmp/victim`` or ``..`` is refused before it is joined to anything.
    """
    if not is_sha1_hex(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise InvalidHashError(f"{what} must be 40 lowercase hex digits, got {shown!r:.120}")
    return str(value)


#: The local store's content hash: BLAKE3 runs at about twice sha256's speed even with SHA-NI (SIMD within one
#: thread), so hashing no longer bounds a verified copy (docs/benchmarks.md).
LOCAL_HASH = "blake3"


class Hasher(Protocol):
    """What :func:`new_hash` returns: a :mod:`hashlib` object or a ``blake3.blake3``."""

    def update(self, data: bytes | bytearray | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def new_hash(algorithm: str) -> Hasher:
    """A hash object for a :mod:`hashlib` algorithm name or ``"blake3"``."""
    if algorithm == "blake3":
        from blake3 import blake3  # on first use: the local supervisor imports this module but never hashes

        return blake3()
    return hashlib.new(algorithm)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks into one reused buffer (:func:`hashlib.file_digest` for hashlib's)."""
    with open(path, "rb", buffering=0) as f:
        if algorithm != "blake3":
            return hashlib.file_digest(f, algorithm).hexdigest()
        h = new_hash(algorithm)
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            h.update(view[:n])
        return h.hexdigest()


def bytes_digest(data: bytes, algorithm: str = "sha256") -> str:
    h = new_hash(algorithm)
    h.update(data)
    return h.hexdigest()


class BackgroundHasher:
    """Digests computed in a thread beside the caller's I/O: ``update`` queues a chunk and returns at once.

    hashlib and blake3 release the GIL while they hash, so a copy loop that reads and writes in one thread and hashes in
    this one takes about ``max(I/O, hashing)`` instead of their sum (what makes a verified 1 GiB transfer
    run at the speed of ``cp`` + fsync).  At most ``depth`` chunks wait in the queue, so memory stays at
    ``depth`` chunks.  Chunks must not change after ``update`` (``bytes`` are copied from anything else).
    :meth:`hexdigest` waits for the queue to drain; :meth:`close` ends the thread (also after a failure).
    """

    def __init__(self, algorithms: Iterable[str] = ("sha256",), depth: int = 4) -> None:
        self._hashes = {name: new_hash(name) for name in algorithms}
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._closed = False

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not self._hashes or not data:
            return
        if self._closed:
            raise ValueError("update() after the hasher was finished")
        if self._thread is None:
            # The thread holds the queue and the hashes, not this object: an abandoned hasher is collected,
            # and __del__ then ends its thread.
            args = (self._queue, tuple(self._hashes.values()))
            self._thread = threading.Thread(target=_hash_queued, args=args, name="deepforge-hasher", daemon=True)
            self._thread.start()
        self._queue.put(data if isinstance(data, bytes) else bytes(data))

    def close(self) -> None:
        """Hash what is queued and end the thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()

    def hexdigest(self, algorithm: str = "sha256") -> str:
        self.close()
        return self._hashes[algorithm].hexdigest()

    def __del__(self) -> None:
        if not self._closed and self._thread is not None:
            self._queue.put(None)  # a transfer abandoned mid-way (an exception): let the thread end


def _hash_queued(chunks: queue.Queue[bytes | None], hashes: tuple[Hasher, ...]) -> None:
    while (data := chunks.get()) is not None:
        for h in hashes:
            h.update(data)


class WrittenFileHasher:
    """Digests of the bytes a kernel copy writes into a file, read back in a thread as they land.

    For copies that never pass the bytes through Python (``os.copy_file_range``, see
    :func:`deepforge_adapters.streams.copy_fd`): the copier calls :meth:`advance` with the offset up to which
    the file now holds the copied bytes, and this thread reads ``[start, offset)`` back with ``pread`` into one
    reused buffer (from the page cache: the pages were just written) and hashes it.  What is hashed is what
    the file holds, so a verified copy checks the very bytes that will be renamed into place.  ``fd`` must be
    open for reading (``tempfile.mkstemp`` opens ``O_RDWR``).  Memory: one :data:`READBACK_CHUNK` buffer.
    """

    def __init__(self, fd: int, algorithms: Iterable[str] = ("sha256",), start: int = 0) -> None:
        self._fd = fd
        self._hashes = {name: new_hash(name) for name in algorithms}
        self._ends: queue.Queue[int | None] = queue.Queue()
        self._pos = start
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    def advance(self, end: int) -> None:
        """The file now holds the copied bytes up to offset ``end``: hash them (in the thread)."""
        if self._closed:
            raise ValueError("advance() after the hasher was finished")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="deepforge-readback-hasher", daemon=True)
            self._thread.start()
        self._ends.put(end)

    def _run(self) -> None:
        buffer = bytearray(READBACK_CHUNK)
        view = memoryview(buffer)
        hashes = tuple(self._hashes.values())
        try:
            while (end := self._ends.get()) is not None:
                while self._pos < end:
                    n = os.preadv(self._fd, [view[: min(READBACK_CHUNK, end - self._pos)]], self._pos)
                    if n == 0:
                        raise OSError(f"the file ended at offset {self._pos} while hashing up to {end}")
                    for h in hashes:
                        h.update(view[:n])
                    self._pos += n
        except BaseException as exc:  # re-raised by close() in the caller's thread
            self._error = exc
            while self._ends.get() is not None:  # let advance()/close() proceed
                pass

    def close(self) -> None:
        """Hash what was reported and end the thread; re-raises what the thread hit.  Idempotent."""
        if not self._closed:
            self._closed = True
            if self._thread is not None:
                self._ends.put(None)
                self._thread.join()
        if self._error is not None:
            raise self._error

    def hexdigest(self, algorithm: str = "sha256") -> str:
        self.close()
        return self._hashes[algorithm].hexdigest()

    def abandon(self) -> None:
        """End the thread after a failed copy, while ``fd`` is still open; what it hit no longer matters."""
        with contextlib.suppress(Exception):
            self.close()

    def __del__(self) -> None:
        if not self._closed and self._thread is not None:
            self._ends.put(None)


class HashingReader:
    """Wraps a readable; every byte read through it updates the digests and the byte count.

    Lets an upload compute its content hash in the same pass that sends the bytes, which is what keeps
    memory bounded for multi-GiB artifacts.  The hashing runs in a :class:`BackgroundHasher` beside the
    reads (and whatever the caller does with the bytes, say writing them to disk).
    """

    def __init__(self, raw: IO[bytes] | BinaryIO, algorithms: Iterable[str] = ("sha256",)) -> None:
        self._raw = raw
        self._hasher = BackgroundHasher(algorithms)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self.bytes_read += len(data)
            self._hasher.update(data)
        return data

    def readable(self) -> bool:
        return True

    def hexdigest(self, algorithm: str = "sha256") -> str:
        return self._hasher.hexdigest(algorithm)

    def close(self) -> None:
        self._hasher.close()
        self._raw.close()
