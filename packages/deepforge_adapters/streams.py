"""Streaming primitives shared by every backend: copy with progress, atomic file writes.

"Streams, not buffers": every transfer in this library moves bytes in bounded chunks through these helpers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from .hashing import CHUNK_SIZE

#: ``progress(bytes_done, bytes_total_or_None)``; called after each chunk and once at the end.
ProgressCallback = Callable[[int, "int | None"], None]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def copy_stream(
    src: Readable,
    dst: IO[bytes] | BinaryIO,
    *,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Copy ``src`` to ``dst`` in chunks; returns the byte count."""
    done = 0
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            break
        dst.write(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total)
    if progress is not None and done == 0:
        progress(0, total)
    return done


class ProgressReader:
    """A readable that reports bytes read to a progress callback (for uploads driven by a library)."""

    def __init__(self, raw: Readable, progress: ProgressCallback | None, total: int | None = None) -> None:
        self._raw = raw
        self._progress = progress
        self._total = total
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self.bytes_read += len(data)
        if self._progress is not None:
            self._progress(self.bytes_read, self._total)
        return data

    def readable(self) -> bool:
        return True


def iter_chunks(src: Readable, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Yield ``src`` in chunks: the shape ``requests`` wants for a streaming request body."""
    while True:
        chunk = src.read(chunk_size)
        if not chunk:
            return
        yield chunk


@contextlib.contextmanager
def atomic_write(dest: str | os.PathLike[str], mode: int = 0o644, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Write to a temp file beside ``dest`` and rename it into place only if the block succeeds.

    A reader never sees a partial file, and a crash leaves at most a ``.tmp-*`` file that the owner of the
    directory may clean up.  ``durable=False`` skips the fsync, for files rewritten every few hundred
    milliseconds that nothing needs after a crash (an fsync can take seconds on a busy disk).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
