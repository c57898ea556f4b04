"""Does ``deepforge-worker`` stay in bounded memory while a job floods its console with 1 GiB of output?

One WebGME stack and two fresh workers in the same run:

1. *baseline*: a worker runs a job that prints one line; its peak RSS is what the daemon needs anyway;
2. *flood*: a worker runs a job writing 1 GiB to stdout as fast as it can (1 KiB lines).  The live-output
   queue holds at most ~1 MiB of text: what the server cannot take in time is left out of the live stream
   (with a ``[... N bytes of output not streamed; see job_stdout.txt]`` marker), while ``job_stdout.txt``,
   archived as the job's ``stdout`` result, keeps every byte.

Peak RSS is the worker process's own ``VmHWM`` (the job's processes and the server never count), read
after its job finished.  Printed beside its target; the ratio flood / baseline shows what the flood added.
The archived stdout is streamed back and its sha256 checked; the live output plus the markers' byte counts
must add up to the total.  Exits non-zero if the bound is exceeded or a check fails.

    python bench/worker_output_memory.py [--mib 1024] [--limit-mib 100]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient, is_finished
from deepforge_dev.stack import running_stack

MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes of output not streamed; see job_stdout\.txt\]\n")
LINE = 1024


def flood_code(lines: int) -> str:
    return (
        "import sys\nout = sys.stdout.buffer\n"
        f"for i in range({lines}):\n    out.write(b'%010d' % i + b'y' * {LINE - 11} + b'\\n')\n"
    )


def expected_sha256(lines: int) -> str:
    digest = hashlib.sha256()
    for i in range(lines):
        digest.update(b"%010d" % i + b"y" * (LINE - 11) + b"\n")
    return digest.hexdigest()


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)
    return value


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def run_one(url: str, code: str, base: Path) -> tuple[float, dict[str, Any], float]:
    """A fresh worker runs one job; returns (worker peak RSS MiB, final JobInfo, seconds created->done)."""
    base.mkdir()
    argv = [sys.executable, "-m", "deepforge_worker.cli", "start", "--host", url,
            "--work-dir", str(base / "jobs"), "--cache-dir", str(base / "cache")]  # fmt: skip
    with open(base / "worker.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    blob, executor = BlobClient(url), ExecutorClient(url)
    try:
        client_id = f"{socket.gethostname()}_{proc.pid}"
        wait(lambda: client_id in executor.get_workers(), 60, "the worker to poll")
        config = {"cmd": "python3", "args": ["-c", code], "outputInterval": 100,
                  "resultArtifacts": [{"name": "stdout", "resultPatterns": ["job_stdout.txt"]}]}  # fmt: skip
        entries = {}
        for name, data in (("executor_config.json", json.dumps(config)), ("nonce", uuid.uuid4().hex)):
            entries[name], _ = blob.create_file(name, io.BytesIO(data.encode()))
        job_hash = blob.create_artifact("bench", entries)
        t0 = time.perf_counter()
        executor.create_job(job_hash)
        info = wait(lambda: (i := executor.get_info(job_hash)) and is_finished(i.get("status")) and i, 1800, "the job")
        elapsed = time.perf_counter() - t0
        return peak_rss_mib(proc.pid), dict(info, hash=job_hash), elapsed
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="output flood in MiB (default 1024)")
    parser.add_argument("--limit-mib", type=int, default=100, help="worker peak RSS bound in MiB (default 100)")
    args = parser.parse_args()
    lines = args.mib * 1024 * 1024 // LINE
    with (
        tempfile.TemporaryDirectory(prefix="bench-worker-output-") as tmp,
        running_stack(worker_refresh_ms=250) as stack,
    ):
        base_rss, base_info, _ = run_one(stack.url, "print('one line')", Path(tmp) / "baseline")
        flood_rss, info, seconds = run_one(stack.url, flood_code(lines), Path(tmp) / "flood")
        blob, executor = BlobClient(stack.url), ExecutorClient(stack.url)
        digest, size = hashlib.sha256(), 0
        with blob.open(info["resultHashes"]["stdout"], subpath="job_stdout.txt") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        live = "".join(chunk["output"] for chunk in executor.get_output(info["hash"]))
    total = lines * LINE
    dropped = sum(int(n) for n in MARKER.findall(live))
    streamed = len(MARKER.sub("", live))
    archived_ok = size == total and digest.hexdigest() == expected_sha256(lines)
    accounted_ok = streamed + dropped == total
    jobs_ok = base_info["status"] == "SUCCESS" and info["status"] == "SUCCESS"
    ok = flood_rss < args.limit_mib and archived_ok and accounted_ok and jobs_ok
    print(f"worker_output_memory: a job prints {args.mib} MiB to stdout through a real worker and WebGME server")
    print(f"  worker peak RSS, flood job:    {flood_rss:.1f} MiB (target < {args.limit_mib} MiB)")
    print(f"  worker peak RSS, one-line job: {base_rss:.1f} MiB (baseline, same run)")
    ratio, ratio_target = flood_rss / base_rss, args.limit_mib / base_rss
    print(f"  ratio flood / baseline: {ratio:.2f} (target < {ratio_target:.2f}, the bound over the baseline)")
    print(f"  archived job_stdout.txt: {size} of {total} bytes, sha256 {'ok' if archived_ok else 'MISMATCH'}")
    print(
        f"  live output: {streamed} bytes streamed + {dropped} left out (markers) = {streamed + dropped}"
        f" ({'ok' if accounted_ok else 'MISMATCH'}); job took {seconds:.1f} s"
    )
    print(f"worker_output_memory: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
