"""Does a large put + get through ``sciserver-files`` stay in bounded memory, and how fast is it vs ``cp``?

Runs the SciServer contract server (``tests/sciserver_contract``) on a free loopback port, then a child
process that uploads and downloads one file through the adapter over HTTP; the child's peak RSS
(``ru_maxrss``) is the adapter path alone.  Throughput is printed as a ratio to ``cp`` of the same file in the
same run.  Exits non-zero if the peak RSS exceeds the bound or the bytes differ.

    python bench/sciserver_memory.py [--mib 1024] [--limit-mib 100]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
CHUNK = 1024 * 1024

CHILD = r"""
import json, resource, sys, time
from deepforge_adapters.storage import get_client

config, src, dest = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
client = get_client("sciserver-files", config)
t0 = time.perf_counter()
info = client.put_file("bench/big", src)
t1 = time.perf_counter()
client.get_file(info, dest)
t2 = time.perf_counter()
print(json.dumps({"put_s": t1 - t0, "get_s": t2 - t1, "size": info.data["size"],
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_file(path: Path, mib: int) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(CHUNK))


def start_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    ready = work / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.sciserver_contract", "--root", str(work / "srv"), "--ready-file", str(ready)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("contract server did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["url"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--limit-mib", type=int, default=100, help="peak RSS bound in MiB (default 100)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sciserver-memory-"))
    server = None
    try:
        src = work / "src.bin"
        make_file(src, args.mib)
        t0 = time.perf_counter()
        subprocess.run(["cp", str(src), str(work / "cp.bin")], check=True)
        cp_s = time.perf_counter() - t0
        (work / "cp.bin").unlink()
        server, url = start_server(work)
        password = secrets.token_urlsafe(16)
        requests.post(url + "_contract/users", json={"username": "bench", "password": password}, timeout=10)
        config = {
            "username": "bench",
            "password": password,
            "loginUrl": url + "login-portal/keystone/v3/tokens",
            "fileServiceUrl": url + "fileservice/api/",
        }
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(config), str(src), str(work / "got.bin")],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            print("sciserver_memory: FAIL (transfer failed)")
            return 1
        result = json.loads(proc.stdout)
        identical = result["size"] == src.stat().st_size and filecmp.cmp(src, work / "got.bin", shallow=False)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    peak_mib = result["maxrss_kib"] / 1024
    ok = peak_mib < args.limit_mib and identical
    print(f"sciserver_memory: {args.mib} MiB put+get through sciserver-files over loopback HTTP")
    print(f"  peak RSS of the transferring process: {peak_mib:.1f} MiB (bound {args.limit_mib} MiB)")
    print(f"  put: {cp_s / result['put_s']:.2f}x the speed of cp (HTTP upload + server-side move + stat)")
    print(f"  get: {cp_s / result['get_s']:.2f}x the speed of cp (HTTP download, length-checked, fsync)")
    print(f"  bytes identical after the round trip: {identical}")
    print(f"sciserver_memory: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
