"""make_session against a real loopback socket: dropped connections are retried, 4xx answers are not."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from deepforge_adapters.http import make_session

pytestmark = pytest.mark.integration


class FlakyServer:
    """Drops the first ``drops`` connections without answering, then answers each with ``status``."""

    def __init__(self, drops: int, status: int) -> None:
        self.drops = drops
        self.status = status
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                conn.recv(65536)
                if self.connections <= self.drops:
                    continue  # close without a response
                body = b"done"
                conn.sendall(
                    f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def flaky() -> Iterator[Callable[[int, int], FlakyServer]]:
    servers: list[FlakyServer] = []

    def make(drops: int, status: int) -> FlakyServer:
        server = FlakyServer(drops, status)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_dropped_connections_are_retried(flaky: Callable[[int, int], FlakyServer]) -> None:
    server = flaky(2, 200)
    resp = make_session(backoff=0, retries=3).get(f"http://127.0.0.1:{server.port}/x")
    assert resp.status_code == 200
    assert resp.text == "done"
    assert server.connections == 3


def test_a_4xx_answer_is_not_retried(flaky: Callable[[int, int], FlakyServer]) -> None:
    server = flaky(0, 404)
    resp = make_session(backoff=0, retries=3).get(f"http://127.0.0.1:{server.port}/x")
    assert resp.status_code == 404
    assert server.connections == 1
