"""Does ``ray`` compute add little to what Ray's own job submission costs?

One Ray head node (the test suite's launcher, tests/fixtures/ray.py; or ``--url`` of a running cluster) and
alternating rounds of sequential near-empty jobs running the same command (``python3 -c`` printing the time
it started and writing an empty results.json) in a working directory holding only that command's bundle:

* **ours**: ``RayCompute.start_job`` of a bundle directory (package zip + upload, submit, idempotency and
  feasibility checks);
* **ray job submit**: what ``ray job submit --working-dir DIR --entrypoint-num-cpus 1 -- CMD`` runs, Ray's
  ``JobSubmissionClient.submit_job`` in this process (the CLI's own interpreter start, about a second,
  would only flatter us; ``--cli`` adds the CLI itself as a third line, for information).

Per job: **submit -> running** (submit called -> the command's first line, the time it printed) and
**per-job overhead** (submit called -> SUCCEEDED seen by polling ``GET /api/jobs/<id>`` every 10 ms, the
same poller for both).  Printed as medians and as ratios ours / ray job submit (target: <= 1.2); the last
line is ``ray_overhead: PASS`` or ``FAIL`` (exit 1).

    python bench/ray_overhead.py [--jobs 10] [--rounds 2] [--url http://head:8265] [--cli]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.ray: the same head-node launcher the test suite uses

from deepforge_adapters.compute import ComputeJob, get_client  # noqa: E402

TARGET = 1.2
CODE = "import time; print(repr(time.time()), flush=True); open('results.json', 'w').write('{}')"


def wait_succeeded(url: str, sid: str, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(f"{url}/api/jobs/{sid}", timeout=30).json().get("status")
        if status == "SUCCEEDED":
            return time.time()
        if status in ("FAILED", "STOPPED"):
            raise SystemExit(f"job {sid} ended {status}")
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for job {sid}")


def started_at(text: str) -> float:
    return float([line for line in text.splitlines() if line.strip()][-1])


def bundle(base: Path) -> Path:
    root = base / uuid.uuid4().hex
    root.mkdir(parents=True)
    (root / "executor_config.json").write_text(json.dumps({"cmd": "python3", "args": ["-c", CODE]}))
    (root / "nonce").write_text(uuid.uuid4().hex)  # a new job each time (ours would return the finished one)
    return root


def ours(url: str, base: Path) -> tuple[float, float]:
    client = get_client("ray", {"dashboardUrl": url})
    t0 = time.time()
    info = client.start_job(ComputeJob(bundle=bundle(base), name="bench"))
    end = wait_succeeded(url, info["submissionId"])
    return started_at(client.get_console_output(info)) - t0, end - t0


def ray_sdk(url: str, base: Path) -> tuple[float, float]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(url)
    sid = f"bench-{uuid.uuid4().hex}"
    t0 = time.time()
    client.submit_job(
        entrypoint=f'python3 -c "{CODE}"',
        runtime_env={"working_dir": str(bundle(base))},
        submission_id=sid,
        entrypoint_num_cpus=1,
    )
    end = wait_succeeded(url, sid)
    return started_at(client.get_job_logs(sid)) - t0, end - t0


def ray_cli(url: str, base: Path) -> tuple[float, float]:
    sid = f"bench-{uuid.uuid4().hex}"
    argv = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--no-wait", "--submission-id", sid,
            "--working-dir", str(bundle(base)), "--entrypoint-num-cpus", "1", "--", "python3", "-c", CODE]  # fmt: skip
    t0 = time.time()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "RAY_API_SERVER_ADDRESS": url})
    end = wait_succeeded(url, sid)
    logs = requests.get(f"{url}/api/jobs/{sid}/logs", timeout=30).json()["logs"]
    return started_at(logs) - t0, end - t0


def measure(url: str, jobs: int, rounds: int, cli: bool) -> bool:
    kinds: dict[str, Callable[[str, Path], tuple[float, float]]] = {"ours": ours, "ray job submit": ray_sdk}
    if cli:
        kinds["ray job submit (CLI)"] = ray_cli
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as tmp:
        for run in kinds.values():  # warm-up: the first job of a cluster starts its worker pool
            run(url, Path(tmp))
        for _ in range(rounds):
            for name, run in kinds.items():
                figures[name] += [run(url, Path(tmp)) for _ in range(jobs)]
    med = {k: (statistics.median(a for a, _ in v), statistics.median(b for _, b in v)) for k, v in figures.items()}
    for name, (running, total) in med.items():
        print(f"{name:>22}: submit -> running {running * 1000:7.0f} ms   per-job overhead {total * 1000:7.0f} ms")
    base = med["ray job submit"]
    ratios = {"submit -> running": med["ours"][0] / base[0], "per-job overhead": med["ours"][1] / base[1]}
    ok = True
    for what, ratio in ratios.items():
        verdict = "" if ratio <= TARGET else "   BELOW TARGET"
        ok = ok and not verdict
        print(f"ratio ours / ray job submit, {what}: {ratio:.2f} (target <= {TARGET}){verdict}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs per round and kind")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (kinds alternate)")
    parser.add_argument("--url", help="the dashboard of a running Ray cluster (default: start a head node)")
    parser.add_argument("--cli", action="store_true", help="also time the `ray job submit` CLI itself")
    args = parser.parse_args()
    print(f"ray_overhead: {args.jobs} jobs x {args.rounds} rounds per kind", flush=True)
    if args.url:
        ok = measure(args.url.rstrip("/"), args.jobs, args.rounds, args.cli)
    else:
        from tests.fixtures.ray import ray_head_node

        with tempfile.TemporaryDirectory(prefix="ray-bench-head-") as logs, ray_head_node(Path(logs)) as head:
            ok = measure(head.url, args.jobs, args.rounds, args.cli)
    print(f"ray_overhead: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
