"""How many jobs per second does a fleet of our workers run, against the same fleet of Node workers?

One WebGME stack per executor refresh setting (the server's default, 5000 ms, and 1000 ms).  For each fleet,
4 ``deepforge-worker``s with 2 slots each, then 4 Node ``webgme-executor-worker`` 3.1.1 (their default: one job
at a time), ``--jobs`` trivial jobs (``python3 -c`` that appends its start time to a file) are created as fast
as the server takes them, their bundles uploaded beforehand.  Per fleet:

* jobs per second: jobs / (first job created -> last job seen finished by a client listing the jobs every
  0.25 s);
* dispatch latency: job created -> the job's process started (the time it wrote), p50 and p95.

Target: jobs per second ours / Node >= 1.5 at each refresh.

    python bench/scale_workers.py [--jobs 1000] [--refresh-ms 5000,1000] [--workers 4] [--slots 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient, is_finished
from deepforge_dev.stack import running_stack, webgme_dir

TARGET = 1.5  # jobs/s ours / Node
DEFAULT_REFRESH_MS = 5000  # webgme-config/config/config.default.js

#: The job: append "<nonce> <its start time>" to the file named in ``starts``.
CODE = (
    "import time; t = time.time(); open(open('starts').read(), 'a').write(open('nonce').read() + ' ' + repr(t) + '\\n')"
)


@dataclass
class Fleet:
    kind: str
    refresh_ms: int
    jobs: int
    seconds: float
    latencies: list[float]
    #: job runs beyond one per job: the server re-queued a job whose worker missed 5 refresh periods
    reruns: int = 0

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def upload_jobs(blob: BlobClient, count: int, starts: Path) -> dict[str, str]:
    """``count`` job bundles as blob artifacts (not yet jobs): ``{bundle hash: nonce}``."""
    config = json.dumps({"cmd": "python3", "args": ["-c", CODE],
                         "resultArtifacts": [{"name": "stdout", "resultPatterns": ["job_stdout.txt"]}]})  # fmt: skip
    shared = {}
    for name, data in (("executor_config.json", config), ("starts", str(starts))):
        shared[name], _ = blob.create_file(name, io.BytesIO(data.encode()))
    bundles = {}
    for _ in range(count):
        nonce = uuid.uuid4().hex
        entry, _ = blob.create_file("nonce", io.BytesIO(nonce.encode()))
        bundles[blob.create_artifact("bench", {**shared, "nonce": entry})] = nonce
    return bundles


@contextlib.contextmanager
def fleet(kind: str, url: str, base: Path, count: int, slots: int) -> Iterator[set[str]]:
    """``count`` workers of ``kind`` polling ``url``; yields their client ids; killed with their jobs on exit."""
    procs = []
    package = webgme_dir() / "node_modules" / "webgme-executor-worker"
    try:
        for i in range(count):
            home = base / f"{kind}-{i}"
            home.mkdir()
            if kind == "ours":
                argv = [sys.executable, "-m", "deepforge_worker.cli", "start", "--host", url, "--processes",
                        str(slots), "--work-dir", str(home / "jobs"), "--cache-dir", str(home / "cache")]  # fmt: skip
            else:
                (home / "nofile.js").write_text("delete globalThis.File;\n")  # Node >= 20 defines File
                (home / "config.json").write_text(json.dumps({url: {}}))
                argv = ["node", "-r", str(home / "nofile.js"), str(package / "node_worker.js"),
                        str(home / "config.json"), str(home / "executor-temp")]  # fmt: skip
            with open(home / "worker.log", "wb") as out:
                procs.append(
                    subprocess.Popen(argv, cwd=home, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                )
        ids = {f"{socket.gethostname()}_{p.pid}" for p in procs}
        executor = ExecutorClient(url)
        deadline = time.monotonic() + 120
        while not ids <= set(executor.get_workers()):
            if time.monotonic() > deadline:
                raise SystemExit(f"the {kind} workers did not poll within 120 s")
            time.sleep(0.1)
        yield ids
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def run_fleet(kind: str, url: str, base: Path, jobs: int, workers: int, slots: int, refresh_ms: int) -> Fleet:
    blob, executor = BlobClient(url), ExecutorClient(url)
    work = Path(tempfile.mkdtemp(prefix=f"{kind}-{refresh_ms}-", dir=base))
    starts = work / "starts.log"
    starts.touch()
    bundles = upload_jobs(blob, jobs, starts)
    with fleet(kind, url, work, workers, slots) as ids:
        created: dict[str, float] = {}
        first = time.time()
        for bundle, nonce in bundles.items():
            executor.create_job(bundle)
            created[nonce] = time.time()
        pending = set(bundles)
        deadline = time.monotonic() + max(600.0, jobs * 4 * refresh_ms / 1000 / workers)
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{kind}: {len(pending)} of {jobs} jobs unfinished at the deadline")
            listing = executor.list_jobs()
            done = time.time()
            for job_hash in [h for h in pending if is_finished(listing.get(h, {}).get("status"))]:
                info = listing[job_hash]
                if info["status"] != "SUCCESS" or info.get("worker") not in ids:
                    raise SystemExit(f"{kind}: job {job_hash} ended {info['status']} on {info.get('worker')}")
                pending.discard(job_hash)
            time.sleep(0.25)
        seconds = done - first
    began: dict[str, float] = {}
    runs = 0
    for line in starts.read_text().splitlines():
        if line.strip():
            nonce, at = line.split()
            began[nonce] = min(float(at), began.get(nonce, float("inf")))  # the first run, if it was re-queued
            runs += 1
    if len(began) != jobs:
        raise SystemExit(f"{kind}: {jobs} jobs ran, {len(began)} wrote their start time")
    return Fleet(kind, refresh_ms, jobs, seconds, [began[n] - created[n] for n in created], runs - jobs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs per fleet")
    parser.add_argument("--refresh-ms", default=f"{DEFAULT_REFRESH_MS},1000", help="executor refresh settings")
    parser.add_argument("--workers", type=int, default=4, help="workers per fleet")
    parser.add_argument("--slots", type=int, default=2, help="slots per deepforge-worker")
    args = parser.parse_args()
    results: list[tuple[Fleet, Fleet]] = []
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        for refresh_ms in [int(r) for r in args.refresh_ms.split(",")]:
            with running_stack(worker_refresh_ms=refresh_ms) as stack:
                pair = tuple(
                    run_fleet(kind, stack.url, Path(tmp), args.jobs, args.workers, args.slots, refresh_ms)
                    for kind in ("node", "ours")
                )
            results.append(pair)  # type: ignore[arg-type]
            for f in pair:
                print(
                    f"{f.kind:4s} refresh {refresh_ms:5d} ms: {f.jobs} jobs in {f.seconds:7.1f} s = {f.rate:6.2f} "
                    f"jobs/s, dispatch p50 {f.percentile(0.5):6.2f} s p95 {f.percentile(0.95):6.2f} s"
                    + (f" ({f.reruns} runs repeated: jobs re-queued by the server)" if f.reruns else ""),
                    flush=True,
                )
    failed = False
    print(
        f"scale: worker fleet, {args.workers} deepforge-workers x {args.slots} slots vs {args.workers} Node workers, "
        f"{args.jobs} jobs, load {os.getloadavg()[0]:.2f}"
    )
    for node, ours in results:
        ratio = ours.rate / node.rate
        mark = "PASS" if ratio >= TARGET else "FAIL"
        failed |= mark == "FAIL"
        print(
            f"  refresh {ours.refresh_ms} ms: jobs/s ours {ours.rate:.2f} / Node {node.rate:.2f} = {ratio:.2f}"
            f"  (target >= {TARGET}) {mark}"
        )
        for f in (node, ours):
            print(f"    dispatch latency {f.kind:4s} p50 {f.percentile(0.5):6.2f} s  p95 {f.percentile(0.95):6.2f} s")
    print(f"scale_workers: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
