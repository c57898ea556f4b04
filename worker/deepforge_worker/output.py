"""Live console output of one job, posted to ``/rest/executor/output/<hash>`` as numbered chunks.

Semantics of the Node worker's ``ExecutorOutputQueue`` (so a client streaming our output sees what it saw):

* output is collected into a current chunk; the chunk is queued every ``interval`` seconds (if non-empty)
  and as soon as it holds ``segment_size`` lines; with both switched off nothing is posted live (the
  archived ``job_stdout.txt`` still has everything);
* queued chunks are posted strictly one at a time, in order, numbered 0, 1, 2, ... (``outputNumber``);
* :meth:`OutputQueue.flush` sends everything before the worker posts the final job update.

Fixed on purpose: a chunk is never larger than ``max_chunk_bytes`` once JSON-encoded (the server's JSON
body limit is 100 kB and the Node worker could exceed it with a chatty job), and a failed post is retried
with backoff (it is an upsert keyed by ``<hash>+<n>``, so a retry cannot duplicate), which is what lets a job
keep streaming across a server restart.

Bounded memory: the text waiting to be posted never exceeds ``max_buffer_chars`` plus one short marker and the
worker's own messages (which are few, short and always kept).
When the job prints faster than the server accepts, chunks waiting in the queue are first coalesced (once
more than :data:`COALESCE_AFTER` wait, new text joins the last one up to the chunk cap), and what still does
not fit is left out of the *live* stream, replaced by one line
``[... N bytes of output not streamed; see job_stdout.txt]`` where it was.  ``job_stdout.txt``, written by
the job's pump before anything reaches this queue, keeps every byte.  Worker messages (``essential=True``,
e.g. why a job failed) are always queued.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable

from deepforge_adapters.errors import WebGMEError

log = logging.getLogger(__name__)

#: Well below express's default ``100kb`` JSON limit, leaving room for the envelope.
MAX_CHUNK_BYTES = 64 * 1024
#: Characters of live output one job may hold while the server is slower than the job (about 1 MiB).
MAX_BUFFER_CHARS = 1024 * 1024
#: Chunks that may wait before new output is merged into the last waiting one instead of queued after it.
COALESCE_AFTER = 8
#: What stands in the live stream where output was left out (the archived job_stdout.txt has it).
DROPPED_MARKER = "\n[... {n} bytes of output not streamed; see job_stdout.txt]\n"
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")

PostOutput = Callable[[int, str], None]


def count_lines(text: str) -> int:
    """Lines as the Node queue counts them: split on any newline, ignoring one trailing empty piece."""
    lines = _LINE_SPLIT.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return len(lines)


def json_size(text: str) -> int:
    """Bytes ``text`` takes inside a JSON body as ``requests`` encodes it (ASCII with escapes)."""
    return len(json.dumps(text))


def split_for_json(text: str, limit: int) -> list[str]:
    """Cut ``text`` into pieces whose JSON encoding fits ``limit``; prefers cutting after a newline."""
    pieces: list[str] = []
    while json_size(text) > limit:
        lo, hi = 1, len(text)
        while lo < hi:  # the longest prefix that fits
            mid = (lo + hi + 1) // 2
            if json_size(text[:mid]) <= limit:
                lo = mid
            else:
                hi = mid - 1
        cut = text.rfind("\n", 0, lo) + 1
        if cut < lo // 2:
            cut = lo
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


class OutputQueue:
    """Collects text with :meth:`add` and posts it from one background thread in strict order.

    ``post(output_number, text)`` does the HTTP call; ``interval`` is seconds (``None``/``<=0``: off) and
    ``segment_size`` lines (``None``/``<=0``: off), as in ``executor_config.json`` (there in milliseconds).
    """

    def __init__(
        self,
        post: PostOutput,
        interval: float | None,
        segment_size: int | None,
        *,
        max_chunk_bytes: int = MAX_CHUNK_BYTES,
        max_buffer_chars: int = MAX_BUFFER_CHARS,
        retry_for: float = 120.0,
        name: str = "job",
    ) -> None:
        self._post = post
        self.interval = interval if interval and interval > 0 else None
        self.segment_size = segment_size if segment_size and segment_size > 0 else None
        self.enabled = self.interval is not None or self.segment_size is not None
        self.max_chunk_bytes = max_chunk_bytes
        self.retry_for = retry_for
        self._cond = threading.Condition()
        self.max_buffer_chars = max_buffer_chars
        self._current: list[str] = []
        self._current_chars = 0
        self._current_lines = 0
        self._queued: deque[tuple[str, int]] = deque()  # (chunk, its JSON size)
        self._queued_chars = 0
        self._dropping = 0  # bytes left out since the last marker
        #: Bytes left out of the live stream so far, and the most characters ever held at once.
        self.dropped_bytes = 0
        self.peak_buffered = 0
        self._sending = False
        self._closed = False
        self._next_number = 0
        self._deadline = self._next_deadline()
        self._thread: threading.Thread | None = None
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name=f"output-{name}", daemon=True)
            self._thread.start()

    @property
    def last_number(self) -> int | None:
        """``outputNumber`` of the last chunk handed to ``post`` (None when nothing was posted)."""
        return self._next_number - 1 if self._next_number else None

    @property
    def buffered(self) -> int:
        """Characters held: the current chunk and the queued ones (not the one being posted)."""
        with self._cond:
            return self._current_chars + self._queued_chars

    def add(self, text: str, *, essential: bool = False) -> None:
        """Append console text; queues the current chunk when it reaches ``segment_size`` lines or the cap.

        Text that does not fit in ``max_buffer_chars`` is left out of the live stream (counted for the
        marker), unless ``essential`` (a worker message: always kept).
        """
        if not self.enabled or not text:
            return
        with self._cond:
            held = self._current_chars + self._queued_chars
            marker = DROPPED_MARKER.format(n=self._dropping) if self._dropping else ""
            if not essential and held + len(marker) + len(text) > self.max_buffer_chars:
                size = len(text.encode("utf-8", "replace"))
                self._dropping += size
                self.dropped_bytes += size
                return
            if marker:
                self._dropping = 0
                self._append(marker)
            self._append(text)

    def _append(self, text: str) -> None:
        self._current.append(text)
        self._current_chars += len(text)
        self._current_lines += count_lines(text)
        if self.segment_size is not None and self._current_lines >= self.segment_size:
            self._queue_current()
            self._deadline = self._next_deadline()
        elif self._current_chars * 12 > self.max_chunk_bytes:
            # 12 bytes is the worst JSON cost of one character; only then measure precisely.
            joined = "".join(self._current)
            pieces = split_for_json(joined, self.max_chunk_bytes)
            self._enqueue(pieces[:-1])
            self._current = [pieces[-1]]
            self._current_chars = len(pieces[-1])
            self._current_lines = count_lines(pieces[-1])
            self._cond.notify_all()
        self.peak_buffered = max(self.peak_buffered, self._current_chars + self._queued_chars)

    def flush(self, timeout: float | None = None) -> bool:
        """Queue the current chunk and wait until every queued chunk was posted (or given up on)."""
        if not self.enabled:
            return True
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._dropping:  # the marker ends the stream when the tail was left out
                self._append(DROPPED_MARKER.format(n=self._dropping))
                self._dropping = 0
            self._queue_current()
            while self._queued or self._sending:
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Flush, then stop the sender thread."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        return done

    # internals (callers hold self._cond) -------------------------------------------------------------
    def _next_deadline(self) -> float | None:
        return None if self.interval is None else time.monotonic() + self.interval

    def _queue_current(self) -> None:
        if not self._current:
            return
        joined = "".join(self._current)
        self._current, self._current_chars, self._current_lines = [], 0, 0
        self._enqueue(split_for_json(joined, self.max_chunk_bytes))
        self._cond.notify_all()

    def _enqueue(self, pieces: list[str]) -> None:
        """Queue chunks; with a backlog, merge each into the last waiting chunk while that fits the cap."""
        for piece in pieces:
            size = json_size(piece)
            if len(self._queued) >= COALESCE_AFTER:
                last, last_size = self._queued[-1]
                if last_size + size - 2 <= self.max_chunk_bytes:  # one pair of quotes fewer
                    self._queued[-1] = (last + piece, last_size + size - 2)
                    self._queued_chars += len(piece)
                    continue
            self._queued.append((piece, size))
            self._queued_chars += len(piece)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queued and not self._closed:
                    timeout = None if self._deadline is None else self._deadline - time.monotonic()
                    if timeout is not None and timeout <= 0:
                        self._queue_current()
                        self._deadline = self._next_deadline()
                        continue
                    self._cond.wait(timeout)
                if not self._queued and self._closed:
                    return
                chunk, _ = self._queued.popleft()
                self._queued_chars -= len(chunk)
                number = self._next_number
                self._next_number += 1
                self._sending = True
            try:
                self._send(number, chunk)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()

    def _send(self, number: int, chunk: str) -> None:
        """Post one chunk, retrying with backoff; a 404 (job gone) or ``retry_for`` seconds give up."""
        give_up = time.monotonic() + self.retry_for
        delay = 0.5
        while True:
            try:
                self._post(number, chunk)
                return
            except WebGMEError as exc:
                if exc.status_code is not None and 400 <= exc.status_code < 500:
                    log.warning("output #%d not accepted (%s); it stays in job_stdout.txt", number, exc)
                    return
                error: Exception = exc
            except Exception as exc:  # network errors: the server may be restarting
                error = exc
            if time.monotonic() + delay > give_up:
                log.warning("output #%d dropped after retries (%s); it stays in job_stdout.txt", number, error)
                return
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
