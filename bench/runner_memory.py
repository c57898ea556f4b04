"""Does the in-job runner move a 1 GiB artifact in bounded memory, and how fast is it vs ``cp``?

Two real jobs through ``local`` storage:

1. *produce*: the operation hard-links a pre-made 1 GiB file to ``outputs/big/data`` (instant), so the
   runner's time is almost all the upload (``put_file_stream``: sha256 while streaming + fsync + rename);
2. *consume*: the next job takes that output's dataInfo as its input, so the runner fetches it into the
   worker cache (download, size + sha256 verification, atomic rename) and links it into ``artifacts/``.

Each runner runs in a wrapper process that reports its own peak RSS (``RUSAGE_SELF``: the runner alone, not
the operation it starts).  Throughput is a ratio to ``cp`` of the same file in the same run.  Exits non-zero
if a peak RSS exceeds the bound or a job fails.

    python bench/runner_memory.py [--mib 1024] [--limit-mib 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.storage import DataInfo

CHUNK = 1024 * 1024

# Runs the runner in-process and reports this process's own peak RSS on the last line of stderr.
WRAPPER = r"""
import json, resource, sys
from deepforge_adapters.jobs.runner import main
code = main([])
print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), file=sys.stderr)
sys.exit(code)
"""

PRODUCE = """
import os, sys
os.makedirs("outputs/big")
os.link(sys.argv[1], "outputs/big/data")
open("outputs/big/metadata.json", "w").write('{"type": "bytes"}')
"""

CONSUME = """
import os
print("input size:", os.path.getsize("artifacts/big"))
"""


def make_file(path: Path, mib: int) -> None:
    """Random (incompressible) content, written a chunk at a time."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(CHUNK))


def timed_cp(src: Path, dest: Path, durable: bool = False) -> float:
    """Seconds for ``cp`` (page cache only), or with ``durable`` for ``cp`` + ``sync FILE`` (fsync), like ours."""
    os.sync()  # start from no dirty pages, like every measured step
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    if durable:
        subprocess.run(["sync", str(dest)], check=True)
    elapsed = time.perf_counter() - t0
    dest.unlink()
    return elapsed


def run_job(bundle: Path, env: dict[str, str]) -> tuple[float, dict[str, Any], str]:
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER], cwd=bundle, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"job in {bundle} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="artifact size in MiB (default 1024)")
    parser.add_argument("--limit-mib", type=int, default=100, help="peak RSS bound in MiB (default 100)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-runner-memory-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFORGE_")}
    env["DEEPFORGE_WORKER_CACHE"] = str(work / "cache")
    storage = {"root": str(work / "storage")}
    try:
        src = work / "src.bin"
        make_file(src, args.mib)
        cp_before = timed_cp(src, work / "cp.bin")  # the same bytes, the same disk, in this run
        sync_before = timed_cp(src, work / "cp.bin", durable=True)

        produce = build_bundle(
            work / "produce",
            main_py=PRODUCE,
            command=["python", "main.py", str(src)],
            storage_id="local",
            storage_dir="bench/produce",
            storage_config=storage,
            outputs=["big"],
        )
        up_s, up_rss, _ = run_job(produce, env)
        results = json.loads((produce / "results.json").read_text())
        big = DataInfo.from_json(results["big"]["dataInfo"])

        consume = build_bundle(
            work / "consume",
            main_py=CONSUME,
            storage_id="local",
            storage_dir="bench/consume",
            storage_config=storage,
            inputs={"big": (big, None)},
        )
        down_s, down_rss, output = run_job(consume, env)
        cp_s = min(cp_before, timed_cp(src, work / "cp.bin"))  # cp's best of before and after the jobs
        sync_s = min(sync_before, timed_cp(src, work / "cp.bin", durable=True))
        fetched_ok = f"input size: {args.mib * CHUNK}" in output and big.data["size"] == args.mib * CHUNK
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        print("runner_memory: FAIL (a job failed)")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    up_mib, down_mib = up_rss["maxrss_kib"] / 1024, down_rss["maxrss_kib"] / 1024
    ok = max(up_mib, down_mib) < args.limit_mib and fetched_ok
    print(f"runner_memory: {args.mib} MiB output uploaded by one job's runner, fetched as the next job's input")
    print(f"  peak RSS of the runner, upload job: {up_mib:.1f} MiB (bound {args.limit_mib} MiB)")
    print(f"  peak RSS of the runner, fetch job:  {down_mib:.1f} MiB (bound {args.limit_mib} MiB)")
    print(f"  seconds: cp {cp_s:.2f}, cp+fsync {sync_s:.2f}, upload job {up_s:.2f}, fetch job {down_s:.2f}")
    print(f"  upload job: {cp_s / up_s:.2f}x the speed of cp, {sync_s / up_s:.2f}x of cp+fsync")
    print(f"  fetch job:  {cp_s / down_s:.2f}x the speed of cp, {sync_s / down_s:.2f}x of cp+fsync")
    print("  (whole jobs: interpreter start, sha256 while streaming, fsync, rename; fetch also verifies)")
    print(f"runner_memory: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
