"""The scale benchmarks at a small size, so their code cannot rot: each runs end to end against the real
server and workers and prints its figures (what they measure is not asserted here: speed is `make bench`'s)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench(script: str, *args: str) -> str:
    argv = [sys.executable, str(BENCH / script), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=840)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1: a target missed, still a verdict
    return proc.stdout


def test_scale_pipelines_reports_every_case_at_small_size() -> None:
    out = bench("scale_pipelines.py", "--ops", "3", "--shapes", "chain,fanout", "--computes", "local,gme")
    for shape in ("chain", "fanout"):
        for compute in ("local", "gme"):
            line = re.search(
                rf"^  {shape} +{compute} +3 ops  overhead/op +([\d.]+) s   commits/job ([\d.]+)\b", out, re.M
            )
            assert line, out
            assert float(line.group(2)) > 0, line.group(0)  # the run committed its jobs' results
    assert out.strip().splitlines()[-1] in ("scale_pipelines: PASS", "scale_pipelines: FAIL"), out


def test_scale_pipelines_prints_targets_at_target_sizes() -> None:
    """With the target sizes scaled down to the run (``--target-ops``/``--growth-base``), every target line appears."""
    out = bench(
        "scale_pipelines.py", "--ops", "2,4", "--shapes", "fanout", "--computes", "local",
        "--target-ops", "4", "--growth-base", "2",
    )  # fmt: skip
    assert re.search(r"^  fanout local +4 ops  overhead/op +[\d.]+ s  \(target <= 0.25 s\) (PASS|FAIL)", out, re.M), out
    assert re.search(r"^  fanout local overhead 4 ops / 2 ops = [\d.]+  \(target <= 5.5\) (PASS|FAIL)$", out, re.M), out


def test_scale_workers_reports_rates_and_latencies_at_small_size() -> None:
    out = bench("scale_workers.py", "--jobs", "6", "--refresh-ms", "1000", "--workers", "2", "--slots", "2")
    ratio = re.search(
        r"^  refresh 1000 ms: jobs/s ours ([\d.]+) / Node ([\d.]+) = ([\d.]+)  \(target >= 1.5\) (PASS|FAIL)$",
        out,
        re.M,
    )
    assert ratio, out
    assert float(ratio.group(1)) > 0 and float(ratio.group(2)) > 0
    for kind in ("node", "ours"):
        assert re.search(rf"^    dispatch latency {kind} +p50 +[\d.]+ s  p95 +[\d.]+ s$", out, re.M), out
    assert out.strip().splitlines()[-1] in ("scale_workers: PASS", "scale_workers: FAIL"), out


def requests_per_job(out: str, shape: str, ops: int) -> float:
    line = re.search(rf"^  {shape} +local +{ops} ops .* model requests/job ([\d.]+)$", out, re.M)
    assert line, out
    return float(line.group(1))


def test_model_requests_per_job_do_not_grow_with_the_pipeline(tmp_path: Path) -> None:
    """A run's model round trips per job stay flat as the pipeline grows (counted in the plugin's profile):
    re-reading the whole Execution for every job it started made them grow with the number of jobs."""
    out = bench(
        "scale_pipelines.py", "--ops", "3,12", "--shapes", "chain,fanout", "--computes", "local",
        "--profile", str(tmp_path / "profile"),
    )  # fmt: skip
    for shape in ("chain", "fanout"):
        small, big = requests_per_job(out, shape, 3), requests_per_job(out, shape, 12)
        assert big <= small * 1.1, (shape, small, big)
