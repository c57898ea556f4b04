"""The live-output queue: numbering, strict order, segmenting, the chunk cap, retries."""

from __future__ import annotations

import json
import threading
import time

import pytest
from deepforge_adapters.errors import WebGMEError
from deepforge_worker.output import OutputQueue, count_lines, json_size, split_for_json

from tests.fixtures.waiting import wait_for


class Recorder:
    """A fake ``post`` that records calls and can be slowed down or made to fail."""

    def __init__(self, delay: float = 0.0, failures: int = 0, status: int | None = None) -> None:
        self.calls: list[tuple[int, str]] = []
        self.delay = delay
        self.failures = failures
        self.status = status
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, number: int, text: str) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if self.failures:
                self.failures -= 1
                if self.status is not None:
                    raise WebGMEError("nope", self.status)
                raise ConnectionError("server restarting")
            self.calls.append((number, text))
        finally:
            with self._lock:
                self.in_flight -= 1


def test_count_lines_like_node() -> None:
    assert count_lines("a\nb\n") == 2
    assert count_lines("a\r\nb\rc") == 3
    assert count_lines("partial") == 1
    assert count_lines("") == 0


def test_segments_by_line_count_in_order_from_zero() -> None:
    post = Recorder(delay=0.01)
    queue = OutputQueue(post, interval=None, segment_size=2)
    for i in range(7):
        queue.add(f"line {i}\n")
    queue.close(timeout=10)
    assert [n for n, _ in post.calls] == [0, 1, 2, 3]
    assert "".join(t for _, t in post.calls) == "".join(f"line {i}\n" for i in range(7))
    assert post.calls[0][1] == "line 0\nline 1\n"
    assert post.max_in_flight == 1, "posts must be strictly serial"
    assert queue.last_number == 3


def test_interval_flushes_without_segment_size() -> None:
    post = Recorder()
    queue = OutputQueue(post, interval=0.05, segment_size=None)
    queue.add("hello\n")
    wait_for(lambda: post.calls, 5, "the interval flush", interval=0.01)
    assert post.calls == [(0, "hello\n")]
    queue.add("again")
    queue.close(timeout=5)
    assert post.calls == [(0, "hello\n"), (1, "again")]


def test_disabled_queue_posts_nothing() -> None:
    post = Recorder()
    queue = OutputQueue(post, interval=-1, segment_size=None)
    queue.add("x\n" * 10)
    assert queue.close(timeout=1)
    assert post.calls == [] and queue.last_number is None


@pytest.mark.parametrize("char", ["a", "\x01", "é", "😀", "\n"])
def test_split_for_json_respects_the_cap(char: str) -> None:
    text = char * 50_000
    pieces = split_for_json(text, 10_000)
    assert "".join(pieces) == text
    assert all(json_size(p) <= 10_000 for p in pieces)
    assert len(pieces) > 1


def test_chunk_cap_applies_to_a_single_huge_write() -> None:
    post = Recorder()
    queue = OutputQueue(post, interval=60, segment_size=None, max_chunk_bytes=4096)
    text = "".join(f"{i:06d} \x00 ünïcode\n" for i in range(3000))
    queue.add(text)
    queue.close(timeout=10)
    assert "".join(t for _, t in post.calls) == text
    assert all(len(json.dumps({"outputNumber": n, "output": t})) < 4096 + 64 for n, t in post.calls)
    assert [n for n, _ in post.calls] == list(range(len(post.calls)))


def test_network_errors_are_retried_in_order() -> None:
    post = Recorder(failures=2)
    queue = OutputQueue(post, interval=None, segment_size=1, retry_for=30)
    queue.add("first\n")
    queue.add("second\n")
    assert queue.close(timeout=20)
    assert post.calls == [(0, "first\n"), (1, "second\n")]


def test_client_errors_are_not_retried() -> None:
    post = Recorder(failures=1, status=404)
    queue = OutputQueue(post, interval=None, segment_size=1)
    queue.add("lost\n")
    queue.add("kept\n")
    assert queue.close(timeout=5)
    assert post.calls == [(1, "kept\n")]
