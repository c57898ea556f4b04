"""Does a 1 GiB put + get through the ``local`` backend stay in bounded memory, and how fast is it vs ``cp``?

The transfer runs in a child process so its peak RSS (``ru_maxrss``) measures the adapter path alone (the
interpreter and imports included), not this script's bookkeeping.  Throughput is printed as a ratio to the
same work done by the shell tools on the same file in the same run (``cp``, ``sha256sum``, ``sync``: what a
put or a verified get does), so the number means the same on any machine.  PASS only when the peak RSS is
under its bound and both ratios reach the target (``--min-speed``).

    python bench/local_memory.py [--mib 1024] [--limit-mib 100] [--min-speed 0.5]
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

CHUNK = 1024 * 1024

CHILD = r"""
import json, resource, sys, time
from deepforge_adapters.storage import get_client

root, src, dest = sys.argv[1:]
client = get_client("local", {"root": root})
t0 = time.perf_counter()
info = client.put_file("bench/big", src)
t1 = time.perf_counter()
client.get_file(info, dest)  # verifies size and sha256 while streaming
t2 = time.perf_counter()
print(json.dumps({"put_s": t1 - t0, "get_s": t2 - t1, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "size": info.data["size"]}))
"""


def make_file(path: Path, mib: int) -> None:
    """Random (incompressible) content, written a chunk at a time."""
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(CHUNK))


def timed_cp(src: Path, dest: Path) -> float:
    """Seconds for the shell to do what a verified transfer does: copy, hash, and fsync the copy."""
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    subprocess.run(["sha256sum", str(dest)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync", str(dest)], check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--limit-mib", type=int, default=100, help="peak RSS bound in MiB (default 100)")
    parser.add_argument(
        "--min-speed", type=float, default=0.5, help="put and get must reach this fraction of cp's speed (default 0.5)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-local-memory-"))
    try:
        src = work / "src.bin"
        make_file(src, args.mib)
        cp_s = timed_cp(src, work / "cp.bin")  # the same bytes, the same disk, just now
        (work / "cp.bin").unlink()
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(work / "root"), str(src), str(work / "got.bin")],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            print("local_memory: FAIL (transfer failed)")
            return 1
        result = json.loads(proc.stdout)
        identical = (work / "got.bin").stat().st_size == src.stat().st_size == result["size"]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    peak_mib = result["maxrss_kib"] / 1024
    speeds = {op: cp_s / result[f"{op}_s"] for op in ("put", "get")}
    fast = all(speed >= args.min_speed for speed in speeds.values())
    ok = peak_mib < args.limit_mib and identical and fast
    print(f"local_memory: {args.mib} MiB put+get through the local backend")
    memory = "ok" if peak_mib < args.limit_mib else "OVER"
    print(f"  peak RSS of the transferring process: {peak_mib:.1f} MiB (bound {args.limit_mib} MiB): {memory}")
    for op, speed in speeds.items():
        verdict = "ok" if speed >= args.min_speed else "BELOW TARGET"
        print(f"  {op}: {speed:.2f}x the speed of cp + sha256sum + sync (target {args.min_speed:.2f}x): {verdict}")
    if not identical:
        print("  the copy differs in size from the source")
    print(f"local_memory: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
