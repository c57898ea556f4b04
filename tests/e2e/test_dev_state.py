"""``make dev`` keeps all its state under its run dir: nothing under ``$HOME``, nothing in the checkout.

The dev stack (``python -m deepforge_dev.stack dev``, as ``make dev`` runs it, with its worker) runs under an
empty fake ``HOME`` with an operator policy that leaves the ``local`` roots to the server (as an older
``.run/dev/policy.toml`` does: it is written once, then kept), and a worker command without ``--work-dir``
or ``--cache-dir``.  The demo pipeline runs with local storage on local compute and on the worker (gme
compute); afterwards ``HOME`` is still empty and the artifacts, job directories and the worker's status file
are under the run dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters.secrets import generate_key
from deepforge_adapters.webgme.executor import ExecutorClient
from deepforge_dev.stack import free_port, interrupt_then_kill, repo_root

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

#: A policy that enables local storage and compute but says nothing about where: the server's defaults.
OLD_DEV_POLICY = """\
[storage]
allow = ["gme", "local"]

[compute]
allow = ["gme", "local"]
"""


def test_a_dev_stack_run_leaves_nothing_under_home(tmp_path: Path) -> None:
    home, run_dir = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    run_dir.mkdir()
    (run_dir / "policy.toml").write_text(OLD_DEV_POLICY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_") and not k.startswith("DEEPFORGE_")}
    env.update(
        HOME=str(home),
        DEEPFORGE_SECRET_KEY=generate_key(),
        DEEPFORGE_PLUGIN_ZMQ_PORT=str(free_port()),
        DEEPFORGE_PLUGIN_PATHS=str(TEST_PLUGINS),  # DumpModel, to find the pipeline
    )
    port = free_port()
    worker = f"{Path(sys.executable).parent / 'deepforge-worker'} start --host {{url}}"
    log_path = tmp_path / "dev.log"
    argv = [sys.executable, "-m", "deepforge_dev.stack", "dev", "--run-dir", str(run_dir), "--port", str(port),
            "--worker-cmd", worker]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=repo_root(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def started() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"`stack dev` exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            return "demo project:" in log_path.read_text(errors="replace")

        wait_for(started, 240, "`stack dev` to seed the demo project", interval=0.25)
        project = GmeProject(f"http://127.0.0.1:{port}", "Demo")
        pipeline = project.tree("").find("", "MyPipelines", "Example")
        executor = ExecutorClient(project.url)
        wait_for(lambda: executor.get_workers(), 60, "the dev worker to poll")
        for name, compute in (("on_local", "local"), ("on_worker", "gme")):
            result = project.run("ExecutePipeline", pipeline, {"name": name, "storage": "local", "compute": compute})
            assert result["success"], (result.get("error"), log_path.read_text()[-4000:])
    finally:
        interrupt_then_kill(proc)  # Ctrl-C, as a developer stops `make dev`

    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert any(p.is_file() for p in (run_dir / "storage").rglob("*")), "local storage wrote under the run dir"
    assert (run_dir / "compute" / "jobs").is_dir(), "local compute ran its jobs under the run dir"
    assert (run_dir / "worker" / "status.json").is_file() and (run_dir / "worker-cache").is_dir()
    assert not (repo_root() / "deepforge-worker-jobs").exists()
