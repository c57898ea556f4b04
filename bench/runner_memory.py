"""Does the in-job runner move a 1 GiB artifact in bounded memory, and how fast is it vs ``cp``?

Two real jobs through ``local`` storage:

1. *produce*: the operation hard-links a pre-made 1 GiB file to ``outputs/big/data`` (instant), so the
   runner's time is the upload (``put_file_stream`` of the open file: a kernel copy, BLAKE3 of what landed
   in a thread beside it, fsync, rename) plus the job's fixed cost (interpreter starts, imports);
2. *consume*: the next job takes that output's dataInfo as its input, so the runner fetches it into the
   worker cache (kernel copy, size + BLAKE3 verification of what landed, fsync, atomic rename) and links it
   into ``artifacts/``.

Each runner runs in a wrapper process that reports its own peak RSS (``RUSAGE_SELF``: the runner alone, not
the operation it starts): target < 64 MiB.  Throughput is limit ÷ the transfer, with the limit
``max(cp + fsync, sha256 alone)`` of the same file in the same run (as ``local_memory.py``): target >= 0.7
each.  The transfer is timed between the runner's own progress lines (``uploading output`` to ``job
finished``, ``fetching input`` to ``running``); limit ÷ the whole job, interpreter starts and the operation
included, is printed beside it (the job's fixed cost is ``scale_pipelines.py``'s figure).  Every byte is
hashed once per transfer (tests/unit/test_storage_cache.py checks it).

    python bench/runner_memory.py [--mib 1024] [--rounds 3]
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
from deepforge_adapters.jobs.layout import RUNNER_PREFIX
from deepforge_adapters.storage import DataInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import (  # bench/ is not a package: from beside this
    IMPORT_PEAK,
    Targets,
    cp_fsync_seconds,
    sha256_seconds,
    start_timed_step,
)

CHUNK = 1024 * 1024
#: The runner's progress lines (after its prefix) that bound its transfers.
PHASES = ("fetching input", "running ", "uploading output", "job finished")

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


def run_job(bundle: Path, env: dict[str, str], size: int) -> tuple[float, dict[str, Any], str, dict[str, float]]:
    """Seconds of the whole job, the runner's peak RSS, its output, and when each runner line arrived.

    The runner says what it does as it goes (``fetching input ...``, ``running ...``, ``uploading output ...``,
    ``job finished``): the seconds between those lines are the transfer alone, without the job's fixed cost
    (interpreter starts, imports, the operation), which ``bench/scale_pipelines.py`` measures.  ``size``: the
    bytes the job writes (:func:`_targets.start_timed_step`).
    """
    start_timed_step(bundle.parent, size)
    stamps: dict[str, float] = {}
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as stderr:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", WRAPPER], cwd=bundle, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            lines.append(line)
            for phase in PHASES:
                if line.startswith(RUNNER_PREFIX + phase):
                    stamps.setdefault(phase, now)
        code = proc.wait()
        elapsed = time.perf_counter() - t0
        stderr.seek(0)
        err = stderr.read()
    output = "".join(lines)
    if code != 0:
        raise RuntimeError(f"job in {bundle} failed:\n{output}\n{err}")
    return elapsed, json.loads(err.strip().splitlines()[-1]), output, stamps


def phase_seconds(stamps: dict[str, float], start: str, end: str) -> float:
    """Seconds from the runner's ``start`` line to its ``end`` line (both must have been said)."""
    if start not in stamps or end not in stamps:
        raise RuntimeError(f"the runner did not say both {start!r} and {end!r}: {sorted(stamps)}")
    return stamps[end] - stamps[start]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="artifact size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds (default 3)")
    parser.add_argument("--rss-mib", type=float, default=64, help="peak RSS bound in MiB (default 64)")
    parser.add_argument("--min-ratio", type=float, default=0.7, help="target for limit / job (default 0.7)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-runner-memory-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPFORGE_")}
    storage = {"root": str(work / "storage")}
    phases = ("cp+fsync", "sha256", "upload", "fetch", "upload job", "fetch job")
    times: dict[str, list[float]] = {k: [] for k in phases}
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
            up_job, up_rss, _, up_stamps = run_job(produce, env, args.mib * CHUNK)
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
            down_job, down_rss, output, down_stamps = run_job(consume, env, args.mib * CHUNK)
            times["upload job"].append(up_job)
            times["fetch job"].append(down_job)
            times["upload"].append(phase_seconds(up_stamps, "uploading output", "job finished"))
            times["fetch"].append(phase_seconds(down_stamps, "fetching input", "running "))
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
          f"upload {best['upload']:.2f} (whole job {best['upload job']:.2f}), "
          f"fetch {best['fetch']:.2f} (whole job {best['fetch job']:.2f})")  # fmt: skip
    print("  (the transfer: from the runner's 'uploading output' / 'fetching input' line to its next one: the")
    print("   kernel copy, hashing beside it, fsync, rename; the fetch verifies and links into artifacts/ too)")
    print(f"  whole jobs, limit / job (the job's fixed cost included, see scale_pipelines.py): upload "
          f"{limit / best['upload job']:.2f}, fetch {limit / best['fetch job']:.2f}")  # fmt: skip
    targets = Targets("runner_memory")
    targets.at_least(f"runner output upload {mib} MiB, limit / transfer", limit / best["upload"], args.min_ratio)
    targets.at_least(f"runner input fetch {mib} MiB (cache), limit / transfer", limit / best["fetch"], args.min_ratio)
    targets.below(f"runner {mib} MiB transfers, peak RSS", max(rss), args.rss_mib)
    targets.check("the fetched input has every byte", fetched_ok)
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
