"""Streaming primitives shared by every backend: copy with progress, atomic file writes.

"Streams, not buffers": every transfer in this library moves bytes in bounded chunks through these helpers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, Protocol

from .hashing import CHUNK_SIZE

#: ``progress(bytes_done, bytes_total_or_None)``; called after each chunk and once at the end.
ProgressCallback = Callable[[int, "int | None"], None]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


#: Bytes per ``copy_file_range`` call of :func:`copy_fd`: no byte passes through Python, so only the progress
#: callback's granularity limits it.
KERNEL_CHUNK = 16 * 1024 * 1024
#: errnos that mean "this kernel or filesystem cannot ``copy_file_range`` these two files": copy in userspace.
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def is_regular_fd(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def copy_fd(
    src_fd: int,
    dst_fd: int,
    *,
    src_offset: int = 0,
    limit: int | None = None,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    written: Callable[[int], None] | None = None,
) -> int:
    """Copy a regular file from ``src_offset`` to its end (at most ``limit`` bytes) to ``dst_fd`` at its offset.

    In the kernel (``os.copy_file_range``: no byte enters this process, the page cache does the rest); where
    the kernel or filesystem refuses, through one reused buffer with ``preadv``/``write``.  ``written(end)`` is
    called after each chunk with ``dst_fd``'s offset up to which the copied bytes are in place (for a
    :class:`~deepforge_adapters.hashing.WrittenFileHasher`).  ``dst_fd``'s offset ends after the copy; the
    source's is untouched.  Returns the byte count.
    """
    dst_start = os.lseek(dst_fd, 0, os.SEEK_CUR)
    chunk = KERNEL_CHUNK
    if progress is not None and total:  # a few progress reports even for a small file
        chunk = max(CHUNK_SIZE, min(KERNEL_CHUNK, total // 8))
    done = 0
    kernel = True
    buffer: memoryview | None = None
    while limit is None or done < limit:
        want = chunk if limit is None else min(chunk, limit - done)
        n = -1
        if kernel:
            try:
                n = os.copy_file_range(src_fd, dst_fd, want, src_offset + done, dst_start + done)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY or done:
                    raise
                kernel = False
        if not kernel:
            if buffer is None:
                buffer = memoryview(bytearray(CHUNK_SIZE * 8))
            n = os.preadv(src_fd, [buffer[: min(len(buffer), want)]], src_offset + done)
            view = buffer[:n]
            while view:
                view = view[os.pwrite(dst_fd, view, dst_start + done + n - len(view)) :]
        if n == 0:
            break
        done += n
        if written is not None:
            written(dst_start + done)
        if progress is not None:
            progress(done, total)
    os.lseek(dst_fd, dst_start + done, os.SEEK_SET)
    if progress is not None and done == 0:
        progress(0, total)
    return done


def copy_stream(
    src: Readable,
    dst: IO[bytes] | BinaryIO,
    *,
    total: int | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> int:
    """Copy ``src`` to ``dst`` in chunks; returns the byte count.

    A source with a ``copy_into(dst_fd, total=, progress=)`` method (a local file that verifies what it hands
    out, :mod:`deepforge_adapters.storage.local`) copies itself in the kernel when ``dst`` is a regular file.
    """
    copy_into = getattr(src, "copy_into", None)
    if copy_into is not None and regular_fd(dst) is not None:
        dst.flush()
        return int(copy_into(dst.fileno(), total=total, progress=progress))
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


def regular_fd(f: object) -> int | None:
    """The descriptor of ``f`` if it is an open regular file, else ``None``."""
    try:
        fd = f.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None
    return fd if isinstance(fd, int) and is_regular_fd(fd) else None


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
