"""The soak run itself: start the system, run the workload, inject the faults, audit, report.

Reads top to bottom in :func:`soak`: the seed is printed first (``--seed`` replays it), then the stack starts
(:mod:`.stack`), the pipelines are imported (:mod:`.workload`), one driver thread per pipeline runs it with
ExecutePipeline (at most ``parallel`` at once) and resumes it when its plugin process dies, while the main
thread injects the faults of the schedule (:mod:`.faults`) one after another and measures how long the
system takes to recover from each.  Then everything is stopped, the model and the storage are audited
(:func:`.audit.audit`) and the report is printed and written (:mod:`.report`).

Every loop is bounded in count and time; every process is stopped by pid in ``finally`` (and ``atexit``),
Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from deepforge_adapters.http import make_session

from . import faults as fault_kinds
from .audit import RunRecord, audit
from .faults import Fault, marked_processes, pick, plugin_processes, schedule
from .report import SoakReport, percentiles
from .stack import MARKER_ENV, SoakStack, StackConfig
from .workload import RunSpec, WorkloadOptions, attempts, pipeline_spec, plan, read_log

log = logging.getLogger(__name__)

FINISHED = ("success", "failed", "fail", "canceled")
#: S3 attempts per request in the run's storage config: the adapter's default (5) gives up after a few seconds,
#: 10 after ~20 s, shorter than a SeaweedFS restart on a loaded machine (docs/reliability.md, "Findings").
S3_ATTEMPTS = 20
#: ImportPipeline runs at once while the pipelines are built (their commits to the branch are retried on a fork).
IMPORTS_AT_ONCE = 3


@dataclass(frozen=True)
class SoakOptions:
    seed: int
    jobs: int = 1000
    faults: int = 50
    workers: int = 4
    slots: int = 2
    parallel: int = 4  # ExecutePipeline runs at once
    duration: float = 4 * 3600.0  # the cap on the whole run (seconds)
    run_dir: Path | None = None
    workload: WorkloadOptions = field(default_factory=WorkloadOptions)
    fault_gap: tuple[float, float] = (2.0, 8.0)
    stop_seconds: float = 15.0  # SIGSTOP length: past the server's timeout (5 x refresh, checked every 10 s)
    recovery_timeout: float = 120.0
    max_plugin_runs: int = 12  # per Execution: the first run and its resumes


class Project:
    """The soak project, through the server's REST API (the server itself, never a proxy)."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.http = make_session(retries=0, timeout=(5, 60))
        self.base = f"{url}/api/projects/guest/{name}"

    def create(self) -> Project:
        r = self.http.put(self.base, json={"type": "file", "seedName": "pipeline"})
        r.raise_for_status()
        return self

    def start(self, plugin: str, active: str, config: dict[str, Any]) -> str:
        body = {"projectId": f"guest+{self.name}", "branchName": "master", "activeNode": active,
                "activeSelection": [], "namespace": "", "pluginConfig": config}  # fmt: skip
        r = self.http.post(f"{self.url}/api/plugins/{plugin}/execute", json=body)
        r.raise_for_status()
        return str(r.json()["resultId"])

    def result(self, plugin: str, result_id: str) -> dict[str, Any] | None:
        """The plugin's result once it ended; ``{"gone": True}`` when the server no longer knows it."""
        r = self.http.get(f"{self.url}/api/plugins/{plugin}/results/{result_id}")
        if r.status_code == 404:
            return {"gone": True}
        r.raise_for_status()
        body = r.json()
        if body.get("status") in ("FINISHED", "ERROR"):
            return dict(body.get("result") or body)
        return None

    def node(self, path: str) -> dict[str, Any]:
        r = self.http.get(f"{self.base}/branches/master/tree{path}")
        r.raise_for_status()
        return dict(r.json())

    @staticmethod
    def children(raw: dict[str, Any]) -> list[str]:
        return [
            k for k, v in raw.items() if not k.startswith("_") and k not in ("atr", "reg", "ovr") and isinstance(v, str)
        ]


class Driver:
    """Runs one pipeline's Execution to its end: ExecutePipeline, then a resume each time its plugin dies."""

    def __init__(self, soak: Soak, run: RunSpec, pipeline: str) -> None:
        self.soak, self.run, self.pipeline = soak, run, pipeline
        self.execution: str | None = None
        self.action = "none"
        self.plugin_runs = 0
        self.resumes = 0
        self.outcome: str | None = None
        self.result_id: str | None = None
        self.problems: list[str] = []
        self.lock = threading.Lock()

    @property
    def active(self) -> bool:
        return self.outcome is None and self.plugin_runs > 0

    def dialog(self) -> dict[str, Any]:
        return self.soak.dialog(self.run)

    def __call__(self) -> None:
        try:
            self._drive()
        except Exception as exc:  # recorded: the report names it; the audit sees the model as it was left
            log.exception("driver of %s", self.run.name)
            self.problems.append(f"driver error: {exc!r}")
        finally:
            if not self.run.hold:
                self.soak.running.release()

    def _drive(self) -> None:
        soak = self.soak
        while self.plugin_runs < soak.options.max_plugin_runs and not soak.stopping.is_set():
            if self.execution is None:
                self.execution = soak.find_execution(self.run.name)
            if self.execution is not None:
                status, ended = soak.execution_status(self.execution)
                if status in FINISHED and ended:
                    self.outcome = status
                    return
                active = self.execution
                if self.plugin_runs > 0:
                    self.resumes += 1
                    with self.lock:
                        if self.action == "none":
                            self.action = "resumed"
                    log.info("%s: resuming %s (status %s)", self.run.name, active, status)
            elif self.plugin_runs > 0 and soak.find_execution(self.run.name, wait=5) is not None:
                continue  # it was created after all
            else:
                active = self.pipeline
            config = {"name": self.run.name, **self.dialog()}
            self.result_id = soak.retry(lambda a=active, c=config: soak.project.start("ExecutePipeline", a, c))
            self.plugin_runs += 1
            result = self._wait_result()
            log.info("%s: plugin run %d ended: %s", self.run.name, self.plugin_runs, _summary(result))
        self.problems.append(f"gave up after {self.plugin_runs} plugin runs")

    def _wait_result(self) -> dict[str, Any]:
        soak = self.soak
        deadline = time.monotonic() + soak.options.duration
        assert self.result_id is not None
        while time.monotonic() < deadline and not soak.stopping.is_set():
            try:
                result = soak.project.result("ExecutePipeline", self.result_id)
            except requests.RequestException:
                result = None  # the server restarts: ask again
            if result is not None:
                return result
            time.sleep(0.5)
        return {"gone": True}


def _summary(result: dict[str, Any]) -> str:
    if result.get("gone"):
        return "the plugin is gone"
    return "success" if result.get("success") else f"failed: {str(result.get('error'))[:200]}"


class Soak:
    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        self.run_dir = (options.run_dir or Path(f".run/soak-{options.seed}")).resolve()
        self.stack = SoakStack(self.run_dir, StackConfig(options.workers, options.slots))
        self.rng = random.Random(f"targets-{options.seed}")
        self.job_log = self.run_dir / "jobs.log"
        self.faults_done = self.run_dir / "faults.done"  # the holding jobs end when it exists
        self.bucket = f"soak-{uuid.uuid4().hex[:12]}"
        self.stopping = threading.Event()
        self.running = threading.BoundedSemaphore(options.parallel)
        self.drivers: list[Driver] = []
        self.injected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.recovery: dict[str, list[float]] = defaultdict(list)
        self.unrecovered: Counter[str] = Counter()  # no recovery within the bound (and the workload went on)
        self.events: list[dict[str, Any]] = []
        self._executions: dict[str, str] = {}  # name -> path
        self._container: str | None = None
        self._names_lock = threading.Lock()
        self.project: Project

    # ------------------------------------------------------------------------------------ helpers
    def retry(self, call: Any, timeout: float = 180.0) -> Any:
        """``call()`` until it does not raise a connection/HTTP error (the server may be restarting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call()
            except requests.RequestException:
                if time.monotonic() > deadline or self.stopping.is_set():
                    raise
                time.sleep(0.5)

    def dialog(self, run: RunSpec) -> dict[str, Any]:
        dialog: dict[str, Any] = {}
        if run.storage == "s3":
            assert self.stack.s3 is not None
            # through the proxy; attempts enough to outlast an S3 restart (standard retries back off up to 20 s)
            config = {**self.stack.storage_configs(self.bucket)["s3"], "maxAttempts": S3_ATTEMPTS}
            dialog.update({"storage": "s3", **{f"storage.s3.{k}": v for k, v in config.items()}})
        else:
            dialog["storage"] = "gme"
        if run.compute == "local":
            work = self.run_dir / ("hold-compute" if run.hold else "local-compute")  # the holds: a queue apart
            dialog.update({"compute": "local", "compute.local.workDir": str(work), "compute.local.processes": 2})
        else:
            dialog["compute"] = "gme"
        return dialog

    def find_execution(self, name: str, wait: float = 0) -> str | None:
        """The path of the Execution called ``name`` (new children of MyExecutions are read once each), or
        None when the model, read after ``wait`` seconds, has none.  A server that does not answer (it may be
        restarting) is waited for (:meth:`retry`), never taken for "no such Execution": that made a driver
        start its pipeline again after each WebGME restart, a new Execution each time (soak013, seed 15)."""
        deadline = time.monotonic() + wait
        while True:
            with self._names_lock:
                if name not in self._executions:
                    self.retry(self._read_new_executions)
                if name in self._executions:
                    return self._executions[name]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)

    def _read_new_executions(self) -> None:
        """Add the names of MyExecutions' children not read before (raises on a failed read: nothing is
        recorded for a child whose node was not read)."""
        if self._container is None:
            root = self.project.node("")
            for child in Project.children(root):
                if self.project.node(f"/{child}").get("atr", {}).get("name") == "MyExecutions":
                    self._container = f"/{child}"
        if self._container is None:
            return
        known = set(self._executions.values())
        for child in Project.children(self.project.node(self._container)):
            path = f"{self._container}/{child}"
            if path not in known:
                self._executions[str(self.project.node(path).get("atr", {}).get("name"))] = path

    def execution_status(self, path: str) -> tuple[str | None, bool]:
        atr = self.retry(lambda: self.project.node(path)).get("atr", {})
        return atr.get("status"), bool(atr.get("endTime"))

    def progress_since(self, t: float) -> bool:
        """A job started after ``t`` (the whole chain works again: plugin, executor, worker, storage)."""
        return any(line.what == "S" and line.time >= t for line in read_log(self.job_log))

    def active_drivers(self) -> list[Driver]:
        """Drivers whose Execution runs now (found in the model, not finished)."""
        found = []
        for d in self.drivers:
            if d.active and d.execution is None:
                d.execution = self.find_execution(d.run.name)
            if d.active and d.execution is not None:
                status, ended = self.execution_status(d.execution)
                if status == "running" and not ended:
                    found.append(d)
        return found

    def workload_over(self, holds: bool = True) -> bool:
        """Every run over (``holds=False``: every run but the holding ones, which last as long as the faults)."""
        return all(d.outcome is not None or d.problems for d in self.drivers if holds or not d.run.hold)

    def sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)

    # ------------------------------------------------------------------------------------ faults
    def inject(self, fault: Fault) -> dict[str, Any] | None:
        """Inject one fault; what it hit and when it was cleared, or ``None`` when nothing could be hit."""
        stack = self.stack
        kind, p = fault.kind, fault.params
        if kind in ("worker_kill", "worker_stop"):
            worker = pick([w for w in stack.workers if w.alive()], p["pick"])
            if kind == "worker_kill":
                new = stack.replace_worker(worker)
                return {"worker": worker.index, "killed": worker.proc.pid, "new": new.proc.pid}
            os.kill(worker.proc.pid, signal.SIGSTOP)
            worker.stopped = True
            try:
                self.sleep(p["seconds"])
            finally:
                os.kill(worker.proc.pid, signal.SIGCONT)
                worker.stopped = False
            return {"worker": worker.index, "pid": worker.proc.pid, "stopped_s": p["seconds"]}
        if kind == "webgme_restart":
            assert stack.webgme is not None
            stack.webgme.restart_server()
            return {}
        if kind == "s3_restart":
            assert stack.s3 is not None
            stack.s3.restart()
            return {}
        if kind == "plugin_kill":

            def plugins() -> list[int]:
                server = stack.webgme.server if stack.webgme is not None else None
                return plugin_processes(server.popen.pid) if server is not None else []

            pids = self._wait_target(plugins)
            if not pids:
                return None
            pid = pick(pids, p["pick"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return {"pid": pid}
        if kind == "cancel":
            hit: dict[str, Any] | None = None
            for _ in range(3):  # a target may finish before the request lands: then another one
                drivers = self._wait_target(self.active_drivers)
                if not drivers:
                    return hit
                driver = pick([d for d in drivers if not d.run.hold] or drivers, p["pick"])
                hit = self._cancel(driver)
                if hit["canceled"]:
                    return hit
            return hit
        if kind.startswith("proxy_"):
            proxy = stack.proxies[p["proxy"]]
            mode = kind.removeprefix("proxy_")
            proxy.set_fault(mode, **({"seconds": p["seconds"]} if mode == "delay" else {}))
            try:
                self.sleep(p["window"])
            finally:
                proxy.set_fault("none")
            return {"proxy": p["proxy"], "window_s": p["window"]}
        raise ValueError(f"unknown fault kind {kind!r}")

    def _cancel(self, driver: Driver) -> dict[str, Any]:
        """CancelExecution on the driver's Execution, to its end; did it end the run as ``canceled``?"""
        assert driver.execution is not None
        execution = driver.execution
        result_id = self.retry(lambda: self.project.start("CancelExecution", execution, driver.dialog()))
        deadline = time.monotonic() + 120
        result = None
        while result is None and time.monotonic() < deadline:
            self.sleep(0.5)
            with contextlib.suppress(requests.RequestException):
                result = self.project.result("CancelExecution", result_id)
        # delivered: CancelExecution wrote the request (not "Execution is already <final>"); the run may still
        # end failed (an operation built to fail failed first) or success (its last job ended first)
        messages = [str(m.get("message", "")) for m in (result or {}).get("messages", []) if isinstance(m, dict)]
        canceled = bool(result and result.get("success")) and not any("is already" in m for m in messages)
        if canceled:
            with driver.lock:
                driver.action = "canceled"
        return {"execution": execution, "run": driver.run.name, "canceled": canceled,
                "result": _summary(result or {"gone": True})}  # fmt: skip

    def _wait_target(self, find: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping.is_set() and not self.workload_over():
            found = find()
            if found:
                return found
            self.sleep(0.5)
        return None

    def recover(self, fault: Fault, cleared: float, hit: dict[str, Any]) -> float | None:
        """Seconds from ``cleared`` until the system works again (healthy, and a job started since, or
        the canceled Execution ended); ``None`` if the workload ended first or the bound passed."""
        deadline = cleared + self.options.recovery_timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            if fault.kind == "cancel":
                status, ended = self.execution_status(hit["execution"])
                if status in FINISHED and ended:
                    return time.monotonic() - cleared
            elif self.stack.healthy():
                if self.progress_since(time.time() - (time.monotonic() - cleared)):
                    return time.monotonic() - cleared
                if self.workload_over(holds=False):
                    return None  # nothing left to start: no recovery to measure
            time.sleep(0.2)
        return None

    def fault_loop(self, planned: list[Fault], deadline: float) -> None:
        for fault in planned:
            self.sleep(fault.pause)
            if self.stopping.is_set() or self.workload_over() or time.monotonic() > deadline:
                self.skipped[fault.kind] += 1
                continue
            began, t0 = time.time(), time.monotonic()
            print(f"  fault {fault.index + 1}/{len(planned)}: {fault.kind} {fault.params}", flush=True)
            try:
                hit = self.inject(fault)
            except Exception as exc:
                log.exception("injecting %s", fault.kind)
                self.events.append({"fault": fault.index, "kind": fault.kind, "error": repr(exc)})
                self.skipped[fault.kind] += 1
                continue
            if hit is None:
                self.skipped[fault.kind] += 1
                self.events.append({"fault": fault.index, "kind": fault.kind, "skipped": "no target"})
                continue
            cleared = t0 if fault.kind == "cancel" else time.monotonic()  # a cancel: from the request on
            self.injected[fault.kind] += 1
            seconds = self.recover(fault, cleared, hit)
            if seconds is not None:
                self.recovery[fault.kind].append(seconds)
            elif not self.workload_over(holds=False) and not self.stopping.is_set():
                self.unrecovered[fault.kind] += 1
            self.events.append({"fault": fault.index, "kind": fault.kind, "at": began, "hit": hit,
                                "recovery_s": seconds})  # fmt: skip
            print(
                f"    recovered in {seconds:.1f}s" if seconds is not None else "    (no recovery measured)", flush=True
            )
        print(f"  {sum(self.injected.values())} of {len(planned)} faults injected; the holding jobs end", flush=True)

    # ------------------------------------------------------------------------------------ the run
    def run(self) -> SoakReport:
        o = self.options
        started = time.monotonic()
        planned_runs = plan(o.seed, dataclasses.replace(o.workload, jobs=o.jobs))
        planned_faults = schedule(o.seed, o.faults, o.fault_gap, o.stop_seconds)
        print(f"soak run: seed {o.seed} (replay: --seed {o.seed}), {o.jobs} jobs in {len(planned_runs)} pipelines, "
              f"{len(planned_faults)} faults, {o.workers} workers x {o.slots} slots, run dir {self.run_dir}",
              flush=True)  # fmt: skip
        self.stack.start()
        print(f"  WebGME {self.stack.url}, S3 {self.stack.s3.url if self.stack.s3 else '-'}, "
              f"proxies {self.stack.proxy_ports}, marker {MARKER_ENV}={self.stack.run_id}", flush=True)  # fmt: skip
        self.project = Project(self.stack.url, f"soak_{o.seed}_{uuid.uuid4().hex[:6]}").create()
        assert self.stack.s3 is not None
        self.stack.s3.client().create_bucket(Bucket=self.bucket)
        self.job_log.write_text("")  # a run dir used before: this run's lines only
        self.faults_done.unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=IMPORTS_AT_ONCE) as pool:  # each import is a plugin process
            pipes = list(pool.map(self._import, planned_runs))
        self.drivers = [Driver(self, run, pipe) for run, pipe in zip(planned_runs, pipes, strict=True)]
        print(f"  imported {len(planned_runs)} pipelines in {time.monotonic() - started:.0f}s", flush=True)

        sampler = threading.Thread(target=self._sample, name="soak-rss", daemon=True)
        sampler.start()
        launcher = threading.Thread(target=self._launch, name="soak-launch", daemon=True)
        launcher.start()
        deadline = started + o.duration
        self.fault_loop(planned_faults, deadline)
        self.faults_done.touch()
        while not self.workload_over() and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(1)
        timed_out = not self.workload_over()
        self.stopping.set()
        launcher.join(timeout=30)
        self.stack.sample_rss()
        print("  workload over; stopping the workers and the server for the audit", flush=True)
        self.stack.stop_for_audit()
        record = self._record()
        audit_began = time.monotonic()
        result = audit(record)
        print(f"  audit took {time.monotonic() - audit_began:.0f}s", flush=True)
        return self._report(planned_runs, planned_faults, result, time.monotonic() - started, timed_out)

    def _import(self, run: RunSpec) -> str:
        spec = json.dumps(pipeline_spec(run, self.job_log, self.faults_done, self.options.workload.hold_max))
        result_id = self.project.start("ImportPipeline", "", {"pipeline": spec})
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            result = self.project.result("ImportPipeline", result_id)
            if result is not None:
                if not result.get("success"):
                    raise RuntimeError(f"ImportPipeline {run.name}: {result.get('error')}")
                return str(result["messages"][0]["message"])
            time.sleep(0.3)
        raise TimeoutError(f"ImportPipeline {run.name} did not finish within 300s")

    def _launch(self) -> None:
        """One driver thread per pipeline, at most ``parallel`` at once."""
        threads = []
        for driver in sorted(self.drivers, key=lambda d: not d.run.hold):
            if driver.run.hold:
                thread = threading.Thread(target=driver, name=f"soak-{driver.run.name}", daemon=True)
                thread.start()
                threads.append(thread)
                continue
            while not self.running.acquire(timeout=1):
                if self.stopping.is_set():
                    return
            if self.stopping.is_set():
                self.running.release()
                return
            thread = threading.Thread(target=driver, name=f"soak-{driver.run.name}", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join(timeout=self.options.duration)

    def _sample(self) -> None:
        while not self.stopping.wait(1.0):
            with contextlib.suppress(Exception):
                self.stack.sample_rss()

    def _record(self) -> RunRecord:
        """What the audit needs (see :class:`.audit.RunRecord`)."""
        stack = self.stack
        caps = stack.config
        work_dirs: dict[str, int | None] = {str(w.work_dir): caps.work_dir_cap for w in stack.workers}
        work_dirs[str(self.run_dir / "local-compute")] = caps.work_dir_cap
        work_dirs[str(self.run_dir / "hold-compute")] = caps.work_dir_cap
        return RunRecord(
            server_url=stack.url,
            project=self.project.name,
            executions={d.execution: d.action for d in self.drivers if d.execution},  # type: ignore[misc]
            failing_operations={d.execution: set(d.run.failing) for d in self.drivers if d.execution},
            storage_configs=stack.storage_configs(self.bucket),
            work_dirs=work_dirs,
            cache_dirs={str(w.cache_dir): caps.cache_max_bytes for w in stack.workers},
            buckets=[stack.storage_configs(self.bucket)["s3"]],
            worker_logs=sorted(str(p) for w in stack.workers for p in w.home.glob("worker-*.log")),
            marker=(MARKER_ENV, stack.run_id),
            ignore_pids={os.getpid()},
            executor_scope="all",
        )

    def _report(
        self, runs: list[RunSpec], planned: list[Fault], result: Any, seconds: float, timed_out: bool
    ) -> SoakReport:
        counts = attempts(read_log(self.job_log))
        problems = [f"{d.run.name}: {p}" for d in self.drivers for p in d.problems]
        if timed_out:
            problems.append(f"the workload did not finish within the --duration cap ({self.options.duration:.0f}s)")
        left = marked_processes(MARKER_ENV, self.stack.run_id)
        return SoakReport(
            seed=self.options.seed,
            duration_s=round(seconds, 1),
            jobs_planned=sum(len(r.operations) for r in runs),
            jobs_run=len(counts),
            job_attempts=sum(counts.values()),
            jobs_retried=sum(1 for c in counts.values() if c > 1),
            executions=len(runs),
            executions_by_action=dict(Counter(d.action for d in self.drivers)),
            executions_by_outcome=dict(Counter(str(d.outcome) for d in self.drivers)),
            plugin_runs=sum(d.plugin_runs for d in self.drivers),
            resumes=sum(d.resumes for d in self.drivers),
            faults_planned=dict(Counter(f.kind for f in planned)),
            faults_injected=dict(self.injected),
            faults_skipped=dict(self.skipped),
            recovery_s={kind: percentiles(values) for kind, values in sorted(self.recovery.items())},
            unrecovered=dict(self.unrecovered),
            worker_peak_rss_mib=round(max((w.peak_rss_kib for w in self.stack.workers), default=0) / 1024, 1),
            audit=result.as_dict(),
            counts=dict(result.counts),
            problems=problems,
            marked_processes_left=left,
            events=self.events,
            run_dir=str(self.run_dir),
        )

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            self.faults_done.touch()  # holding jobs still running end on their own
        self.stack.stop()


def soak(options: SoakOptions) -> SoakReport:
    """The whole run; everything it started is stopped before it returns or raises (Ctrl-C included)."""
    runner = Soak(options)
    try:
        return runner.run()
    finally:
        runner.stop()


__all__ = ["SoakOptions", "fault_kinds", "soak"]
