"""Running one Execution: the loop that starts ready jobs, follows them, and writes what happened.

Read it top to bottom in :meth:`ExecutionRun.run`: start what is ready, wait for the next event from a job
watcher, record it, repeat until the scheduler says the run is over, then write the Execution's outcome.

Every model access happens on this (the main) thread: the bindings talk over one ZeroMQ REQ socket.  Each
running job has a watcher thread that only iterates ``compute.watch(job_info)`` and puts its updates on a
queue.  Live output is sent as notifications and, at most every :data:`LIVE_STDOUT_SECONDS` for the whole
run (in the turn's commit), written into ``Job.stdout`` of the jobs running for a few seconds already that
printed since, so any session's Execution view follows it; the final console output replaces it at the
job's end.  Between events the loop re-reads the branch head: an Execution whose ``status`` a user set to
``canceled`` while it runs (from any session, or with CancelExecution) gets all its running jobs canceled
through their compute adapters, as does an abort of the plugin.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepforge_adapters import compute, storage
from deepforge_adapters.compute import ComputeClient, ComputeJob, JobStatus, JobUpdate
from deepforge_adapters.config import Config
from deepforge_adapters.errors import ConfigError
from deepforge_adapters.policy import PolicyError
from deepforge_adapters.secrets import redact
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.timestamps import now_ms

from . import job_metadata, pipeline
from .base import DeepForgePlugin
from .bundles import job_slug, uploaded_bundle
from .dag import JobState, Scheduler
from .pipeline import Graph, PipelineJob
from .run_config import RunConfig
from .status import ModelStatus
from .targets import Targets, resolve

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 1.0
#: The longest a batch of model edits waits for its commit (seconds): while a run starts many jobs at once,
#: their ``jobInfo`` reaches the branch at least this often (a plugin that dies loses no more of them).
COMMIT_BATCH_SECONDS = 1.0
#: How long a status change waits for its job's end before it is committed on its own (seconds).
STATUS_GRACE_SECONDS = 0.5
#: How often (seconds) the console output of running jobs that printed is written into their ``stdout``: one
#: write for all of them, in a turn's commit; only for jobs followed for :data:`LIVE_STDOUT_AFTER_SECONDS`
#: already, so a short job costs no commit for it (it gets only its final output written, at its end).
LIVE_STDOUT_SECONDS = 2.0
LIVE_STDOUT_AFTER_SECONDS = 5.0
#: How many of a batch's messages its commit message lists.
COMMIT_MESSAGE_UPDATES = 5
#: The most jobs one run keeps submitted and unfinished at a time (the rest start as these end), so that a
#: wide fan-out does not become hundreds of queued local-compute supervisor processes, or hundreds of watchers
#: polling the executor, at once; ``$DEEPFORGE_MAX_RUNNING_JOBS`` on the server changes it.
MAX_RUNNING_JOBS_ENV = "DEEPFORGE_MAX_RUNNING_JOBS"
DEFAULT_MAX_RUNNING_JOBS = 32
#: The backend of the placeholder config of an Input/Output job that has no target (it uses none).
UNUSED = "(none)"


def resolve_targets(
    plugin: DeepForgePlugin, rc: RunConfig, targets: Targets, job: PipelineJob
) -> tuple[Config, Config]:
    """The validated (storage, compute) config of one job; errors name the job."""
    resolved = []
    for kind in ("storage", "compute"):
        choice = targets.get(kind)
        if choice is None:
            if job.kind != "Operation":
                # Input/Output run inside the plugin and use no target of their own: nothing to resolve.
                resolved.append(Config(UNUSED, {}, frozenset()))
                continue
            else:
                raise ConfigError(
                    kind, None, f"job {job.name}: no {kind} backend chosen (dialog or SetExecutionTargets)"
                )
        try:
            plugin.policy().check_backend(kind, choice.backend)  # before the user's token is added for it
            choice = plugin.with_server_fields(kind, choice)
            secrets = rc.secrets.get(kind, {}).get(choice.backend, {})
            config = resolve(kind, choice, secrets, policy=plugin.policy(), server_url=plugin.server_url())
            resolved.append(plugin.with_linked_account(config))  # a SciServer account linked once: its token
        except PolicyError as exc:
            raise PolicyError(f"job {job.name}: {exc}") from None
        except ConfigError as exc:
            raise ConfigError(kind, None, f"job {job.name}: {exc}") from None
    return resolved[0], resolved[1]


def input_artifact_data(model: Any, operation: str) -> str:
    """The ``data`` (a dataInfo, JSON) of the artifact an Input operation points at, or ``""``."""
    artifact = model.core.load_pointer(model.node(operation), "artifact")
    return "" if artifact is None else str(model.attr(artifact, "data") or "")


def max_running_jobs(environ: Mapping[str, str]) -> int:
    """``$DEEPFORGE_MAX_RUNNING_JOBS`` (an integer >= 1), else :data:`DEFAULT_MAX_RUNNING_JOBS`."""
    raw = environ.get(MAX_RUNNING_JOBS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RUNNING_JOBS
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError("environment", MAX_RUNNING_JOBS_ENV, f"must be an integer >= 1; got {raw!r}")
    return int(raw)


def coalesce_updates(events: list[tuple[str, JobUpdate]]) -> list[tuple[str, JobUpdate]]:
    """``events`` in order without the status changes of jobs that also ended among them (the end is what
    the model keeps; writing the status first would only cost a commit)."""
    ended = {job for job, update in events if update.kind == "end"}
    return [(job, update) for job, update in events if not (update.kind == "status" and job in ended)]


def check_data_info(plugin: DeepForgePlugin, data: Any, what: str, rc: RunConfig | None = None) -> DataInfo:
    """Parse a dataInfo from the model (a user may have typed it) and check it against the operator policy:
    the server reads it, or hands it to a job, only if the policy allows its backend and locations, and
    (``rc``) only with a reader config the policy allows (the dialog's "credentials for inputs" may carry
    fields such as a local ``root``)."""
    info = DataInfo.from_json(data)
    policy = plugin.policy()
    policy.check_data_info(info, what)
    if rc is not None:
        given = rc.secrets.get("storage", {}).get(info.backend, {})
        try:
            policy.apply("storage", info.backend, given, plugin.server_url())
        except PolicyError as exc:
            raise PolicyError(f"{what}: {exc}") from None
    return info


@dataclass
class Running:
    client: ComputeClient
    job_info: dict[str, Any]
    output: list[str]
    thread: threading.Thread
    #: The status last written into the model for this job (a watch's first status repeats ``queued``).
    status: str = ModelStatus.QUEUED
    #: Output arrived since ``stdout`` was last written (:meth:`ExecutionRun._write_live_stdout`).
    unwritten: bool = False
    #: When this run began following the job (``time.monotonic()``).
    since: float = field(default_factory=time.monotonic)


class ExecutionRun:
    def __init__(self, plugin: DeepForgePlugin, execution: str, run_config: RunConfig) -> None:
        self.plugin = plugin
        self.model = plugin.model
        self.execution = execution
        self.run_config = run_config
        self.events: queue.Queue[tuple[str, JobUpdate]] = queue.Queue()
        self.running: dict[str, Running] = {}
        self.failure: str | None = None
        self.graph: Graph = pipeline.read_graph(self.model, execution)
        self.scheduler = Scheduler(self.graph.jobs, self.graph.edges())
        self.configs: dict[str, tuple[Config, Config]] = {}
        self._last_cancel_check = 0.0
        #: Inside :meth:`_commit_batch`: edits are applied at once and committed together.
        self._batching = False
        self._batch_started = 0.0
        #: Ended jobs whose outcome is applied but not committed yet: purged after the commit.
        self._purges: list[tuple[str, Running]] = []
        self._execution_name: str | None = None
        self.max_running = max_running_jobs(os.environ)
        self._live_stdout_at = time.monotonic()

    # ------------------------------------------------------------------------------ configuration
    def job_targets(self, job: PipelineJob) -> Targets:
        """The Operation's choice, else the Execution's (copied from its Pipeline), else the dialog's."""
        own = Targets.from_json(pipeline.execution_targets(self.model, job.operation))
        execution = Targets.from_json(pipeline.execution_targets(self.model, self.execution))
        return self.run_config.targets.overridden_by(execution).overridden_by(own)

    def resolve_configs(self, check_data: bool = True) -> None:
        """Validate every job's storage and compute config before anything starts (ConfigError, PolicyError),
        and (``check_data``) every dataInfo the run would read."""
        for job in self.graph.jobs.values():
            self.configs[job.path] = resolve_targets(self.plugin, self.run_config, self.job_targets(job), job)
        if check_data:
            self.check_data()

    def check_data(self) -> None:
        """Every dataInfo this run would read (Input artifacts, data already on input ports) is within the
        operator policy, before anything is written (PolicyError).  Each is checked again when it is read."""
        for job in self.graph.jobs.values():
            if job.kind == "Input":
                data = input_artifact_data(self.model, job.operation)
                if data:
                    check_data_info(self.plugin, data, f'Input "{job.name}"', self.run_config)
            for port in job.inputs:
                if port.data:
                    check_data_info(self.plugin, port.data, f'input "{port.name}" of "{job.name}"', self.run_config)

    # -------------------------------------------------------------------------------------- the loop
    def start(self) -> None:
        """Reset results of a fresh run and mark the Execution running (one commit)."""

        def edit() -> None:
            for job in self.graph.jobs.values():
                pipeline.set_attributes(self.model, job.path, status=ModelStatus.PENDING, stdout=None, jobInfo=None)
                if job.kind != "Input":
                    for port in job.inputs:
                        pipeline.set_attributes(self.model, port.path, data=None)
            pipeline.set_attributes(
                self.model,
                self.execution,
                status=ModelStatus.RUNNING,
                startTime=now_ms(),
                endTime=None,
                runId=f"Pipeline_{uuid.uuid4().hex}",
            )

        self.model.change(f"Initializing {self._name()} for execution", edit)

    def resume(self) -> None:
        """Re-attach to jobs that were running when the previous plugin process died."""
        for job in self.graph.jobs.values():
            if job.status == ModelStatus.SUCCESS:
                self.scheduler.finish(job.path, JobState.SUCCESS)
            elif job.status in (ModelStatus.QUEUED, ModelStatus.RUNNING) and job.job_info:
                self.resume_job(job.path)
            elif job.status in (ModelStatus.FAIL, ModelStatus.FAILED):
                self.scheduler.finish(job.path, JobState.FAILED)
            elif job.status == ModelStatus.CANCELED:
                self.scheduler.finish(job.path, JobState.CANCELED)

    def resume_job(self, job_path: str) -> None:
        """Follow a job started by an earlier run, from the ``jobInfo`` stored on it."""
        job = self.graph.jobs[job_path]
        _, compute_cfg = self.configs[job_path]
        client = compute.get_client(compute_cfg.backend, compute_cfg.to_dict())
        self.scheduler.start(job_path)
        self._watch(job_path, client, json.loads(job.job_info))
        log.info("re-attached to job %s (%s)", job.name, compute_cfg.backend)

    def reset_job(self, job_path: str) -> None:
        """Edit (inside a change): make a finished job pending again; its inputs stay as recorded."""
        pipeline.set_attributes(self.model, job_path, status=ModelStatus.PENDING, stdout=None, jobInfo=None)
        pipeline.set_attributes(self.model, self.execution, status=ModelStatus.RUNNING, endTime=None)

    def run(self, execution_status: bool = True) -> JobState:
        """Until the run is over; ``execution_status=False`` (one re-run job) derives it from all jobs.

        Each turn records every event that arrived and starts every job that became ready, and commits all
        of it together: one commit per turn instead of one per event (a job's success and the start of the
        jobs it feeds share one).
        """
        events: list[tuple[str, JobUpdate]] = []
        while True:
            self._check_cancel()
            with self._commit_batch():
                for job_path, update in coalesce_updates(events):
                    self._record(job_path, update)
                for job in self.scheduler.ready():
                    if len(self.running) >= self.max_running:
                        break  # the rest start as running jobs end
                    self._start_job(self.graph.jobs[job])
                self._write_live_stdout()
            if self.scheduler.finished:
                break
            events = self._next_events()
        return self._finish(execution_status)

    def _next_events(self) -> list[tuple[str, JobUpdate]]:
        """The next event (waiting up to the cancel poll period) and every other one already queued.

        While no job has ended among them, it waits up to :data:`STATUS_GRACE_SECONDS` more: a short job's
        ``running`` then shares the commit of its end (coalesced away) instead of costing one of its own.
        """
        try:
            events = [self.events.get(timeout=CANCEL_POLL_SECONDS)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + STATUS_GRACE_SECONDS
        while True:
            try:
                events.append(self.events.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0 or any(update.kind == "end" for _, update in events):
                return events
            try:
                events.append(self.events.get(timeout=left))
            except queue.Empty:
                return events

    @contextmanager
    def _commit_batch(self) -> Iterator[None]:
        """Within it, :meth:`_change` applies each edit at once (later reads see it) and the commit comes at
        the end, or after :data:`COMMIT_BATCH_SECONDS`, for all edits so far (:meth:`ModelSession.apply`)."""
        self._batch_started = time.monotonic()
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            self._flush_batch()

    def _change(self, message: str, edit: Callable[[], object]) -> None:
        if not self._batching:
            self.model.change(message, edit)
            return
        self.model.apply(message, edit)
        if time.monotonic() - self._batch_started >= COMMIT_BATCH_SECONDS:
            self._flush_batch()

    def _flush_batch(self) -> None:
        messages = self.model.applied
        self._batch_started = time.monotonic()
        if len(messages) > 1:
            shown = "; ".join(messages[:COMMIT_MESSAGE_UPDATES])
            more = len(messages) - COMMIT_MESSAGE_UPDATES
            self.model.flush(
                f"{self._name()}: {len(messages)} updates: {shown}" + (f"; and {more} more" if more > 0 else "")
            )
        else:
            self.model.flush()
        self._purge_recorded()

    # ------------------------------------------------------------------------------------ starting
    def _start_job(self, job: PipelineJob) -> None:
        self.scheduler.start(job.path)
        try:
            if job.kind == "Input":
                self._run_input(job)
            elif job.kind == "Output":
                self._run_output(job)
            else:
                self._submit(job)
        except Exception as exc:
            log.exception("job %s could not start", job.name)
            self._job_failed(job, f"{type(exc).__name__}: {redact(str(exc))}", stdout="")

    def _run_input(self, job: PipelineJob) -> None:
        op = self.model.node(job.operation)
        artifact = self.model.core.load_pointer(op, "artifact")
        if artifact is None:
            raise LookupError(f'Input "{job.name}" has no artifact chosen')
        data = str(self.model.attr(artifact, "data") or "")
        type_name = str(self.model.attr(artifact, "type") or "")
        name = self.model.attr(artifact, "name")
        if not data:
            raise LookupError(f'Input "{job.name}": artifact "{name}" holds no data')
        check_data_info(self.plugin, data, f'Input "{job.name}" (artifact "{name}")')

        def edit() -> None:
            for port in job.outputs:
                self._write_output(port.path, data, type_name)
            stdout = f"Passing data reference {name}\n"
            pipeline.set_attributes(self.model, job.path, status=ModelStatus.SUCCESS, stdout=stdout)

        self._change(f"{job.name}: passing {name}", edit)
        self.scheduler.finish(job.path, JobState.SUCCESS)

    def _run_output(self, job: PipelineJob) -> None:
        """Save every arrived input into MyArtifacts: copied to ``<project>/artifacts/<name>`` in the storage
        that holds it (an execution's own files are overwritten when it runs again), as a new Data node."""
        current = pipeline.read_job(self.model, job.path)
        op = self.model.node(job.operation)
        save_name = str(self.model.attr(op, "saveName") or "")
        saved: dict[str, str] = {}
        for port in current.inputs:
            if not port.data:
                continue
            name = save_name or port.name
            info = check_data_info(self.plugin, port.data, f'Output "{job.name}" input "{port.name}"')
            writer = self._writer_config(port)
            if writer is not None and writer.backend == info.backend:
                client = storage.get_client(writer.backend, writer.to_dict())
                # <project>/artifacts/<fresh>/<name>: an earlier artifact of this name keeps its key (and bytes)
                info = client.copy(info, storage.fresh_key(f"{self.plugin.project_id()}/artifacts", name))
            saved[port.path] = json.dumps(info.to_json(), sort_keys=True)

        def edit() -> None:
            artifacts = pipeline.root_container(self.model, "MyArtifacts")
            for port in current.inputs:
                if port.path not in saved:
                    continue
                node = self.model.core.copy_node(self.model.node(port.path), artifacts)
                self.model.core.set_attribute(node, "name", save_name or port.name)
                self.model.core.set_attribute(node, "data", saved[port.path])
                self.model.core.set_attribute(node, "createdAt", now_ms())
            stdout = "Saved outputs to MyArtifacts\n"
            pipeline.set_attributes(self.model, job.path, status=ModelStatus.SUCCESS, stdout=stdout)

        self._change(f"{job.name}: saving artifacts", edit)
        self.scheduler.finish(job.path, JobState.SUCCESS)

    def _submit(self, job: PipelineJob) -> None:
        current = pipeline.read_job(self.model, job.path)
        storage_cfg, compute_cfg = self.configs[job.path]
        missing = [p.name for p in current.inputs if not p.data]
        if missing:
            raise LookupError(f'operation "{job.name}": no data arrived for input(s) {", ".join(missing)}')
        inputs = {
            p.name: (
                check_data_info(self.plugin, p.data, f'input "{p.name}" of "{job.name}"'),
                self._input_config(p, storage_cfg),
            )
            for p in current.inputs
        }
        storage_dir = f"{self.plugin.project_id()}/executions/{self._name()}/{job_slug(job)}"
        with uploaded_bundle(self.plugin, current, inputs, storage_cfg, storage_dir) as (bundle, bundle_hash):
            client = compute.get_client(compute_cfg.backend, compute_cfg.to_dict())
            job_info = client.start_job(self._compute_job(job, bundle, bundle_hash))
        self._change(
            f"{job.name} operation in {self._name()} is now queued",
            lambda: pipeline.set_attributes(
                self.model,
                job.path,
                status=ModelStatus.QUEUED,
                jobInfo=json.dumps(job_info, sort_keys=True),
                execFiles=bundle_hash,
                stdout=None,
            ),
        )
        self._watch(job.path, client, job_info)

    def _compute_job(self, job: PipelineJob, bundle: Path, bundle_hash: str) -> ComputeJob:
        return ComputeJob(
            bundle=bundle,
            hash=bundle_hash,
            name=f"DeepForge Job: {job.name} ({self._name()}) in {self.plugin.project_id()}",
            meta={
                "job": {"id": job.path, "name": job.name},
                "execution": {"id": self.execution, "name": self._name()},
                "projectId": self.plugin.project_id(),
                "branch": self.model.branch,
            },
        )

    def _writer_config(self, port: pipeline.Port) -> Config | None:
        """The storage config of the job whose output reached ``port`` (None for pipeline inputs)."""
        for src, dst in self.graph.connections:
            if dst != port.path:
                continue
            upstream = self.graph.job_of_port(src)
            if upstream in self.configs and self.graph.jobs[upstream].kind == "Operation":
                return self.configs[upstream][0]
        return None

    def _input_config(self, port: pipeline.Port, storage_cfg: Config) -> dict[str, Any] | None:
        """How to read an input: with the config of the storage that wrote it (an upstream job may use the
        same backend with another root or bucket); for pipeline inputs, the dialog's secrets for its backend.
        ``None`` lets the bundle use the job's own storage config (DeepForge's rule)."""
        writer = self._writer_config(port)
        if writer is not None:
            return writer.to_dict()
        backend = DataInfo.from_json(port.data).backend
        if backend == storage_cfg.backend:
            return None
        # The job resolves the rest on its own host; what the user gave must still be within the policy,
        # and the operator's fixed values (a local root...) replace the job's defaults.
        given = dict(self.run_config.secrets.get("storage", {}).get(backend, {}))
        return self.plugin.policy().apply("storage", backend, given, self.plugin.server_url())

    def _watch(self, job_path: str, client: ComputeClient, job_info: dict[str, Any]) -> None:
        def follow() -> None:
            try:
                for update in client.watch(job_info):
                    self.events.put((job_path, update))
            except Exception as exc:
                self.events.put((job_path, JobUpdate("end", JobStatus.FAILED, reason=f"lost the job: {exc}")))

        thread = threading.Thread(target=follow, name=f"watch {job_path}", daemon=True)
        self.running[job_path] = Running(client, job_info, [], thread)
        thread.start()

    # ----------------------------------------------------------------------------------- recording
    def _record(self, job_path: str, update: JobUpdate) -> None:
        job = self.graph.jobs[job_path]
        entry = self.running.get(job_path)
        if entry is None:
            return
        if update.kind == "output":
            entry.output.append(update.output)
            entry.unwritten = True
            self.plugin.notify(f"stdout_update/{job_path}")
        elif update.kind == "status" and update.status is not None:
            status = str(update.status)
            if status == entry.status:
                return
            entry.status = status
            self._change(
                f"{job.name} operation in {self._name()} is now {status}",
                lambda: pipeline.set_attributes(self.model, job_path, status=status),
            )
        elif update.kind == "end":
            del self.running[job_path]
            self._ended(job, entry, update)

    def _write_live_stdout(self) -> None:
        """Every :data:`LIVE_STDOUT_SECONDS`: the output so far of each running job that printed since, into its
        ``stdout`` (secrets redacted, DeepForge's metadata lines left out as at the end)."""
        now = time.monotonic()
        if now - self._live_stdout_at < LIVE_STDOUT_SECONDS:
            return
        self._live_stdout_at = now
        for job_path, entry in self.running.items():
            if not entry.unwritten or now - entry.since < LIVE_STDOUT_AFTER_SECONDS:
                continue
            entry.unwritten = False
            text, _ = job_metadata.parse(redact("".join(entry.output)))
            self._change(
                f"{self.graph.jobs[job_path].name} operation in {self._name()} printed",
                functools.partial(pipeline.set_attributes, self.model, job_path, stdout=text),
            )

    def _console(self, entry: Running) -> str:
        try:
            return entry.client.get_console_output(entry.job_info)
        except Exception as exc:
            log.warning("could not read the final console output: %s", exc)
            return "".join(entry.output)

    def _ended(self, job: PipelineJob, entry: Running, update: JobUpdate) -> None:
        stdout, plots = job_metadata.parse(redact(self._console(entry)))  # DeepForge's metadata lines (plots)
        if plots:  # -> Graph nodes of the Job, whatever the outcome (a job that plotted, then failed, keeps them)
            try:
                self.model.change(
                    f"{job.name} operation in {self._name()} plotted",
                    lambda: job_metadata.apply(self.model, job.path, plots),
                )
            except Exception as exc:  # a plot never fails its job: warn, drop the half-written Graphs, go on
                self.model.discard()
                log.warning(
                    "%s operation in %s: its plots were not recorded (%s: %s)",
                    job.name,
                    self._name(),
                    type(exc).__name__,
                    exc,
                )
        if update.status == JobStatus.SUCCESS:
            try:
                results = entry.client.get_results_info(entry.job_info)
                missing = [p.name for p in job.outputs if p.name not in results]
                if missing:
                    raise LookupError(f"the job reported no result for output(s) {', '.join(missing)}")
            except Exception as exc:
                self._job_failed(job, f"{type(exc).__name__}: {exc}", stdout)
                return

            def edit() -> None:
                for port in job.outputs:
                    result = results[port.name]
                    self._write_output(port.path, result["dataInfo"], str(result.get("type") or ""), job.operation)
                pipeline.set_attributes(self.model, job.path, status=ModelStatus.SUCCESS, stdout=stdout, jobInfo=None)

            self._change(f"{job.name} operation in {self._name()} succeeded", edit)
            self.scheduler.finish(job.path, JobState.SUCCESS)
        elif update.status == JobStatus.CANCELED:
            self._change(
                f"{job.name} operation in {self._name()} was canceled",
                lambda: pipeline.set_attributes(
                    self.model, job.path, status=ModelStatus.CANCELED, stdout=stdout, jobInfo=None
                ),
            )
            self.scheduler.finish(job.path, JobState.CANCELED)
        else:
            self._job_failed(job, update.reason or f"finished as {update.status}", stdout)
        self._purge_when_recorded(job.name, entry)

    def _purge_when_recorded(self, name: str, entry: Running) -> None:
        """Purge an ended job's files once the commit that records its outcome is made, not before: a
        plugin killed in between resumes from the ``jobInfo`` still on the branch and must find the finished
        job there (the soak run's plugin_kill lost a success as "local compute: no job ..." this way)."""
        self._purges.append((name, entry))
        if not self._batching:
            self._purge_recorded()

    def _purge_recorded(self) -> None:
        purges, self._purges = self._purges, []
        for name, entry in purges:
            try:
                entry.client.purge_job(entry.job_info)
            except Exception as exc:
                log.warning("could not purge job %s: %s", name, exc)

    def _write_output(self, port_path: str, data_info: Any, type_name: str, operation: str | None = None) -> None:
        """Write an output port (with its provenance when ``operation`` made it) and forward both to every input
        port connected to it."""
        pipeline.write_port(self.model, port_path, data_info, type_name)
        if operation is not None:
            pipeline.record_provenance(self.model, port_path, operation)
        for dst in self.graph.consumers(port_path):
            pipeline.write_port(self.model, dst, data_info, type_name)
            pipeline.copy_provenance(self.model, port_path, dst)

    def _job_failed(self, job: PipelineJob, reason: str, stdout: str) -> None:
        reason = redact(reason)
        message = f'Operation "{job.name}" failed: {reason}'
        self.failure = self.failure or message
        text = stdout + ("" if not stdout or stdout.endswith("\n") else "\n") + message + "\n"
        self._change(
            f"{job.name} operation in {self._name()} failed",
            lambda: pipeline.set_attributes(self.model, job.path, status=ModelStatus.FAIL, stdout=text, jobInfo=None),
        )
        self.scheduler.finish(job.path, JobState.FAILED)

    # ------------------------------------------------------------------------------------ cancel
    def _check_cancel(self) -> None:
        if self.scheduler.cancel_requested or time.monotonic() - self._last_cancel_check < CANCEL_POLL_SECONDS:
            return
        self._last_cancel_check = time.monotonic()
        self.model.refresh()
        status = self.model.attr(self.model.node(self.execution), "status")
        # the run wrote `running` when it started: `canceled` now is someone's cancel request
        if status == ModelStatus.CANCELED or self.plugin.aborted():
            self.cancel()

    def cancel(self) -> None:
        log.info("canceling execution %s: %d running job(s)", self._name(), len(self.running))
        self.scheduler.request_cancel()
        for job_path, entry in self.running.items():
            try:
                entry.client.cancel_job(entry.job_info)
            except Exception as exc:
                log.warning("could not cancel job %s: %s", job_path, exc)

    # ------------------------------------------------------------------------------------ the end
    def _finish(self, from_scheduler: bool = True) -> JobState:
        outcome = self.scheduler.outcome()
        status = ModelStatus(outcome)
        if not from_scheduler:
            graph = pipeline.read_graph(self.model, self.execution)
            statuses = {j.status for j in graph.jobs.values()}
            if statuses == {ModelStatus.SUCCESS}:
                status = ModelStatus.SUCCESS
            else:
                status = ModelStatus.CANCELED if ModelStatus.CANCELED in statuses else ModelStatus.FAILED

        def edit() -> None:
            for job in self.graph.jobs.values():
                if self.scheduler.state[job.path] == JobState.PENDING and outcome != JobState.SUCCESS:
                    left = ModelStatus.CANCELED if outcome == JobState.CANCELED else ModelStatus.PENDING
                    pipeline.set_attributes(self.model, job.path, status=left)
            pipeline.set_attributes(self.model, self.execution, status=status, endTime=now_ms(), executionId=None)

        self.model.change(f"Pipeline execution {self._name()} finished: {outcome}", edit)
        return outcome

    def _name(self) -> str:
        """The Execution's name, read once per run: every commit message and storage path of the run uses it
        (a rename while it runs shows in the next run)."""
        if self._execution_name is None:
            self._execution_name = str(self.model.attr(self.model.node(self.execution), "name"))
        return self._execution_name
