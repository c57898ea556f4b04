"""The benchmark scripts' command lines: one size flag, and a verdict that follows the printed figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"
MOVERS = ["local_memory.py", "runner_memory.py", "sciserver_memory.py", "s3_throughput.py", "gme_throughput.py"]


@pytest.mark.parametrize("script", MOVERS)
def test_every_transfer_benchmark_takes_mib(script: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--mib" in proc.stdout and "--size-mib" not in proc.stdout


def _local_memory(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(BENCH / "local_memory.py"), "--mib", "4", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def test_local_memory_fails_when_a_ratio_is_below_its_target() -> None:
    proc = _local_memory("--min-ratio", "1000000")  # no machine copies a million times faster than cp
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith("TARGET ")]
    assert any("limit / ours" in line and line.endswith(" FAIL") for line in verdicts), proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("local_memory: FAIL"), proc.stdout


def test_local_memory_passes_when_every_figure_meets_its_target() -> None:
    proc = _local_memory("--min-ratio", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith("TARGET ")]
    assert verdicts and all(line.endswith(" PASS") for line in verdicts), proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("local_memory: PASS"), proc.stdout


def test_runner_memory_times_each_transfer_between_the_runners_own_lines() -> None:
    """The transfer figures come from the runner's progress lines: if those lines change, the bench says so."""
    argv = [sys.executable, str(BENCH / "runner_memory.py"), "--mib", "4", "--rounds", "1", "--min-ratio", "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith("TARGET ")]
    assert sum("limit / transfer" in line for line in verdicts) == 2, proc.stdout
    assert "whole jobs, limit / job" in proc.stdout, proc.stdout


def test_a_timed_step_starts_from_freed_page_cache_and_leaves_nothing_behind(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from _targets import start_timed_step
    finally:
        sys.path.remove(str(BENCH))
    (tmp_path / "kept").write_bytes(b"x")
    start_timed_step(tmp_path, 3 * 1024 * 1024 + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
