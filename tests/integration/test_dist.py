"""``make dist`` builds a wheel that installs the worker into a fresh venv, without the plugins' dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters import __version__
from deepforge_dev.stack import repo_root

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_the_wheel_installs_the_worker_into_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = subprocess.run(["make", "-s", "dist", f"DIST_DIR={dist}"], cwd=repo_root(),
                           capture_output=True, text=True, check=False)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("deepforge_adapters-*.whl")
    assert wheel.name.startswith(f"deepforge_adapters-{__version__}-py3-none-any")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert install.returncode == 0, install.stderr[-4000:]

    version = subprocess.run([str(venv / "bin" / "deepforge-worker"), "--version"],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert version.returncode == 0 and f"deepforge-worker, version {__version__}" in version.stdout, version
    unit = subprocess.run([str(venv / "bin" / "deepforge-worker"), "systemd-unit", "--work-dir", str(tmp_path / "j")],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert unit.returncode == 0 and f"ExecStart={venv / 'bin' / 'deepforge-worker'} start" in unit.stdout, unit
    # Worker-only: the plugins' webgme-bindings and the dev tools are extras, not installed with the worker.
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True, check=True).stdout.lower()  # fmt: skip
    assert "prometheus" in listed and "webgme-bindings" not in listed and "pytest" not in listed
