"""What does ``slurm`` compute add to a Slurm job?  Ours against a bare ``sbatch --wrap`` of the same command.

One real single-node cluster (:func:`deepforge_dev.slurm.running_cluster`, Debian's Slurm; needs root and
``make slurm``), alternating rounds of sequential near-empty jobs (``python -c "print(1)"``):

* **bare**: ``sbatch --parsable --wrap CMD``, then ``scontrol show job`` every ``--poll`` seconds until it
  is COMPLETED;
* **ours**: ``SlurmCompute.start_job`` of a bundle running the same command (CLI transport, output through
  the shared directory), then ``watch`` with the same poll interval until its ``end``.

Per job: submit -> running (the first poll that sees RUNNING or later) and submit -> finished.  Printed as
medians; the verdict is the per-job overhead, ours minus bare (target: <= 1.5 s beyond Slurm's own).

    python bench/slurm_overhead.py [--jobs 10] [--rounds 2] [--poll 0.05] [--target 1.5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_dev.slurm import SlurmCluster, missing_binaries, running_cluster

COMMAND = [sys.executable, "-c", "print(1)"]
RUNNING_OR_LATER = {"RUNNING", "COMPLETING", "COMPLETED"}


def bare(cluster: SlurmCluster, poll: float) -> tuple[float, float]:
    started = time.monotonic()
    wrap = " ".join(COMMAND[:2]) + " 'print(1)'"
    job_id = cluster.run("sbatch", "--parsable", "--output=/dev/null", "--chdir=/tmp", "--wrap", wrap).stdout.strip()
    running = None
    while True:
        state = cluster.state(job_id)
        now = time.monotonic()
        if running is None and state in RUNNING_OR_LATER:
            running = now - started
        if state == "COMPLETED":
            return running or now - started, now - started
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            raise SystemExit(f"bare job {job_id} ended {state}")
        time.sleep(poll)


def ours(cluster: SlurmCluster, bundles: Path, poll: float, n: int) -> tuple[float, float]:
    bundle = bundles / f"b{n}"
    bundle.mkdir()
    (bundle / "executor_config.json").write_text(json.dumps({"cmd": COMMAND[0], "args": COMMAND[1:]}))
    (bundle / "nonce").write_text(str(n))
    compute = get_client("slurm", cluster.config())
    compute.poll_interval = compute.max_poll_interval = poll
    started = time.monotonic()
    info = compute.start_job(ComputeJob(bundle=bundle, name="bench"))
    running = None
    for update in compute.watch(info):
        now = time.monotonic()
        if running is None and (update.status == JobStatus.RUNNING or update.kind == "output"):
            running = now - started
        if update.kind == "end":
            if update.status != JobStatus.SUCCESS:
                raise SystemExit(f"our job {info['jobId']} ended {update.status}: {update.reason}")
            compute.purge_job(info)
            return running or now - started, now - started
    raise SystemExit("watch ended without an end update")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs per round and kind")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between status polls, for both")
    parser.add_argument("--target", type=float, default=1.5, help="the most seconds per job ours may add")
    args = parser.parse_args()
    missing = missing_binaries()
    if missing or os.geteuid() != 0:
        why = f"missing {', '.join(missing)}" if missing else "not root"
        print(f"slurm_overhead: SKIP (needs Debian's Slurm, `make slurm`, and root: {why})")
        return 0
    results: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": []}
    with running_cluster() as cluster, tempfile.TemporaryDirectory(prefix="slurm-bench-") as tmp:
        bare(cluster, args.poll)  # warm up: the first job after a start waits for the node's registration
        n = 0
        for _ in range(args.rounds):
            for _ in range(args.jobs):
                results["bare"].append(bare(cluster, args.poll))
            for _ in range(args.jobs):
                n += 1
                results["ours"].append(ours(cluster, Path(tmp), args.poll, n))
    med = {
        kind: (statistics.median(r for r, _ in v), statistics.median(t for _, t in v)) for kind, v in results.items()
    }
    for kind, (running, total) in med.items():
        count = len(results[kind])
        print(f"{kind:5s} submit->running {running:6.3f} s   submit->finished {total:6.3f} s   (median of {count})")
    overhead = med["ours"][1] - med["bare"][1]
    ok = overhead <= args.target
    print(f"per-job overhead (ours - bare, submit->finished): {overhead:.3f} s (target <= {args.target:g} s)"
          + ("" if ok else "  BELOW TARGET"))  # fmt: skip
    print(f"slurm_overhead: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
