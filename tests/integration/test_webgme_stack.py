"""The stack launcher behind the fixtures and `make dev`: loopback only, and nothing left running."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from deepforge_dev.stack import StackError, WebGMEStack, free_port, running_stack

from tests.fixtures.webgme import StackFactory

pytestmark = pytest.mark.integration


def non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_server_listens_on_loopback_only(webgme_server: WebGMEStack) -> None:
    assert requests.get(f"{webgme_server.url}/api", timeout=10).status_code == 200
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback interface to probe")
    with pytest.raises(OSError), socket.create_connection((address, webgme_server.port), timeout=3):
        pass


def test_stack_stops_every_process_and_removes_its_run_dir() -> None:
    with running_stack() as stack:
        assert stack.server is not None and stack.database is not None
        pids = [stack.server.popen.pid, stack.database.popen.pid]
        run_dir = stack.run_dir
        assert requests.get(f"{stack.url}/api", timeout=10).status_code == 200
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not run_dir.exists()


def test_a_dead_server_is_reported_with_its_log(webgme_stack_factory: StackFactory) -> None:
    stack = webgme_stack_factory()
    stack.stop_server()
    stack.options.env = {"DEEPFORGE_WEBGME_PORT": "not-a-port"}
    with pytest.raises(StackError, match="webgme exited"):
        stack.start_server()


def test_dev_refuses_a_busy_port_before_starting_or_seeding_anything(tmp_path: Path) -> None:
    """Another server already answers on the port (here one that says yes to everything): `dev` names the
    port and how to choose another, and neither starts a database nor sends that server a request."""
    requests_seen: list[str] = []

    class Yes(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests_seen.append(f"GET {self.path}")
            self.send_response(200)
            self.end_headers()

        do_PUT = do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Yes)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    port = other.server_address[1]
    run_dir = tmp_path / "run"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "deepforge_dev.stack", "dev", "--run-dir", str(run_dir), "--port", str(port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    finally:
        other.shutdown()
        other.server_close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"port {port} is already in use" in done.stderr and "DEEPFORGE_WEBGME_PORT=" in done.stderr
    assert "--port" in done.stderr and "Traceback" not in done.stderr
    assert requests_seen == []
    assert not run_dir.exists() or not any(run_dir.glob("database.*"))
