"""Issue 16, item 8: the daemon survives wrong-shaped executor answers and clamps the server's refreshPeriod.

A misbehaving executor on loopback (a tiny ``http.server``) answers the real ``deepforge-worker`` process's
polls with crafted bodies in turn and counts the polls.  The worker must stay alive, log each kind of mistake
once, keep polling, and poll at a clamped rate: never in a tight loop for ``refreshPeriod: 0.001`` and never
stop for ``refreshPeriod: 1e12``.  Counts over a window are asserted with generous bounds, not timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

#: Each body is answered to one poll, in order; the last one is repeated from then on.
CRAFTED: list[Any] = [
    None,  # a 500: a failed poll, so the worker then looks for lost claims in the (malformed) job list
    {"jobsToStart": [{}], "refreshPeriod": 100},
    {"jobsToCancel": [{}]},
    {"labelJobs": ["x"]},
    {"jobsToStart": "a" * 40},
    {"labelJobs": {"gpu": 5}},
    [{"jobsToStart": []}],
    "just a string",
    {"refreshPeriod": "soon"},
    {"refreshPeriod": -5},
    {"refreshPeriod": True},
    {"jobsToStart": [None, 7, [], ""], "jobsToCancel": {"h": 1}},
]
TIGHT = {"refreshPeriod": 0.001, "jobsToStart": [{}]}
FOREVER = {"refreshPeriod": 1e12}


class Executor:
    """Answers ``POST /rest/executor/worker`` with the crafted bodies; counts polls with their times."""

    def __init__(self) -> None:
        self.bodies: list[Any] = list(CRAFTED)
        self.polls: list[float] = []
        self.other: list[str] = []
        self.lock = threading.Lock()

    def next_body(self) -> Any:
        with self.lock:
            self.polls.append(time.monotonic())
            return self.bodies.pop(0) if len(self.bodies) > 1 else self.bodies[0]

    def set_body(self, body: Any) -> None:
        with self.lock:
            self.bodies = [body]

    def count(self) -> int:
        with self.lock:
            return len(self.polls)


@pytest.fixture
def executor() -> Iterator[tuple[Executor, str]]:
    state = Executor()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if self.path.rstrip("/") == "/rest/executor/worker":
                body = state.next_body()
                if body is None:
                    self._send(500, {"error": "boom"})
                else:
                    self._send(200, body)
            else:
                state.other.append(f"POST {self.path}")
                self._send(404, {})

        def do_GET(self) -> None:
            state.other.append(f"GET {self.path}")
            if self.path.startswith("/rest/executor?") or self.path.startswith("/rest/executor/?"):
                # the RUNNING job list, with entries that are not JobInfo objects
                self._send(200, {"a" * 40: "not an object", "b" * 40: 5, "c" * 40: None, "d" * 40: ["x"]})
            else:
                self._send(404, {})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def polls_in(state: Executor, seconds: float) -> int:
    before = state.count()
    time.sleep(seconds)
    return state.count() - before


def test_the_worker_survives_malformed_answers_and_clamps_the_refresh(
    executor: tuple[Executor, str], tmp_path: Path
) -> None:
    state, url = executor
    log_path = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "deepforge_worker.cli", "start", "--host", url,
            "--work-dir", str(tmp_path / "jobs"), "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "DEEPFORGE_WORKER_MAX_REFRESH": "1"}  # the longest wait between polls (default 60 s)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:

        def alive() -> bool:
            assert proc.poll() is None, f"the worker exited {proc.returncode}:\n{log_path.read_text()}"
            return True

        # Every crafted answer is served (the 500 backs off for a few seconds; 1 s maxRefresh caps the rest).
        wait_for(lambda: alive() and state.count() > len(CRAFTED) + 2, 90, "the worker to poll through every answer")
        assert any(p.startswith("GET /rest/executor") for p in state.other), "lost claims were looked for"

        # A 1 ms refreshPeriod: polls at most every 0.2 s (MIN_REFRESH), not ~800 times a second.
        state.set_body(TIGHT)
        time.sleep(1.0)
        tight = polls_in(state, 4.0)
        alive()
        assert 2 <= tight <= 4.0 / 0.2 + 6, f"{tight} polls in 4 s with refreshPeriod 0.001 ms"

        # A refreshPeriod of 1e12 ms: polling goes on, here every maxRefresh = 1 s (60 s by default).
        state.set_body(FOREVER)
        wait_for(lambda: alive() and state.count() > 0 and state.polls[-1] > time.monotonic() - 0.5, 10, "a poll")
        forever = polls_in(state, 5.0)
        alive()
        assert forever >= 2, f"{forever} polls in 5 s after refreshPeriod 1e12"
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    log = log_path.read_text()
    assert code == 0, log
    assert "Traceback" not in log, log
    for what in (
        "'jobsToStart[0]' is dict",
        "'jobsToCancel[0]' is dict",
        "'labelJobs' is list",
        "'jobsToStart' is str",
        "'labelJobs.gpu' is int",
        "the answer is list",
        "'refreshPeriod' 'soon'",
        "'refreshPeriod' 100 ms is outside [200, 1000] ms; polling every 0.2 s instead",
        "'refreshPeriod' 1000000000000.0 ms is outside [200, 1000] ms; polling every 1 s instead",
        "job list entry",
    ):
        assert what in log, f"{what!r} not logged:\n{log}"
    # logged once per kind, although the tight loop repeated jobsToStart[0] and a too short period on every poll
    assert log.count("'jobsToStart[0]' is dict") == 1, log
    assert log.count("ms is outside [200, 1000] ms; polling every 0.2 s") == 1, log
