"""Streaming primitives shared by every backend: copy with progress, atomic file writes.

"Streams, not buffers": every transfer in this library moves bytes in bounded chunks through these helpers.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import queue
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

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
            pwrite_all(dst_fd, buffer[:n], dst_start + done)
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


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd`` (``os.pwrite`` may write less), leaving its offset as is."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


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
    Any other source is written into a regular file by a thread behind the reads (:class:`WriteBehind`), so a
    download reads its next chunk from the socket while the page cache takes the last one.
    """
    copy_into = getattr(src, "copy_into", None)
    to_file = regular_fd(dst) is not None
    if copy_into is not None and to_file:
        dst.flush()
        return int(copy_into(dst.fileno(), total=total, progress=progress))
    writer = WriteBehind(dst) if to_file else None
    write = writer.write if writer is not None else dst.write
    done = 0
    try:
        while chunk := src.read(chunk_size):
            write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    except BaseException:
        if writer is not None:
            with contextlib.suppress(BaseException):
                writer.close()  # the read side failed: that is the error to report
        raise
    if writer is not None:
        writer.close()
    if progress is not None and done == 0:
        progress(0, total)
    return done


#: Chunks a copy into a file may have read and not yet written (:class:`WriteBehind`): memory stays at this
#: many chunks.
WRITE_BEHIND_DEPTH = 4


class WriteBehind:
    """Writes chunks into ``dst`` in a thread, at most ``depth`` waiting, so reading the next chunk overlaps
    writing this one.

    A socket read and a file write each release the GIL, so a download takes about ``max(network, disk)``
    instead of their sum (sciserver-files get of 1 GiB: recv 0.6 s + write 1.4 s in one thread).  A write
    that fails is raised by the next :meth:`write` or by :meth:`close`, which waits for every queued chunk.
    Chunks must not change after :meth:`write` (``bytes`` are; anything else is copied).
    """

    def __init__(self, dst: IO[bytes] | BinaryIO, depth: int = WRITE_BEHIND_DEPTH) -> None:
        self._dst = dst
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="deepforge-write-behind", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk if isinstance(chunk, bytes) else bytes(chunk))

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after a failure, drain without writing: write() and close() never block
                try:
                    self._dst.write(chunk)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def close(self) -> None:
        """Wait until every queued chunk is written (or dropped after a failure); re-raise a failed write."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


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


#: Bytes a file being written may gain before :func:`early_writeback` asks the kernel to start writing it out.
WRITEBACK_BYTES = 32 * 1024 * 1024
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-out of the range's dirty pages, do not wait


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """glibc's ``sync_file_range`` (Linux; Python's :mod:`os` has no binding), or ``None``.

    Looked up on first use, in the libc this process already has mapped (``CDLL(None)``): at import time,
    ``ctypes.util.find_library("c")`` ran ``ldconfig -p`` in a subprocess in every process that imports this
    module (the local supervisor and the runner of every job; process accounting, bench/scale_pipelines.py).
    """
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


@contextlib.contextmanager
def early_writeback(fd: int, every: int | None = None, poll: float = 0.05) -> Iterator[None]:
    """While the block writes the file ``fd``, a thread starts the kernel's write-out every ``every`` bytes.

    A download fsyncs its file before renaming it into place; left to the end, that fsync writes the whole
    artifact (a third of a second per GiB on a quiet disk, seconds on a busy one) after the last byte
    arrived.  ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` starts that write-out as the bytes arrive, without
    waiting for it and without dropping the pages from the cache, so the final fsync finds little left and
    the disk works while the network does.  A no-op where the call does not exist.
    """
    sync_file_range = _sync_file_range()
    if sync_file_range is None:
        yield
        return
    every = WRITEBACK_BYTES if every is None else every
    stop = threading.Event()

    def run() -> None:
        started = 0
        while not stop.wait(poll):
            try:
                size = os.fstat(fd).st_size
            except OSError:
                return
            if size - started >= every:
                if sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:  # the whole file: parts land anywhere
                    return  # not supported here (or the fd is gone): the final fsync does it all
                started = size

    thread = threading.Thread(target=run, name="deepforge-writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


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
            with early_writeback(fd) if durable else contextlib.nullcontext():
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
