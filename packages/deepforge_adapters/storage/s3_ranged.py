"""A parallel ranged S3 download in which every thread writes its own part with ``pwrite``.

**Why not s3transfer's download** (what :meth:`S3Storage.get_file` used before): s3transfer's ranged
download hands every 256 KiB it reads to one I/O thread through a bounded queue, so the disk writes run one
after another on that thread while the GET threads wait for room in the queue; on a fast link (loopback, a
LAN) the single writer, not the network, sets the pace (docs/benchmarks.md: 0.80-0.94 of boto3's own
``download_file``, which queues up to 250 MiB where our budget allows 16).  Here each of at most ``threads``
workers GETs one part (``Range: bytes=a-b``) and writes each chunk it reads at its offset in the file
(``os.pwrite``, which needs no shared file position): nothing is queued, so memory is one chunk per thread
whatever the object's size, and the page cache takes the parts' writes in parallel.

Each ranged GET is pinned to the ETag (``If-Match``) or ``VersionId`` the caller read, so an object
overwritten mid-download fails with HTTP 412 instead of mixing two objects' bytes.  A part whose body breaks
off mid-stream (a reset, a read timeout: botocore retries a request, not a body) is fetched again from where
it stopped, up to :data:`PART_ATTEMPTS` times.  An answer whose ``Content-Range`` is not exactly the range
asked for, of the size the caller read (a server or proxy that ignores ``Range`` sends the object's first
bytes for every part) is refused before a byte of it is written.  Any error but a broken body stops every
worker at its next chunk and is raised to the caller, who owns the file (``atomic_write`` removes it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

from ..streams import pwrite_all

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

#: Bytes read from a part's body and written at once (s3transfer's ``io_chunksize`` too).
CHUNK = 256 * 1024
#: Tries of one part whose body broke off mid-stream, each resuming where the last one stopped.
PART_ATTEMPTS = 5
#: Errors of a body read that a new ranged GET of the rest may cure.
STREAM_ERRORS: tuple[type[Exception], ...] = (
    BotoConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
    ConnectionError,
)


@dataclass
class Part:
    """One ranged GET's bytes ``first..last`` (inclusive) and the next offset still to write."""

    first: int
    last: int
    next: int


class RangeMismatchError(Exception):
    """The server answered a ranged GET with other bytes than the range asked for (or the whole object)."""


class DownloadCancelled(Exception):
    """Raised inside a worker when another worker failed: its part is abandoned, the first error stands."""


def part_ranges(size: int, part_size: int) -> Iterator[tuple[int, int]]:
    """``(first, last)`` byte offsets (inclusive, as HTTP ranges are) covering ``size`` bytes."""
    for first in range(0, size, part_size):
        yield first, min(first + part_size, size) - 1


def download_ranges(
    client: S3Client,
    args: Mapping[str, Any],
    fd: int,
    size: int,
    *,
    part_size: int,
    threads: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write the ``size`` bytes of the object ``args`` names (``Bucket``, ``Key``, ``IfMatch``/``VersionId``)
    into the file ``fd`` at their own offsets, ``threads`` ranged GETs at a time.

    ``progress(n)`` is called from the workers with each ``n`` bytes written, so it must be thread-safe
    (``TransferProgress.add`` is).  Returns when every byte is written; raises the first worker's error
    otherwise.
    """
    if size <= 0:
        return
    ranges = list(part_ranges(size, part_size))
    cancelled = threading.Event()

    def fetch(first: int, last: int) -> None:
        part = Part(first, last, next=first)
        for attempt in range(1, PART_ATTEMPTS + 1):
            try:
                _fetch_rest(client, args, fd, size, part, cancelled, progress)
                return
            except STREAM_ERRORS as exc:
                if attempt < PART_ATTEMPTS and not cancelled.is_set():
                    log.info("s3: bytes %d-%d broke off at %d (%s); fetching the rest", first, last, part.next, exc)
                    continue
                cancelled.set()
                raise
            except BaseException:
                cancelled.set()  # at once, from this thread: the other workers stop at their next chunk
                raise

    if len(ranges) == 1:
        fetch(*ranges[0])
        return
    with ThreadPoolExecutor(max_workers=min(threads, len(ranges)), thread_name_prefix="deepforge-s3-get") as pool:
        futures = [pool.submit(fetch, first, last) for first, last in ranges]
        wait(futures, return_when=FIRST_EXCEPTION)
        if cancelled.is_set():
            for future in futures:
                future.cancel()
    errors = [f.exception() for f in futures if not f.cancelled() and f.exception() is not None]
    first_error = next((e for e in errors if not isinstance(e, DownloadCancelled)), None)
    if first_error is not None:
        raise first_error


def _fetch_rest(
    client: S3Client,
    args: Mapping[str, Any],
    fd: int,
    size: int,
    part: Part,
    cancelled: threading.Event,
    progress: Callable[[int], None] | None,
) -> None:
    """GET what is left of ``part`` and write it at its offsets, advancing ``part.next`` chunk by chunk (so a
    retry after a broken body starts where this one stopped)."""
    if cancelled.is_set():
        raise DownloadCancelled()
    asked = f"bytes={part.next}-{part.last}"
    response = client.get_object(Range=asked, **args)
    body = response["Body"]
    try:
        answered = response.get("ContentRange")
        if answered != f"bytes {part.next}-{part.last}/{size}":  # a 200 (the whole object) has none
            raise RangeMismatchError(
                f"asked for {asked} of {size} bytes, the server answered Content-Range {answered!r}"
            )
        while part.next <= part.last:
            if cancelled.is_set():
                raise DownloadCancelled()
            data = body.read(min(CHUNK, part.last + 1 - part.next))
            if not data:
                raise IncompleteReadError(actual_bytes=part.next, expected_bytes=part.last + 1)
            pwrite_all(fd, data, part.next)
            part.next += len(data)
            if progress is not None:
                progress(len(data))
    finally:
        body.close()
