"""``sciserver-files`` put + get of 1 GiB against curl on the same server, in bounded memory?

Runs the SciServer contract server (``tests/sciserver_contract``) on a free loopback port, then a child
process that uploads and downloads one file through the adapter over HTTP; the child's peak RSS
(``VmHWM``: ``_targets.peak_rss_mib``) is the adapter path alone: target < 64 MiB.  The baseline is ``curl``
doing the same HTTP calls with the same token (``PUT``/``GET`` of the file service's ``file`` API), in the same
run, best of ``--rounds``: put and get adapter ÷ curl, target >= 0.9 each.  The adapter does more (upload to a temp
name and move it into place, a stat; the download is length-checked, fsynced and renamed).

    python bench/sciserver_memory.py [--mib 1024] [--rounds 3]
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

sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from _targets import IMPORT_PEAK, Targets, start_timed_step  # noqa: E402 - bench/ is not a package: from beside this

CHILD = (
    IMPORT_PEAK
    + r"""
import json, os, sys, time
from _targets import start_timed_step
from deepforge_adapters.storage import get_client

config, src, dest = json.loads(os.environ["SCISERVER_BENCH_CONFIG"]), sys.argv[1], sys.argv[2]
client = get_client("sciserver-files", config)
client.volume  # the whoami request is setup, not transfer
size = os.path.getsize(src)
start_timed_step(os.path.dirname(dest), size)  # the server writes a new file too
t0 = time.perf_counter()
info = client.put_file("bench/big", src)
t1 = time.perf_counter()
start_timed_step(os.path.dirname(dest), size)
t1b = time.perf_counter()
client.get_file(info, dest)
t2 = time.perf_counter()
print(json.dumps({"put_s": t1 - t0, "get_s": t2 - t1b, "size": info.data["size"],
                  "maxrss_kib": peak_rss_mib() * 1024}))
"""
)


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


def curl_transfers(config: dict[str, str], src: Path, dest: Path) -> tuple[float, float]:
    """Seconds for curl to PUT ``src`` and GET it back into ``dest`` through the file API, same token."""
    from deepforge_adapters.storage import get_client

    client = get_client("sciserver-files", config)
    client._ensure_volume()  # type: ignore[attr-defined]  # curl's PUT needs the volume the adapter creates
    url = client.url("file", "Storage", client.volume, "bench/curl.bin")  # type: ignore[attr-defined]
    header_file = dest.with_name("curl-headers.txt")  # the token from a file: never on a command line
    header_file.touch(mode=0o600)
    header_file.write_text(f"X-Auth-Token: {client.session.token()}\n")  # type: ignore[attr-defined]
    header = ["-H", f"@{header_file}"]
    start_timed_step(dest.parent, src.stat().st_size)  # the server writes a new file too
    t0 = time.perf_counter()
    put = subprocess.run(  # quiet=true: overwrite, as the adapter's upload does
        ["curl", "-sS", "-T", str(src), *header, "-w", "\n%{http_code}", url + "?quiet=true"],
        capture_output=True,
        text=True,
        check=False,
    )
    put_s = time.perf_counter() - t0
    if put.returncode != 0 or not put.stdout.endswith("200"):
        raise RuntimeError(f"curl upload failed: {put.stdout[-500:]} {put.stderr[-500:]}")
    start_timed_step(dest.parent, src.stat().st_size)
    t0 = time.perf_counter()
    subprocess.run(["curl", "-sS", "-f", "-o", str(dest), *header, url], check=True)
    get_s = time.perf_counter() - t0
    dest.unlink()
    return put_s, get_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="file size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many rounds (default 3)")
    parser.add_argument("--rss-mib", type=float, default=64, help="peak RSS bound in MiB (default 64)")
    parser.add_argument("--min-ratio", type=float, default=0.9, help="target for adapter / curl (default 0.9)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sciserver-memory-"))
    server = None
    runs: list[dict[str, float]] = []
    curl_put: list[float] = []
    curl_get: list[float] = []
    identical = True
    try:
        src = work / "src.bin"
        make_file(src, args.mib)
        server, url = start_server(work)
        password = secrets.token_urlsafe(16)
        requests.post(url + "_contract/users", json={"username": "bench", "password": password}, timeout=10)
        config = {
            "username": "bench",
            "password": password,
            "loginUrl": url + "login-portal/keystone/v3/tokens",
            "fileServiceUrl": url + "fileservice/api/",
        }
        for _ in range(args.rounds):
            put_s, get_s = curl_transfers(config, src, work / "curl.bin")
            curl_put.append(put_s)
            curl_get.append(get_s)
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, str(src), str(work / "got.bin")],
                capture_output=True,
                text=True,
                check=False,
                env={**os.environ, "SCISERVER_BENCH_CONFIG": json.dumps(config)},  # the password not on argv
            )
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                print("sciserver_memory: FAIL (transfer failed)")
                return 1
            result = json.loads(proc.stdout)
            identical &= result["size"] == src.stat().st_size and filecmp.cmp(src, work / "got.bin", shallow=False)
            (work / "got.bin").unlink()
            runs.append(result)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)

    mib = args.mib
    put_s, get_s = min(r["put_s"] for r in runs), min(r["get_s"] for r in runs)
    print(f"sciserver_memory: {mib} MiB put+get through sciserver-files over loopback HTTP, best of {args.rounds}")
    print(f"  curl put {min(curl_put):.2f} s, get {min(curl_get):.2f} s; adapter put {put_s:.2f} s, get {get_s:.2f} s")
    targets = Targets("sciserver_memory")
    targets.at_least(f"sciserver-files put {mib} MiB, adapter / curl", min(curl_put) / put_s, args.min_ratio)
    targets.at_least(f"sciserver-files get {mib} MiB, adapter / curl", min(curl_get) / get_s, args.min_ratio)
    targets.below(
        f"sciserver-files {mib} MiB put+get, peak RSS", max(r["maxrss_kib"] for r in runs) / 1024, args.rss_mib
    )
    targets.check("bytes identical after the round trip", identical)
    return targets.finish()


if __name__ == "__main__":
    sys.exit(main())
