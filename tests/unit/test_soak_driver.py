"""The soak driver tells "the server does not answer" from "no such Execution".

Seed 15 found the driver treating a WebGME restart as the second: it started its pipeline again after each
restart, making a new Execution each time, until it gave up after 12 plugin runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from deepforge_dev.soak.run import Soak, SoakOptions


class RestartingProject:
    """A model with MyExecutions (/W) holding the Execution soak013 (/W/e), whose server refuses the first
    ``down`` reads as a restarting server does."""

    nodes: dict[str, dict[str, Any]] = {
        "": {"atr": {"name": "ROOT"}, "W": "#w"},
        "/W": {"atr": {"name": "MyExecutions"}, "e": "#e"},
        "/W/e": {"atr": {"name": "soak013"}},
    }

    def __init__(self, down: int) -> None:
        self.down = down

    def node(self, path: str) -> dict[str, Any]:
        if self.down > 0:
            self.down -= 1
            raise requests.ConnectionError("connection refused")
        return self.nodes[path]


def soak_on(project: RestartingProject, tmp_path: Path) -> Soak:
    soak = Soak(SoakOptions(seed=15, run_dir=tmp_path))
    soak.project = project  # type: ignore[assignment]
    return soak


def test_an_execution_is_found_once_a_restarting_server_answers(tmp_path: Path) -> None:
    soak = soak_on(RestartingProject(down=3), tmp_path)
    assert soak.find_execution("soak013") == "/W/e"


def test_an_execution_not_in_the_model_is_none(tmp_path: Path) -> None:
    soak = soak_on(RestartingProject(down=0), tmp_path)
    assert soak.find_execution("soak014") is None


def test_a_process_younger_than_the_audit_is_no_orphan_of_a_job_group_number(tmp_path: Path) -> None:
    """A job's process group id reused by an unrelated process started after the run (the 1,000-job run
    counted 20 processes of another session's Ray cluster as orphans so)."""
    import subprocess
    import sys
    import time

    from deepforge_dev.soak.audit import job_processes

    before = time.time() - 5
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        assert any(f"pid {proc.pid} " in line for line in job_processes(None, {proc.pid}))
        assert any(
            f"pid {proc.pid} " in line for line in job_processes(None, {proc.pid}, started_before=time.time() + 5)
        )
        assert not any(f"pid {proc.pid} " in line for line in job_processes(None, {proc.pid}, started_before=before))
    finally:
        proc.kill()
        proc.wait()
