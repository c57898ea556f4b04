"""How does the cost of running a pipeline grow with its number of operations?

Generated pipelines of N trivial operations, as a **chain** (``Source -> Step_1 -> ... -> Step_N-1``) and as a
wide **fan-out** (``Source`` feeding N-1 ``Step``s), are imported with ImportPipeline and run with the real
ExecutePipeline plugin on a real WebGME server, with ``local`` storage and with ``local`` compute (2 processes)
or ``gme`` compute (2 ``deepforge-worker``s).  Per case:

* wall time: the ExecutePipeline request until the plugin's result is FINISHED;
* the operations' own run time: the union of the intervals during which some operation's ``execute`` ran
  (each operation appends its start and end time to a file; for a chain that is their sum);
* overhead per operation: (wall time - the operations' own run time) / N;
* model commits per job: the commits the run added to the project's history / N.

Targets: overhead per operation <= 0.25 s at 500 operations, and the overhead at 500 operations <= 5.5x the
one at 100 (linear growth is 5x: no quadratic step).  Sizes without a target print their figures only.

    python bench/scale_pipelines.py [--ops 10,100,500] [--shapes chain,fanout] [--computes local,gme]
                                    [--refresh-ms 1000] [--profile DIR]

``--profile DIR`` runs the plugin process under cProfile and writes one ``.prof`` per run into DIR
(``python -m pstats DIR/<file>``), with the top functions by cumulative time printed after each case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pstats
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
from typing import Any

from deepforge_adapters.http import make_session
from deepforge_adapters.policy import POLICY_ENV
from deepforge_adapters.secrets import generate_key
from deepforge_adapters.webgme.executor import ExecutorClient
from deepforge_dev.stack import WebGMEStack, free_port, running_stack

OVERHEAD_TARGET = 0.25  # seconds per operation, at TARGET_OPS
TARGET_OPS = 500
GROWTH_BASE = 100
GROWTH_TARGET = 5.5  # overhead(TARGET_OPS) / overhead(GROWTH_BASE)

SOURCE = """
import time


class Source:
    def __init__(self, log=""):
        self.log = log

    def execute(self):
        began = time.time()
        x = 0
        with open(self.log, "a") as fh:
            fh.write(f"Source {began!r} {time.time()!r}\\n")
        return x
"""

STEP = """
import time


class {name}:
    def __init__(self, log=""):
        self.log = log

    def execute(self, x):
        began = time.time()
        y = x + 1
        with open(self.log, "a") as fh:
            fh.write(f"{name} {{began!r}} {{time.time()!r}}\\n")
        return y
"""


def pipeline_spec(shape: str, ops: int, log: Path) -> dict[str, Any]:
    """``ops`` operations in total: one Source and ``ops - 1`` Steps, chained or all fed by the Source."""
    attributes = {"log": str(log)}
    operations: list[dict[str, Any]] = [{"name": "Source", "code": SOURCE, "outputs": ["x"], "attributes": attributes}]
    connections = []
    for i in range(1, ops):
        operations.append(
            {
                "name": f"Step_{i}",
                "code": STEP.format(name=f"Step_{i}"),
                "inputs": ["x"],
                "outputs": ["y"],
                "attributes": attributes,
            }
        )
        upstream = "Source.x" if shape == "fanout" or i == 1 else f"Step_{i - 1}.y"
        connections.append([upstream, f"Step_{i}.x"])
    return {"name": f"{shape}_{ops}", "operations": operations, "connections": connections}


def busy_time(log: Path) -> tuple[float, set[str], int]:
    """The union of the logged ``execute`` intervals (seconds), the operations that ran, and how many runs
    there were (more than operations: the executor gave a job to a second worker)."""
    runs = [line.split() for line in log.read_text().splitlines() if line.strip()]
    spans = sorted((float(began), float(ended)) for _, began, ended in runs)
    total, end = 0.0, float("-inf")
    for began, ended in spans:
        if ended <= end:
            continue
        total += ended - max(began, end)
        end = ended
    return total, {name for name, _, _ in runs}, len(runs)


class Project:
    """A project on the server seen through its REST API: run plugins, count commits."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.http = make_session(timeout=600)
        self.base = f"{url}/api/projects/guest/{name}"

    def create(self) -> Project:
        r = self.http.put(self.base, json={"type": "file", "seedName": "pipeline"})
        r.raise_for_status()
        return self

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            self.http.delete(self.base)

    def commits(self) -> int:
        r = self.http.get(f"{self.base}/commits", params={"n": 1_000_000})
        r.raise_for_status()
        return len(r.json())

    def _body(self, active: str, config: dict[str, Any]) -> dict[str, Any]:
        return {"projectId": f"guest+{self.name}", "branchName": "master", "activeNode": active,
                "activeSelection": [], "namespace": "", "pluginConfig": config}  # fmt: skip

    def run(self, plugin: str, active: str, config: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Start the plugin and wait for its result (no HTTP request stays open for the whole run)."""
        r = self.http.post(f"{self.url}/api/plugins/{plugin}/execute", json=self._body(active, config))
        r.raise_for_status()
        result_id = r.json()["resultId"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.http.get(f"{self.url}/api/plugins/{plugin}/results/{result_id}").json()
            if body.get("status") in ("FINISHED", "ERROR"):
                result: dict[str, Any] = body.get("result") or body
                return result
            time.sleep(0.1)
        raise SystemExit(f"{plugin} did not finish within {timeout:.0f} s")


@dataclass
class Case:
    shape: str
    compute: str
    ops: int
    wall: float
    busy: float
    commits: int
    requests: int | None = None  # model requests of the plugin run (with --profile)
    reruns: int = 0  # operations that ran more than once

    @property
    def overhead(self) -> float:
        return self.wall - self.busy

    @property
    def per_op(self) -> float:
        return self.overhead / self.ops


def run_case(url: str, base: Path, shape: str, compute: str, ops: int, timeout: float, profile: Path | None) -> Case:
    work = Path(tempfile.mkdtemp(prefix=f"{shape}-{compute}-{ops}-", dir=base))
    log = work / "ops.log"
    log.touch()
    project = Project(url, f"scale_{shape}_{compute}_{ops}_{uuid.uuid4().hex[:6]}").create()
    try:
        imported = project.run("ImportPipeline", "", {"pipeline": json.dumps(pipeline_spec(shape, ops, log))}, timeout)
        if not imported.get("success"):
            raise SystemExit(f"ImportPipeline failed: {imported.get('error')}")
        pipe = str(imported["messages"][0]["message"])
        dialog: dict[str, Any] = {"name": "run", "storage": "local", "storage.local.root": str(work / "store")}
        if compute == "local":
            dialog.update({"compute": "local", "compute.local.workDir": str(work / "compute"),
                           "compute.local.processes": 2})  # fmt: skip
        else:
            dialog["compute"] = "gme"
        before = project.commits()
        started = time.monotonic()
        result = project.run("ExecutePipeline", pipe, dialog, timeout)
        wall = time.monotonic() - started
        if not result.get("success"):
            raise SystemExit(f"ExecutePipeline {shape} {compute} {ops} failed: {result.get('error')}")
        commits = project.commits() - before
        busy, ran, runs = busy_time(log)
        if len(ran) != ops:
            raise SystemExit(f"{ops} operations in the pipeline, {len(ran)} logged a run")
        requests = report_profile(profile, f"{shape}-{compute}-{ops}") if profile is not None else None
        return Case(shape, compute, ops, wall, busy, commits, requests, runs - ops)
    finally:
        project.delete()


def report_profile(profile: Path, name: str) -> int:
    """Rename the plugin run's profile after the case, print its top functions; the number of requests the
    plugin sent to the model (webgme-bindings' ``send_request``: one ZeroMQ round trip each)."""
    dumps = sorted(profile.glob("plugin-*.prof"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise SystemExit(f"no profile was written for {name}")
    target = profile / f"{name}.prof"
    dumps[-1].rename(target)
    for extra in dumps[:-1]:
        extra.unlink()
    out = io.StringIO()
    stats = pstats.Stats(str(target), stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    print(f"  profile {target}:")
    print("\n".join("    " + line for line in out.getvalue().splitlines() if line.strip()))
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(v[1] for (file, _, func), v in raw.items() if func == "send_request" and "webgme_bindings" in file)


def profiling_python(profile: Path) -> Path:
    """An interpreter for the server to start plugins with: ours under cProfile, one dump per run."""
    profile.mkdir(parents=True, exist_ok=True)
    script = profile / "python-cprofile"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m cProfile -o "{profile}/plugin-$$.prof" "$@"\n')
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def workers(url: str, base: Path, count: int) -> Iterator[None]:
    """``count`` deepforge-workers (one slot each) polling ``url``; killed with their jobs on exit."""
    procs = []
    executor = ExecutorClient(url)
    try:
        for i in range(count):
            home = base / f"worker-{i}"
            home.mkdir()
            argv = [sys.executable, "-m", "deepforge_worker.cli", "start", "--host", url,
                    "--work-dir", str(home / "jobs"), "--cache-dir", str(home / "cache")]  # fmt: skip
            with open(home / "worker.log", "wb") as out:
                procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        ids = {f"{socket.gethostname()}_{p.pid}" for p in procs}
        deadline = time.monotonic() + 60
        while not ids <= set(executor.get_workers()):
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not poll within 60 s")
            time.sleep(0.1)
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def policy_text(base: Path) -> str:
    return (
        '[storage]\nallow = ["local", "gme"]\n\n'
        f"[storage.local]\nroot = {{ under = [{json.dumps(str(base))}] }}\n\n"
        '[compute]\nallow = ["local", "gme"]\n\n'
        f"[compute.local]\nworkDir = {{ under = [{json.dumps(str(base))}] }}\n"
    )


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", default="10,100,500", help="pipeline sizes, comma-separated")
    parser.add_argument("--shapes", default="chain,fanout", help="chain and/or fanout")
    parser.add_argument("--computes", default="local,gme", help="local and/or gme")
    parser.add_argument("--refresh-ms", type=int, default=1000, help="executor workerRefreshInterval")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per plugin run")
    parser.add_argument("--profile", type=Path, help="run the plugin under cProfile, dumps in this dir")
    parser.add_argument("--target-ops", type=int, default=TARGET_OPS, help="the size the per-op target is for")
    parser.add_argument("--growth-base", type=int, default=GROWTH_BASE, help="the size growth is measured from")
    args = parser.parse_args()
    sizes = [int(n) for n in args.ops.split(",")]
    shapes = args.shapes.split(",")
    computes = args.computes.split(",")
    if min(sizes) < 2 or not set(shapes) <= {"chain", "fanout"} or not set(computes) <= {"local", "gme"}:
        parser.error("--ops >= 2 each, --shapes from chain,fanout, --computes from local,gme")

    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        base = Path(tmp)
        (base / "policy.toml").write_text(policy_text(base))
        env = {"DEEPFORGE_SECRET_KEY": os.environ.get("DEEPFORGE_SECRET_KEY") or generate_key(),
               "DEEPFORGE_PLUGIN_ZMQ_PORT": str(free_port()), POLICY_ENV: str(base / "policy.toml"),
               # a 500-operation ImportPipeline request is larger than body-parser's default 100 kB
               "WEBGME_server_bodyParser_json_limit": "16mb"}  # fmt: skip
        profile = args.profile.resolve() if args.profile else None
        if profile is not None:
            env["WEBGME_PYTHON"] = str(profiling_python(profile))
        stack: WebGMEStack
        with running_stack(worker_refresh_ms=args.refresh_ms, env=env) as stack:
            for compute in computes:
                with workers(stack.url, base, 2) if compute == "gme" else contextlib.nullcontext():
                    for shape in shapes:
                        for ops in sizes:
                            case = run_case(stack.url, base, shape, compute, ops, args.timeout, profile)
                            cases.append(case)
                            print(
                                f"{shape:6s} {compute:5s} {ops:4d} ops: wall {case.wall:8.2f} s, operations "
                                f"{case.busy:6.2f} s, overhead/op {case.per_op:6.3f} s, commits/job "
                                f"{case.commits / ops:5.2f}",
                                flush=True,
                            )

    failed = False
    print(f"scale: pipelines, executor refresh {args.refresh_ms} ms, load {os.getloadavg()[0]:.2f}")
    for case in cases:
        line = f"  {case.shape:6s} {case.compute:5s} {case.ops:4d} ops  overhead/op {case.per_op:6.3f} s"
        if case.ops == args.target_ops:
            mark = verdict(case.per_op, OVERHEAD_TARGET)
            failed |= mark == "FAIL"
            line += f"  (target <= {OVERHEAD_TARGET} s) {mark}"
        line += f"   commits/job {case.commits / case.ops:.2f}"
        if case.requests is not None:
            line += f"   model requests/job {case.requests / case.ops:.1f}"
        if case.reruns:
            line += f"   ({case.reruns} operation runs repeated: the executor re-queued a job)"
        print(line)
    by_key = {(c.shape, c.compute, c.ops): c for c in cases}
    for shape in shapes:
        for compute in computes:
            big, small = by_key.get((shape, compute, args.target_ops)), by_key.get((shape, compute, args.growth_base))
            if big and small:
                growth = big.overhead / small.overhead
                mark = verdict(growth, GROWTH_TARGET)
                failed |= mark == "FAIL"
                print(
                    f"  {shape:6s} {compute:5s} overhead {args.target_ops} ops / {args.growth_base} ops = {growth:.2f}"
                    f"  (target <= {GROWTH_TARGET}) {mark}"
                )
    print(f"scale_pipelines: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
