"""``deepforge-worker -h`` and ``check`` against a server that is not there: one short try, one plain line."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

WORKER = [sys.executable, "-m", "deepforge_worker.cli"]


def test_short_help_option_is_accepted() -> None:
    proc = subprocess.run([*WORKER, "-h"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: " in proc.stdout and "check" in proc.stdout


def test_check_against_a_down_server_says_cannot_reach() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    proc = subprocess.run([*WORKER, "check", "--host", url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"FAILED: cannot reach {url}: "), proc.stderr
    assert "Connection refused" in last
    assert "HTTPConnectionPool" not in proc.stderr and "Max retries" not in proc.stderr
    assert "Retrying" not in proc.stderr  # one try, not the daemon's retry chain
