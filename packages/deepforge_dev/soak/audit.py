"""The soak run's audit: what must hold after a run, checked from the evidence the run leaves behind.

What the audit checks and from which evidence (soakrun quotes this paragraph in docs/reliability.md): every
Execution the driver started and every Job in it is read back from the WebGME model over REST (the branch's
tree API, each node's own attributes). **stuck**: an Execution without a final ``status`` and an ``endTime``,
a Job left ``running``/``queued`` (or ``pending`` in an Execution that succeeded), and any executor job (``GET
/rest/executor/``) still ``CREATED``/``RUNNING``. **lost**: an Execution missing from the model, or one whose
final state does not match what the driver did to it (``none``/``resumed``: ``success``, or ``failed`` exactly
when an operation built to fail ran and failed; ``canceled``: ``canceled``, ``failed`` by a built-to-fail
operation, or ``success`` when the cancel came after the last job), a Job whose status does not match (an
operation built to fail ends ``fail`` with a non-empty reason, ``Operation "<name>" failed: <reason>`` in its
``stdout``; any other ends ``success``, or, in a failed or canceled Execution, ``pending``/``canceled`` if it
never ran), and an output dataInfo whose object is gone. **corrupt**: every dataInfo in the Executions (output
ports, the inputs they were passed to, and with ``artifacts_since_ms`` what Output operations saved into
MyArtifacts) is streamed back through its storage adapter and its size and digest
compared with what the adapter knows (:meth:`StorageClient.info`; adapters that verify on read raise on a
mismatch); and no temp file of our writers is visible in the storage roots or caches (``atomic_write``'s
``.<name>.tmp-*``, the cache's ``tmp/`` entries, keys with those names in the buckets). **duplicated**: a
result reported after its job was requeued, from the workers' own per-job log lines (``job <hash>: started
pid``, ``job <hash>: reported <status>``, with the ``worker <clientId> polling`` line naming the daemon) and
the executor's job records (their ``worker``: whose final report the executor kept, and so whose results the
plugin read): a worker that reported a job after another worker had started it since its own start, or an
executor record naming a worker other than the last one that started the job, is a late report that was
applied. A report replayed by a restarted daemon for its predecessor (it never started the job) is not.
**orphaned**: a live process carrying the run's marker environment variable, or in the process group of a job
(the run's pgids and the workers' ``started pid`` lines), once the run is over. **over_cap**: a worker work
dir or cache dir above its cap (a cache may exceed it by its one newest entry, which its fetch never evicts).
``jobs_by_state`` counts the Jobs by final status.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from deepforge_adapters import storage
from deepforge_adapters.errors import DataInfoError, DeepForgeError, IntegrityError, NotFoundError
from deepforge_adapters.hashing import new_hash
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage.cache import WorkerCache
from deepforge_adapters.webgme import ExecutorClient, is_finished
from deepforge_adapters.webgme._rest import auth_headers, check, json_body, quote_segment, session_with

log = logging.getLogger(__name__)

Action = Literal["none", "canceled", "resumed"]
KINDS = ("lost", "stuck", "duplicated", "orphaned", "corrupt", "over_cap")
FINAL_JOB = frozenset({"success", "fail", "failed", "canceled"})
FINAL_EXECUTION = frozenset({"success", "failed", "canceled"})
_CHUNK = 1 << 20
#: atomic_write's temp files (``.<name>.tmp-<random>``) and the worker cache's downloads (``tmp/fetch-*``).
_TEMP_NAME = re.compile(r"^\..+\.tmp-[^/]+$")
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+ \S+: (.*)$")
_POLLING = re.compile(r"^worker (\S+) polling ")
_STARTED = re.compile(r"^job ([0-9a-f]{40}): started pid (\d+)")
_REPORTED = re.compile(r"^job ([0-9a-f]{40}): reported (\S+)")
_FAILED_REASON = re.compile(r'Operation ".*" failed: \S')


@dataclasses.dataclass
class RunRecord:
    """What the soak driver did and where its evidence lies; everything :func:`audit` reads."""

    server_url: str
    project: str  #: the project's name (``owner`` below) or its id ``owner+name``
    #: per Execution node path, what the driver did to it
    executions: dict[str, Action]
    #: per Execution node path, the names of its operations (Jobs) built to fail on purpose
    failing_operations: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    owner: str = "guest"
    branch: str = "master"
    api_token: str | None = None
    webgme_token: str | None = None
    nonce: str | None = None
    #: reader config per storage backend id (``{"local": {"root": ...}, "s3": {...}, "gme": {"host": ...}}``)
    storage_configs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    #: worker work dirs and cache dirs with their caps in bytes (``None``: no cap, only scanned)
    work_dirs: dict[str, int | None] = dataclasses.field(default_factory=dict)
    cache_dirs: dict[str, int | None] = dataclasses.field(default_factory=dict)
    #: local storage roots to scan for temp files; s3 configs (with ``bucketName``) whose buckets to scan
    storage_roots: list[str] = dataclasses.field(default_factory=list)
    buckets: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: the workers' log files (``deepforge-worker`` INFO lines; one daemon or several in sequence per file)
    worker_logs: list[str] = dataclasses.field(default_factory=list)
    #: ``(NAME, value)`` of the environment variable every job process of the run carries
    marker: tuple[str, str] | None = None
    #: process groups of jobs the run knows of (besides those in the worker logs)
    job_pgids: set[int] = dataclasses.field(default_factory=set)
    #: processes that may carry the marker once the run is over (the driver's helpers still running)
    ignore_pids: set[int] = dataclasses.field(default_factory=set)
    #: also read the executor's job records (off for runs without gme compute on a server without executor)
    check_executor: bool = True
    #: also read back the artifacts Output operations saved into ``MyArtifacts`` since this time (ms since the
    #: epoch, their ``createdAt``; ``None``: not read, as seeded artifacts may need readers the run lacks)
    artifacts_since_ms: int | None = None
    #: ``"all"``: every executor job on the server is the run's (a dedicated soak server: a job the model never
    #: recorded is caught too); ``"model"``: only those whose hash a Job of the audited Executions records
    executor_scope: Literal["all", "model"] = "all"

    @property
    def project_id(self) -> str:
        return self.project if "+" in self.project else f"{self.owner}+{self.project}"


@dataclasses.dataclass
class AuditReport:
    """What :func:`audit` found: a details list per kind (each entry names a node path, key, job or pid)."""

    details: dict[str, list[str]] = dataclasses.field(default_factory=lambda: {k: [] for k in KINDS})
    jobs_by_state: dict[str, int] = dataclasses.field(default_factory=dict)
    executions_by_state: dict[str, int] = dataclasses.field(default_factory=dict)
    data_checked: int = 0
    bytes_checked: int = 0
    #: things worth a look that are no failure (an incomplete multipart upload nobody can see)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, kind: str, detail: str) -> None:
        log.warning("audit: %s: %s", kind, detail)
        self.details[kind].append(detail)

    @property
    def lost(self) -> int:
        return len(self.details["lost"])

    @property
    def stuck(self) -> int:
        return len(self.details["stuck"])

    @property
    def duplicated(self) -> int:
        return len(self.details["duplicated"])

    @property
    def orphaned(self) -> int:
        return len(self.details["orphaned"])

    @property
    def corrupt(self) -> int:
        return len(self.details["corrupt"])

    @property
    def over_cap(self) -> int:
        return len(self.details["over_cap"])

    @property
    def counts(self) -> dict[str, int]:
        return {kind: len(self.details[kind]) for kind in KINDS}

    @property
    def ok(self) -> bool:
        return not any(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "counts": self.counts,
            "details": self.details,
            "jobs_by_state": self.jobs_by_state,
            "executions_by_state": self.executions_by_state,
            "data_checked": self.data_checked,
            "bytes_checked": self.bytes_checked,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)


def audit(run: RunRecord) -> AuditReport:
    """Check everything in the module docstring against ``run``'s evidence; never raises for a finding."""
    report = AuditReport()
    began = time.time()  # everything of the run is stopped: a process younger than this is not its orphan
    tree = _Tree(run)
    gme_jobs: dict[str, str] = {}
    if run.executions or run.artifacts_since_ms is not None:
        try:
            report.notes.append(f"model read at commit {tree.head()} of branch {run.branch}")
        except Exception as exc:  # every Execution would read as lost: say why instead, once
            report.add("lost", f"the model cannot be read ({type(exc).__name__}: {exc}); no Execution was checked")
        else:
            gme_jobs = _check_executions(run, tree, report)
    pgids = _check_workers(run, report, gme_jobs)
    _check_storage(run, report)
    for line in job_processes(run.marker, run.job_pgids | pgids, run.ignore_pids, started_before=began):
        report.add("orphaned", line)
    _check_caps(run, report)
    return report


# ------------------------------------------------------------------------------------------------ the model
class _Tree:
    """A branch's nodes over WebGME's REST tree API (``.../branches/<b>/tree/<path>``): own data only."""

    def __init__(self, run: RunRecord) -> None:
        owner, _, name = run.project_id.partition("+")
        self.base = (
            f"{run.server_url.rstrip('/')}/api/projects/{quote_segment(owner)}/{quote_segment(name)}"
            f"/branches/{quote_segment(run.branch)}/tree"
        )
        self.session = session_with(auth_headers(run.api_token, run.webgme_token), None)
        self.branch, self.project_id = run.branch, run.project_id
        self.last_missing = ""

    def head(self) -> str:
        """The branch's commit hash (ConnectionError/HTTPError naming the branch if the server has none): a
        404 below means a missing node only once the branch itself is known to be there."""
        url = self.base.rsplit("/tree", 1)[0]
        what = f"branch {self.branch!r} of project {self.project_id!r}"
        body = json_body(check(self.session.get(url, allow_redirects=False), what), what)
        commit = (body.get("commitObject") or {}).get("_id") if isinstance(body, dict) else None
        if not isinstance(commit, str):
            raise ValueError(f"{what}: the server answered {body!r:.200} instead of a branch")
        return commit

    def commits(self, branch: bool, n: int = 100) -> list[dict[str, Any]]:
        """The newest ``n`` commits of the branch (following parents), or of the whole project (by time)."""
        url = (
            self.base.rsplit("/tree", 1)[0] + "/commits" if branch else self.base.split("/branches/", 1)[0] + "/commits"
        )
        body = json_body(check(self.session.get(url, params={"n": n}), "commits"), "commits")
        return [c for c in body if isinstance(c, dict)] if isinstance(body, list) else []

    def node(self, path: str) -> dict[str, Any] | None:
        what = f"model node {path or '/'}"
        response = self.session.get(self.base + path, allow_redirects=False)
        if response.status_code == 404:
            self.last_missing = response.text.strip()[:200]  # "Path does not exist ..." or "Not authorized ..."
            return None
        body = json_body(check(response, what), what)
        return body if isinstance(body, dict) else None

    @staticmethod
    def attrs(node: Mapping[str, Any]) -> dict[str, Any]:
        return dict(node.get("atr") or {})

    @staticmethod
    def children(path: str, node: Mapping[str, Any]) -> list[str]:
        """Child paths: the relid keys, whose values are the children's data hashes (``#...``)."""
        return [
            f"{path}/{key}"
            for key, value in node.items()
            if not key.startswith("_") and isinstance(value, str) and value.startswith("#")
        ]


@dataclasses.dataclass
class _Job:
    path: str
    name: str
    status: str
    stdout: str
    exec_hash: str | None
    data: list[tuple[str, str]]  # (port path, dataInfo text)


def _read_job(tree: _Tree, path: str, node: Mapping[str, Any]) -> _Job:
    attrs = tree.attrs(node)
    data: list[tuple[str, str]] = []
    stack = [(child, 1) for child in tree.children(path, node)]
    while stack:  # the Operation copy -> its Inputs/Outputs -> their Data ports (not below a port: provenance)
        child_path, depth = stack.pop()
        child = tree.node(child_path)
        if child is None:
            continue
        text = tree.attrs(child).get("data")
        if isinstance(text, str) and text:
            data.append((child_path, text))
            continue
        if depth < 3:
            stack.extend((grandchild, depth + 1) for grandchild in tree.children(child_path, child))
    exec_hash = attrs.get("execFiles")
    return _Job(
        path=path,
        name=str(attrs.get("name") or ""),
        status=str(attrs.get("status") or ""),
        stdout=str(attrs.get("stdout") or ""),
        exec_hash=exec_hash if isinstance(exec_hash, str) and re.fullmatch(r"[0-9a-f]{40}", exec_hash) else None,
        data=data,
    )


def _check_executions(run: RunRecord, tree: _Tree, report: AuditReport) -> dict[str, str]:
    """The model's Executions and Jobs (stuck, lost) and their dataInfos (corrupt, lost); returns
    ``{executor job hash: Job path}`` for the jobs that ran on the executor."""
    jobs_by_state: Counter[str] = Counter()
    executions_by_state: Counter[str] = Counter()
    exec_hashes: dict[str, str] = {}
    places: dict[str, list[str]] = {}  # dataInfo text -> where it is (ports it was passed to hold the same)
    for ex_path, action in run.executions.items():
        node = tree.node(ex_path)
        if node is None:
            report.add("lost", f"execution {ex_path}: not in the model (the server said: {tree.last_missing!r})")
            continue
        attrs = tree.attrs(node)
        name, status = attrs.get("name", ex_path), str(attrs.get("status") or "")
        executions_by_state[status or "(none)"] += 1
        where = f"execution {name} ({ex_path})"
        if status not in FINAL_EXECUTION or not attrs.get("endTime"):
            report.add("stuck", f"{where}: status {status!r}, endTime {attrs.get('endTime')!r}")
        jobs = []
        for child in tree.children(ex_path, node):
            child_node = tree.node(child)
            if child_node is not None and "status" in tree.attrs(child_node):  # a Job (Transporters have none)
                jobs.append(_read_job(tree, child, child_node))
        failing = set(run.failing_operations.get(ex_path, set()))
        failed_on_purpose = any(j.name in failing and j.status in ("fail", "failed") for j in jobs)
        if status in FINAL_EXECUTION:
            _expect_execution(report, where, status, action, failed_on_purpose)
        for job in jobs:
            jobs_by_state[job.status or "(none)"] += 1
            if job.exec_hash:
                exec_hashes[job.exec_hash] = job.path
            _expect_job(report, job, status, action, job.name in failing)
            for port_path, text in job.data:
                places.setdefault(text, []).append(f"{port_path} (job {job.name} of {name})")
    if run.artifacts_since_ms is not None:
        for path, where, text in _saved_artifacts(tree, run.artifacts_since_ms):
            places.setdefault(text, []).append(f"{path} ({where})")
    for text, holders in places.items():  # each artifact read once, however many ports hold its dataInfo
        _check_data(run, report, "; ".join(sorted(holders)), text)
    if any("not in the model" in line for line in report.details["lost"]):
        _note_history(tree, report)
    report.jobs_by_state = dict(jobs_by_state)
    report.executions_by_state = dict(executions_by_state)
    return exec_hashes


def _note_history(tree: _Tree, report: AuditReport) -> None:
    """Where the branch stands against the project's newest commits: an Execution missing from the branch
    but present in a newer commit means the branch was moved back (or the Execution went to another one)."""
    try:
        history, newest = tree.commits(branch=True, n=2000), tree.commits(branch=False, n=20)
    except Exception as exc:
        report.notes.append(f"the commit history could not be read: {exc}")
        return

    def shown(c: Mapping[str, Any]) -> str:
        return f"{c.get('_id')} {c.get('time')} {str(c.get('message'))[:120]!r} parents {c.get('parents')}"

    report.notes.append(f"branch {tree.branch}: {len(history)} commits in its history")
    report.notes.extend(f"branch history: {shown(c)}" for c in history[:8])
    on_branch = {c.get("_id") for c in history}
    report.notes.extend(
        f"newest commit{'' if c.get('_id') in on_branch else ' (NOT on the branch)'}: {shown(c)}" for c in newest
    )


def _saved_artifacts(tree: _Tree, since_ms: int) -> Iterator[tuple[str, str, str]]:
    """``(path, "artifact <name> in MyArtifacts", dataInfo text)`` of the artifacts saved since ``since_ms``."""
    root = tree.node("")
    for path in tree.children("", root or {}):
        node = tree.node(path)
        if node is None or tree.attrs(node).get("name") != "MyArtifacts":
            continue
        for child in tree.children(path, node):
            artifact = tree.node(child)
            attrs = tree.attrs(artifact or {})
            created, text = attrs.get("createdAt"), attrs.get("data")
            if isinstance(created, int | float) and created >= since_ms and isinstance(text, str) and text:
                yield child, f"artifact {attrs.get('name')} in MyArtifacts", text


def _expect_execution(report: AuditReport, where: str, status: str, action: str, failed_on_purpose: bool) -> None:
    if action == "canceled":  # a cancel that came after the last job ended finds it succeeded
        expected = {"canceled", "failed"} if failed_on_purpose else {"canceled", "success"}
    else:
        expected = {"failed"} if failed_on_purpose else {"success"}
    if status not in expected:
        report.add("lost", f"{where} ({action}): ended {status!r}, expected {' or '.join(sorted(expected))}")


def _expect_job(report: AuditReport, job: _Job, ex_status: str, action: str, built_to_fail: bool) -> None:
    where = f"job {job.name} ({job.path})"
    if job.status in ("running", "queued") or (job.status == "pending" and ex_status == "success"):
        report.add("stuck", f"{where}: left {job.status!r}")
        return
    if job.status not in FINAL_JOB and job.status != "pending":
        report.add("stuck", f"{where}: status {job.status!r} is not a final state")
        return
    if job.status in ("fail", "failed"):
        if not built_to_fail:
            report.add("lost", f"{where}: failed though not built to fail: {job.stdout.strip()[-200:]!r}")
        elif not _FAILED_REASON.search(job.stdout):
            report.add("lost", f"{where}: failed without a reason in its stdout")
    elif job.status == "success":
        pass  # its outputs are read back by _check_data
    elif ex_status == "success":
        report.add("lost", f"{where}: {job.status!r} in an execution that succeeded")
    elif action != "canceled" and job.status == "canceled":
        report.add("lost", f"{where}: canceled, though its execution was not")
    # pending / canceled in a failed or canceled execution: it never ran (nothing new starts after a failure)


def _check_data(run: RunRecord, report: AuditReport, where: str, text: str) -> None:
    """Stream the artifact back through its adapter; size and digest against what the adapter knows."""
    try:
        info = DataInfo.from_json(text)
    except DataInfoError as exc:
        report.add("corrupt", f"{where}: not a dataInfo: {exc}")
        return
    config = run.storage_configs.get(info.backend)
    if config is None:
        report.notes.append(f"{where}: no reader config for backend {info.backend!r}; not read back")
        return
    try:
        client = storage.get_client(info.backend, config)
        described = client.info(info)
        digest = new_hash(described.digest[0]) if described.digest else None
        size = 0
        with client.get_file_stream(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if digest is not None:
                    digest.update(chunk)
    except NotFoundError as exc:
        report.add("lost", f"{where}: the artifact is gone: {exc}")
        return
    except IntegrityError as exc:
        report.add("corrupt", f"{where}: {exc}")
        return
    except DeepForgeError as exc:
        report.add("corrupt", f"{where}: cannot be read back: {type(exc).__name__}: {exc}")
        return
    report.data_checked += 1
    report.bytes_checked += size
    if size != described.size:
        report.add("corrupt", f"{where}: read {size} bytes, the store records {described.size}")
    elif digest is not None and described.digest is not None and digest.hexdigest() != described.digest[1]:
        report.add("corrupt", f"{where}: {described.digest[0]} {digest.hexdigest()} != recorded {described.digest[1]}")


# ------------------------------------------------------------------------------------------ workers / executor
@dataclasses.dataclass(frozen=True)
class _Event:
    when: datetime.datetime
    log: str  # the log file
    worker: str  # the client id of the daemon that wrote the line ("" before its polling line)
    kind: str  # "start" or "report"
    job: str
    detail: str


def worker_events(paths: Iterable[str]) -> list[_Event]:
    """The per-job lines of the workers' logs, in time order."""
    events: list[_Event] = []
    for path in paths:
        worker = ""
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError as exc:
            log.warning("audit: cannot read worker log %s: %s", path, exc)
            continue
        for line in lines:
            match = _LOG_LINE.match(line)
            if match is None:
                continue
            when = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            message = match.group(2)
            if polling := _POLLING.match(message):
                worker = polling.group(1)
            elif started := _STARTED.match(message):
                events.append(_Event(when, path, worker, "start", started.group(1), started.group(2)))
            elif reported := _REPORTED.match(message):
                events.append(_Event(when, path, worker, "report", reported.group(1), reported.group(2)))
    return sorted(events, key=lambda e: e.when)


def _check_workers(run: RunRecord, report: AuditReport, gme_jobs: Mapping[str, str]) -> set[int]:
    """Late reports in the worker logs and the executor records (duplicated), executor jobs left unfinished
    (stuck); returns the process groups of the jobs the workers started."""
    events = worker_events(run.worker_logs)
    starts: dict[str, list[_Event]] = {}
    pgids: set[int] = set()
    for event in events:
        if event.kind == "start":
            starts.setdefault(event.job, []).append(event)
            pgids.add(int(event.detail))  # the job's process group (process.py: each job leads its own session)
    late: set[str] = set()
    for event in events:
        if event.kind != "report":
            continue
        own = [s for s in starts.get(event.job, []) if s.worker == event.worker and s.when <= event.when]
        if not own:
            continue  # a replay by a restarted daemon: it reports for its predecessor
        since = [s for s in starts[event.job] if own[-1].when < s.when <= event.when and s.worker != event.worker]
        if since:
            late.add(event.job)
            report.add(
                "duplicated",
                f"executor job {event.job} ({gme_jobs.get(event.job, 'no Job in the model')}): worker {event.worker} "
                f"reported {event.detail} at {event.when} after {since[0].worker} had started it at {since[0].when}",
            )
    if not run.check_executor:
        return pgids
    executor = ExecutorClient(run.server_url, run.api_token, run.webgme_token, nonce=run.nonce)
    try:
        records = executor.list_jobs()
    except DeepForgeError as exc:
        report.add("lost", f"the executor's job records cannot be read: {exc}")
        return pgids
    for job_hash, record in sorted(records.items()):
        if run.executor_scope == "model" and job_hash not in gme_jobs:
            continue
        status = record.get("status") if isinstance(record, dict) else None
        where = f"executor job {job_hash} ({gme_jobs.get(job_hash, 'no Job in the model')})"
        if not is_finished(status if isinstance(status, str) else None):
            report.add("stuck", f"{where}: left {status}")
            continue
        worker = record.get("worker")
        history = starts.get(job_hash, [])
        if job_hash in late or not worker or not history:
            continue
        own = [s for s in history if s.worker == worker]
        if own and own[-1] is not history[-1]:
            report.add(
                "duplicated",
                f"{where}: the executor kept {status} from worker {worker}, but {history[-1].worker} started it "
                f"at {history[-1].when}, after {worker} did (a late report was applied)",
            )
    return pgids


# ---------------------------------------------------------------------------------------------------- storage
def _check_storage(run: RunRecord, report: AuditReport) -> None:
    for root in [*run.storage_roots, *run.cache_dirs]:
        for path in _walk(Path(root)):
            rel = path.relative_to(root)
            if _TEMP_NAME.match(path.name) or (rel.parts[0] == "tmp" and root in run.cache_dirs):
                report.add("corrupt", f"{path}: a temp file left visible in {root}")
    for config in run.buckets:
        _check_bucket(config, report)


def _walk(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            yield Path(dirpath) / filename


def _check_bucket(config: Mapping[str, Any], report: AuditReport) -> None:
    bucket = str(config.get("bucketName"))
    try:
        client = storage.get_client("s3", config)
        s3 = client.client  # type: ignore[attr-defined]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", []):
                if _TEMP_NAME.match(entry["Key"].rsplit("/", 1)[-1]):
                    report.add("corrupt", f"s3://{bucket}/{entry['Key']}: a temp object visible under a key")
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in uploads:
            report.notes.append(f"s3://{bucket}/{upload['Key']}: an incomplete multipart upload (not visible)")
    except Exception as exc:
        report.add("corrupt", f"s3 bucket {bucket}: cannot be listed: {type(exc).__name__}: {exc}")


# -------------------------------------------------------------------------------------------------- processes
def _ancestors(pid: int) -> set[int]:
    found = set()
    while pid > 1:
        found.add(pid)
        stat = _stat(pid)
        if stat is None:
            break
        pid = stat[1]
    return found


def _stat(pid: int) -> tuple[str, int, int, float] | None:
    """``(state, ppid, pgid, start time as a Unix time)`` from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1]), int(fields[2]), _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@functools.cache
def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def job_processes(
    marker: tuple[str, str] | None,
    pgids: Iterable[int],
    ignore: Iterable[int] = (),
    started_before: float | None = None,
) -> list[str]:
    """Live processes carrying ``marker`` in their environment or in one of ``pgids``, as ``"pid (why): cmd"``.

    A process in one of ``pgids`` that started after ``started_before`` (a Unix time: when the audit began,
    everything of the run being stopped by then) is not counted: its group id is a job's number reused by the
    system (the 1,000-job run counted 20 processes of another session's Ray cluster so)."""
    wanted = set(pgids)
    needle = f"{marker[0]}={marker[1]}".encode() if marker else None
    skip = set(ignore) | _ancestors(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        stat = _stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            continue
        why = ""
        if stat[2] in wanted and (started_before is None or stat[3] <= started_before):
            why = f"in job process group {stat[2]}"
        elif needle is not None:
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                why = f"carries {marker[0] if marker else ''}"
        if why:
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                cmd = "?"
            found.append(f"pid {pid} ({why}): {cmd[:200]}")
    return found


# ------------------------------------------------------------------------------------------------------- caps
def _tree_bytes(root: Path) -> tuple[int, int]:
    """``(total bytes, largest file)`` of the regular files under ``root``."""
    total = largest = 0
    for path in _walk(root):
        try:
            size = path.lstat().st_size
        except OSError:
            continue
        total += size
        largest = max(largest, size)
    return total, largest


def _check_caps(run: RunRecord, report: AuditReport) -> None:
    for root, cap in run.work_dirs.items():
        total, _ = _tree_bytes(Path(root))
        if cap is not None and total > cap:
            report.add("over_cap", f"work dir {root}: {total} bytes > cap {cap}")
    for root, cap in run.cache_dirs.items():
        objects = WorkerCache(root).total_bytes()
        _, largest = _tree_bytes(Path(root) / "objects")
        if cap is not None and objects > max(cap, largest):
            report.add("over_cap", f"cache {root}: {objects} bytes of objects > cap {cap}")
