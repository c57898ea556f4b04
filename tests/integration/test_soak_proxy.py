"""The soak run's fault-injecting TCP proxy (deepforge_dev.soak.proxy) in front of real servers.

Through the shared WebGME server and the session's SeaweedFS: traffic passes unchanged under "none" (HTTP with
keep-alive, socket.io's websocket, a multipart S3 put/get), each fault gives the client-visible effect it
should, our retrying session (deepforge_adapters.http) rides out a reset burst, and stop() leaves no thread
and no socket behind.  Effects are asserted on outcomes (which request fails, with what), never on timings.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from deepforge_adapters.http import make_session
from deepforge_adapters.storage.registry import get_client
from deepforge_dev.soak.proxy import FaultProxy

from tests.fixtures.plugins import GmeProject
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

PROBE = "/gmeConfig.json"  # the client config the WebGME UI loads: a few KiB of JSON, the same whatever the Host


@pytest.fixture
def proxy(webgme_server: Any) -> Iterator[FaultProxy]:
    with FaultProxy.for_url(webgme_server.url) as p:
        yield p


def _no_retry_session() -> requests.Session:
    return make_session(retries=0)


RAW_PROBE = "/api/"  # answered with a Content-Length (the raw-socket tests read exactly one answer)


def _raw_http_get(port: int, path: str = RAW_PROBE) -> socket.socket:
    """A socket with one HTTP/1.1 keep-alive request sent (the answer not read)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def _read_http_response(sock: socket.socket) -> bytes:
    """Read one response with a Content-Length body off ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the body")
        body += chunk
    return head + b"\r\n\r\n" + body


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("FaultProxy:")]


def _tcp_sockets_on(port: int) -> list[str]:
    """States (hex, /proc/net/tcp) of sockets of this machine whose local port is ``port``, TIME_WAIT left out."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] != "06":
                states.append(fields[3])
    return states


# ---------------------------------------------------------------------------------------------- "none"
def test_http_passes_unchanged_with_keepalive(webgme_server: Any, proxy: FaultProxy) -> None:
    direct = requests.get(webgme_server.url + PROBE, timeout=30)
    session = make_session()
    bodies = [session.get(proxy.url(webgme_server.url) + PROBE).content for _ in range(5)]
    assert direct.status_code == 200
    assert bodies == [direct.content] * 5
    stats = proxy.stats()
    assert stats.accepted == 1, "the session's pooled connection was reused through the proxy"
    assert stats.bytes_up > 0 and stats.bytes_down > 0  # (the answers come gzipped: no length to compare)
    assert (stats.dropped, stats.reset, stats.delayed, stats.blackholed) == (0, 0, 0, 0)


def _socketio_exchange(base_url: str) -> list[Any]:
    """Open WebGME's socket.io over a websocket (engine.io 4) and ask ``getConnectionInfo`` twice."""
    parts = urllib.parse.urlsplit(base_url)
    ws: Any = websocket.create_connection(f"ws://{parts.netloc}/socket.io/?EIO=4&transport=websocket", timeout=30)
    try:
        assert ws.recv().startswith("0{"), "engine.io open packet"
        ws.send("40")
        assert ws.recv().startswith("40"), "socket.io connect"
        answers = []
        for ack in (1, 2):
            ws.send(f'42{ack}["getConnectionInfo",{{"pad":"{"x" * 70000}"}}]')  # > one proxy chunk
            reply = ws.recv()
            while reply == "2":  # the server's ping
                ws.send("3")
                reply = ws.recv()
            assert reply.startswith(f"43{ack}"), reply[:80]
            answers.append(json.loads(reply[len(f"43{ack}") :]))
        return answers
    finally:
        ws.close()


def test_socketio_websocket_passes_unchanged(webgme_server: Any, proxy: FaultProxy) -> None:
    direct = _socketio_exchange(webgme_server.url)
    proxied = _socketio_exchange(proxy.url(webgme_server.url))
    assert direct[0][0] is None and direct[0][1]["serverVersion"]
    assert proxied == direct
    assert proxy.stats().bytes_up > 2 * 70000


def test_s3_put_get_through_proxy_is_byte_identical(seaweedfs_server: Any) -> None:
    payload = os.urandom(11 * 1024 * 1024 + 12345)  # three parts at 5 MiB
    with FaultProxy.for_url(seaweedfs_server.url) as p:
        config = {**seaweedfs_server.storage_config(), "chunkSize": 5 * 1024 * 1024}
        seaweedfs_server.client().create_bucket(Bucket=config["bucketName"])
        storage = get_client("s3", {**config, "endpoint": p.url(seaweedfs_server.url)})
        info = storage.put_file_stream("soak/proxy.bin", io.BytesIO(payload), size=len(payload))
        with storage.get_file_stream(info) as f:
            read_back = hashlib.sha256()
            while chunk := f.read(1 << 20):
                read_back.update(chunk)
        assert p.stats().bytes_up >= len(payload) and p.stats().bytes_down >= len(payload)
    assert read_back.hexdigest() == hashlib.sha256(payload).hexdigest()
    direct = seaweedfs_server.client().get_object(Bucket=config["bucketName"], Key=info.data["filename"])["Body"].read()
    assert hashlib.sha256(direct).hexdigest() == hashlib.sha256(payload).hexdigest()


# ---------------------------------------------------------------------------------------------- faults
def test_drop_closes_new_connections_and_blackholes_open_ones(webgme_server: Any, proxy: FaultProxy) -> None:
    url = proxy.url(webgme_server.url) + PROBE
    held = _raw_http_get(proxy.port)
    _read_http_response(held)  # an open keep-alive connection
    proxy.set_fault("drop")
    with pytest.raises(requests.ConnectionError):
        _no_retry_session().get(url)
    held.sendall(f"GET {RAW_PROBE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    held.settimeout(0.5)
    with pytest.raises(TimeoutError):  # nothing comes back: the request was swallowed
        held.recv(65536)
    proxy.set_fault("none")
    held.settimeout(10)
    assert held.recv(65536) == b"", "a black-holed connection is closed when the fault is lifted"
    held.close()
    assert _no_retry_session().get(url).status_code == 200
    stats = proxy.stats()
    assert stats.dropped == 1 and stats.blackholed == 1 and stats.closed_by_fault == 1


def test_drop_with_count_then_recovers(webgme_server: Any, proxy: FaultProxy) -> None:
    url = proxy.url(webgme_server.url) + PROBE
    proxy.set_fault("drop", count=2)
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            _no_retry_session().get(url)
    assert proxy.fault == "none"
    assert _no_retry_session().get(url).status_code == 200


def test_delay_fails_a_shorter_read_timeout_and_passes_a_longer_one(webgme_server: Any, proxy: FaultProxy) -> None:
    url = proxy.url(webgme_server.url) + PROBE
    proxy.set_fault("delay", seconds=1.5)
    with pytest.raises(requests.ConnectionError, match="Read timed out"):  # (urllib3's Retry wraps it)
        _no_retry_session().get(url, timeout=(10, 0.3))
    answer = _no_retry_session().get(url, timeout=(10, 30))
    assert answer.status_code == 200 and answer.content == requests.get(webgme_server.url + PROBE, timeout=30).content
    assert proxy.stats().delayed >= 2


def test_reset_gives_connection_reset_to_new_and_open_connections(webgme_server: Any, proxy: FaultProxy) -> None:
    held = _raw_http_get(proxy.port)
    _read_http_response(held)
    proxy.set_fault("reset")
    with pytest.raises(ConnectionResetError):  # the open one was reset when the fault was set
        held.recv(65536)
    fresh = _raw_http_get(proxy.port)
    with pytest.raises(ConnectionResetError):  # a new one is reset on its first bytes
        fresh.recv(65536)
    for sock in (held, fresh):
        sock.close()
    assert proxy.stats().reset == 2


def test_reset_all_resets_open_connections_once(webgme_server: Any, proxy: FaultProxy) -> None:
    held = [_raw_http_get(proxy.port) for _ in range(3)]
    for sock in held:
        _read_http_response(sock)
    wait_for(lambda: proxy.stats().open == 3, 10, "three open connections")
    assert proxy.reset_all() == 3
    for sock in held:
        with pytest.raises(ConnectionResetError):
            sock.recv(65536)
        sock.close()
    assert proxy.fault == "none"
    again = _raw_http_get(proxy.port)
    assert b" 200 " in _read_http_response(again).split(b"\r\n", 1)[0]
    again.close()


def test_retrying_session_survives_a_reset_burst(webgme_server: Any, proxy: FaultProxy) -> None:
    url = proxy.url(webgme_server.url) + PROBE
    proxy.set_fault("reset", count=1)
    with pytest.raises(requests.ConnectionError):  # without retries the burst is seen
        _no_retry_session().get(url)
    proxy.set_fault("reset", count=3)
    answer = make_session(retries=4, backoff=0.01).get(url)
    assert answer.status_code == 200
    stats = proxy.stats()
    assert stats.reset == 4 and stats.fault == "none"


def test_upstream_refusing_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it once closed
    with FaultProxy(("127.0.0.1", port)) as p:
        with pytest.raises(requests.ConnectionError):
            _no_retry_session().get(f"http://127.0.0.1:{p.port}/")
        assert p.stats().upstream_failures == 1


def test_bad_fault_names_the_kind_and_parameter(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError, match="'jitter'"):
        proxy.set_fault("jitter")
    with pytest.raises(ValueError, match="seconds"):
        proxy.set_fault("delay")
    with pytest.raises(ValueError, match="'seconds'"):
        proxy.set_fault("reset", seconds=1)
    assert proxy.fault == "none"


# ---------------------------------------------------------------------------------------------- stop
def test_stop_leaves_no_thread_and_no_socket(webgme_server: Any) -> None:
    before = set(_proxy_threads())
    p = FaultProxy.for_url(webgme_server.url)
    port = p.start()
    session = make_session()
    assert session.get(p.url(webgme_server.url) + PROBE).status_code == 200  # a pooled keep-alive connection
    held = _raw_http_get(port)
    _read_http_response(held)
    ws: Any = websocket.create_connection(f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket", timeout=30)
    assert ws.recv().startswith("0{")
    wait_for(lambda: p.stats().open == 3, 10, "three open connections")
    assert len(set(_proxy_threads()) - before) == 4  # the acceptor and one per connection
    assert "0A" in _tcp_sockets_on(port)  # LISTEN
    p.stop()
    assert set(_proxy_threads()) - before == set()
    assert p.stats().open == 0
    assert held.recv(65536) == b"", "open connections were closed"
    held.close()
    ws.close()
    session.close()
    # nothing of the proxy's left: no listener, no connection with the proxy's port as its local port
    wait_for(lambda: not _tcp_sockets_on(port), 10, f"no socket left on port {port}")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    p.stop()  # idempotent


def test_a_plugin_runs_over_socketio_through_the_proxy(plugin_stack: Any) -> None:
    """The way the UI (and tests/fixtures/run_plugin_ws.js) runs plugins: socket.io's websocket, through us."""
    spec = {
        "name": "proxied",
        "operations": [
            {"name": "Only", "code": "class Only:\n    def execute(self):\n        return 1\n", "outputs": ["x"]}
        ],
    }
    with FaultProxy.for_url(plugin_stack.url) as p:
        project = GmeProject(p.url(plugin_stack.url), f"soakproxy_{uuid.uuid4().hex[:10]}").create()
        try:
            result = project.run_as_ui("ImportPipeline", "", {"pipeline": json.dumps(spec)}, "master")
            assert result["success"], result
            assert p.stats().accepted >= 2 and p.stats().reset == 0  # the REST create and the websocket
        finally:
            project.http.delete(f"{project.url}/api/projects/{project.owner}/{project.name}")
