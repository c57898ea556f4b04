"""Is the ``gme`` adapter as fast as curl against the same WebGME server, with bounded memory?

Starts a WebGME stack (the same launcher the tests use), writes a 1 GiB file, and in the same run
uploads/downloads it through the adapter (``GmeStorage.put_file`` / ``get_file``, in a child process so its
peak RSS is its own) and through ``curl`` (``-T`` streams the upload).  Figures (``TARGET`` lines): upload
adapter ÷ curl and download adapter ÷ (curl + fsync: the adapter verifies the sha1 of every byte and fsyncs
before its atomic rename), target >= 1.0 each; the adapter's peak RSS, target < 64 MiB.

    .venv/bin/python bench/gme_throughput.py [--mib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _targets import Targets, peak_rss_mib, start_timed_step  # noqa: E402 - bench/ is not a package: from beside this


def child(mode: str, host: str, path: str, ref: str) -> None:
    """One adapter transfer; prints {"seconds", "rss_mib", "ref"} as JSON."""
    from deepforge_adapters.storage import DataInfo, get_client

    gme = get_client("gme", {"host": host})
    start = time.perf_counter()
    if mode == "upload":
        ref = gme.put_file("bench/blob.bin", path).data
    else:
        gme.get_file(DataInfo("gme", ref), path)
    seconds = time.perf_counter() - start
    rss = peak_rss_mib()
    print(json.dumps({"seconds": seconds, "rss_mib": rss, "ref": ref}))


def adapter(mode: str, host: str, path: Path, ref: str = "-") -> dict[str, float | str]:
    out = subprocess.run([sys.executable, __file__, "--child", mode, host, str(path), ref],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def curl(mode: str, host: str, path: Path, ref: str = "") -> tuple[float, str]:
    if mode == "upload":
        argv = ["curl", "-sS", "-f", "-X", "POST", "-H", "Content-Type: application/octet-stream", "-T", str(path),
                f"{host}/rest/blob/createFile/curl.bin"]  # fmt: skip
    else:
        argv = ["curl", "-sS", "-f", "-o", str(path), f"{host}/rest/blob/download/{ref}/"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, check=True)
    seconds = time.perf_counter() - start
    return seconds, (next(iter(json.loads(out.stdout))) if mode == "upload" else ref)


def fsync_seconds(path: Path) -> float:
    """What curl leaves undone: flushing the file to disk (the adapter fsyncs before its atomic rename)."""
    start = time.perf_counter()
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return time.perf_counter() - start


def write_file(path: Path, size: int) -> str:
    block = os.urandom(MIB)
    sha1 = hashlib.sha1()
    with open(path, "wb") as f:
        for i in range(size // MIB):
            chunk = block[i % 251 :] + block[: i % 251]  # vary the blocks a little, cheaply
            f.write(chunk)
            sha1.update(chunk)
    return sha1.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds (default 3)")
    parser.add_argument("--rss-mib", type=float, default=64, help="peak RSS bound in MiB (default 64)")
    parser.add_argument("--child", nargs=4, metavar=("MODE", "HOST", "PATH", "REF"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    from deepforge_dev.stack import running_stack

    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="gme-bench-") as tmp, running_stack() as stack:
        src, dst = Path(tmp) / "src.bin", Path(tmp) / "dst.bin"
        sha1 = write_file(src, size)
        print(f"server {stack.url}, file {args.mib} MiB, sha1 {sha1}")
        results: dict[str, list[float]] = {"adapter upload": [], "curl upload": [], "adapter download": [],
                                           "curl download": [], "curl download+fsync": []}  # fmt: skip
        rss: list[float] = []
        for _ in range(args.rounds):
            # every transfer starts with no dirty pages left by the previous one, and freshly freed memory
            start_timed_step(tmp, size)
            up = adapter("upload", stack.url, src)
            results["adapter upload"].append(float(up["seconds"]))
            rss.append(float(up["rss_mib"]))
            start_timed_step(tmp, size)
            t, curl_ref = curl("upload", stack.url, src)
            results["curl upload"].append(t)
            start_timed_step(tmp, size)
            down = adapter("download", stack.url, dst, str(up["ref"]))
            results["adapter download"].append(float(down["seconds"]))
            rss.append(float(down["rss_mib"]))
            dst.unlink()
            start_timed_step(tmp, size)
            t, _ = curl("download", stack.url, dst, curl_ref)
            results["curl download"].append(t)
            results["curl download+fsync"].append(t + fsync_seconds(dst))
            dst.unlink()
        best = {k: min(v) for k, v in results.items()}
        for name, seconds in best.items():
            print(f"{name:18s} {seconds:7.2f} s  {args.mib / seconds:8.1f} MiB/s")
        print(f"download adapter/curl (no fsync): {best['curl download'] / best['adapter download']:.2f}")
    targets = Targets("gme_throughput")
    mib = args.mib
    targets.at_least(f"gme upload {mib} MiB, adapter / curl", best["curl upload"] / best["adapter upload"], 1.0)
    ratio = best["curl download+fsync"] / best["adapter download"]
    targets.at_least(f"gme download {mib} MiB, adapter / (curl + fsync)", ratio, 1.0)
    targets.below(f"gme {mib} MiB transfers, adapter peak RSS", max(rss), args.rss_mib)
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
