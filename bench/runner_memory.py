"""Does the in-job runner move a 1 GiB artifact in bounded memory, and how fast is it vs ``cp``?

Two real jobs through ``local`` storage:

1. *produce*: the operation hard-links a pre-made 1 GiB file to ``outputs/big/data`` (instant), so the
   runner's time is the upload (``put_file_stream`` of the open file: a kernel copy, BLAKE3 of what landed
   in a thread beside it, fsync, rename) plus the job's fixed cost (interpreter starts, imports);
2. *consume*: the next job takes that output's dataInfo as its input, so the runner fetches it into the
   worker cache (kernel copy, size + BLAKE3 verification of what landed, fsync, atomic rename) and links it
   into ``artifacts/``.

Each runner runs in a wrapper process that reports its own peak RSS (``RUSAGE_SELF``: the runner alone, not
the operation it starts): target < 64 MiB.  Throughput is limit ÷ the whole job (interpreter start included)
with the limit ``max(cp + fsync, sha256 alone)`` of the same file in the same run (as ``local_memory.py``):
target >= 0.7 each.  Every byte is hashed once per transfer (tests/unit/test_storage_cache.py checks it).

    python bench/runner_memory.py [--mib 1024] [--rounds 2]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import IMPORT_PEAK, Targets, cp_fsync_seconds, sha256_seconds  # bench/ is not a package: from beside this

CHUNK = 1024 * 1024

# Runs the runner in-process and reports this process's own peak RSS on the last line of stderr.
WRAPPER = (
    IMPORT_PEAK
    + r"""
import json, sys
from deepforge_adapters.jobs.runner import main
code = main([])
print(json.dumps({"maxrss_kib": peak_rss_mib() * 1024}), file=sys.stderr)
sys.exit(code)
"""
)

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
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds (default 2)")
    parser.add_argument("--rss-mib", type=float, default=64, help="peak RSS bound in MiB (default 64)")
    parser.add_argument("--min-ratio", type=float, default=0.7, help="target for limit / job (default 0.7)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-runner-memory-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFORGE_")}
    storage = {"root": str(work / "storage")}
    times: dict[str, list[float]] = {"cp+fsync": [], "sha256": [], "upload": [], "fetch": []}
    rss: list[float] = []
    fetched_ok = True
    try:
        src = work / "src.bin"
        make_file(src, args.mib)
        for n in range(args.rounds):
            times["cp+fsync"].append(cp_fsync_seconds(src, work / "cp.bin"))  # same bytes, disk and run
            times["sha256"].append(sha256_seconds(src))
            env["DEEPFORGE_WORKER_CACHE"] = str(work / f"cache-{n}")  # a cold cache: the fetch really downloads
            produce = build_bundle(
                work / f"produce-{n}",
                main_py=PRODUCE,
                command=["python", "main.py", str(src)],
                storage_id="local",
                storage_dir=f"bench/produce-{n}",
                storage_config=storage,
                outputs=["big"],
            )
            up_s, up_rss, _ = run_job(produce, env)
            results = json.loads((produce / "results.json").read_text())
            big = DataInfo.from_json(results["big"]["dataInfo"])
            consume = build_bundle(
                work / f"consume-{n}",
                main_py=CONSUME,
                storage_id="local",
                storage_dir=f"bench/consume-{n}",
                storage_config=storage,
                inputs={"big": (big, None)},
            )
            down_s, down_rss, output = run_job(consume, env)
            times["upload"].append(up_s)
            times["fetch"].append(down_s)
            rss += [up_rss["maxrss_kib"] / 1024, down_rss["maxrss_kib"] / 1024]
            fetched_ok &= f"input size: {args.mib * CHUNK}" in output and big.data["size"] == args.mib * CHUNK
            shutil.rmtree(work / f"cache-{n}", ignore_errors=True)
            shutil.rmtree(work / "storage", ignore_errors=True)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        print("runner_memory: FAIL (a job failed)")
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {k: min(v) for k, v in times.items()}
    limit = max(best["cp+fsync"], best["sha256"])
    mib = args.mib
    print(f"runner_memory: {mib} MiB output uploaded by one job's runner, fetched as the next job's input")
    print(f"  seconds (best of {args.rounds}): cp+fsync {best['cp+fsync']:.2f}, sha256 alone {best['sha256']:.2f}, "
          f"upload job {best['upload']:.2f}, fetch job {best['fetch']:.2f}")  # fmt: skip
    print("  (whole jobs: interpreter start, hashing beside the copy, fsync, rename; the fetch verifies too)")
    targets = Targets("runner_memory")
    targets.at_least(f"runner output upload {mib} MiB, limit / job", limit / best["upload"], args.min_ratio)
    targets.at_least(f"runner input fetch {mib} MiB (cache), limit / job", limit / best["fetch"], args.min_ratio)
    targets.below(f"runner {mib} MiB transfers, peak RSS", max(rss), args.rss_mib)
    targets.check("the fetched input has every byte", fetched_ok)
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
