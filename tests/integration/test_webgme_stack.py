"""The stack launcher behind the fixtures and `make dev`: loopback only, and nothing left running."""

from __future__ import annotations

import os
import socket

import pytest
import requests
from deepforge_dev.stack import StackError, WebGMEStack, running_stack

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
