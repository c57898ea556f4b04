"""The worker daemon: poll the executor, run what it hands out, report, repeat.

Read :meth:`Worker.work` top to bottom; it is the whole protocol (docs/protocols.md, "The executor: the worker loop"):

    every refreshPeriod:
        POST /rest/executor/worker {clientId, availableProcesses, labels, runningJobs}
        cancel jobsToCancel           (SIGINT to the job's process group, SIGKILL after a grace)
        start  jobsToStart            (one thread per job, each pinned to a slot)
        probe  labelJobs not yet run  (a label is added when its probe job does not FAILED_TO_EXECUTE)

Failure handling: a server or network error is logged once when the state changes (not on every poll),
the next poll waits with exponential backoff up to ``max_backoff``, and the loop never exits on an error.
Every answer is validated before it is used (:func:`parse_answer`): a wrong-shaped field is logged once per
kind of mistake and skipped, the rest of the answer is still used, and the server's ``refreshPeriod`` is
clamped to ``[MIN_REFRESH, maxRefresh]`` seconds, so a server can neither make the worker poll in a tight loop
nor stop it polling.

After every poll the daemon rewrites ``<work dir>/status.json`` (its slots and jobs, the last poll) for
``deepforge-worker status``; its Prometheus metrics (``--metrics-port``) are :mod:`.metrics`.

SIGTERM drains: the worker stops claiming (``availableProcesses: 0``; a job handed to us by the poll the stop
raced is still run) but keeps polling, so the server
neither requeues its jobs nor loses their cancel requests; running jobs may finish for ``drain_timeout``
seconds, then they are canceled and reported, and the daemon exits 0.  A second SIGTERM (or SIGINT) cancels
at once.  Each final report is written to disk before it is posted, so a SIGKILL loses nothing that had
finished (see :func:`~deepforge_worker.reports.replay_pending_reports`).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from deepforge_adapters.hashing import is_sha1_hex
from deepforge_adapters.timestamps import now_iso
from deepforge_adapters.webgme.executor import ExecutorStatus
from deepforge_adapters.webgme.protocols import BlobAPI, ExecutorAPI

from .context import JobContext
from .execution import JobExecution
from .metrics import WorkerMetrics, write_status
from .orphans import reap_orphaned_jobs
from .reports import refuse_bad_job, replay_pending_reports
from .settings import WorkerSettings
from .slots import Slot, SlotPool

log = logging.getLogger(__name__)

#: The Node worker's refresh period until the server first answers.
DEFAULT_REFRESH = 60.0
#: The shortest wait between polls, whatever ``refreshPeriod`` the server asks for (seconds).  The longest
#: is the ``maxRefresh`` setting (default 60 s).  0.2 s is the fastest refresh a real deployment (or this
#: project's tests) configures; a server asking for 1 ms would otherwise get ~800 polls a second.
MIN_REFRESH = 0.2
#: A gap between two answered polls longer than this many refresh periods is a stall: the server requeues
#: a worker's jobs after 5, so the running jobs are re-read (:meth:`Worker.drop_jobs_given_away`).
STALL_REFRESHES = 3


class MalformedAnswers:
    """Logs a wrong-shaped server answer once per kind of mistake (not once per poll)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.count = 0

    def report(self, kind: str, detail: str) -> None:
        self.count += 1
        if kind not in self.seen:
            self.seen.add(kind)
            log.warning("executor answer: %s (logged once; later ones alike are not)", detail)


@dataclass
class PollAnswer:
    """The validated fields of one ``POST /worker`` answer."""

    jobs_to_start: list[str] = field(default_factory=list)
    jobs_to_cancel: list[str] = field(default_factory=list)
    label_jobs: dict[str, str] = field(default_factory=dict)
    #: Seconds, already clamped; None when the answer had no usable ``refreshPeriod``.
    refresh: float | None = None


def _hash_list(value: Any, name: str, bad: MalformedAnswers) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        bad.report(f"{name}-type", f"'{name}' is {type(value).__name__}, not a list of job hashes; skipped")
        return []
    hashes = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            hashes.append(item)
        else:
            bad.report(f"{name}-item", f"'{name}[{i}]' is {type(item).__name__} {item!r:.60}, not a job hash; skipped")
    return hashes


def parse_answer(raw: Any, bad: MalformedAnswers, max_refresh: float) -> PollAnswer | None:
    """Validate a ``POST /worker`` answer; None when it is not a JSON object at all (a failed poll)."""
    if not isinstance(raw, dict):
        bad.report("answer-type", f"the answer is {type(raw).__name__} {raw!r:.60}, not a JSON object; skipped")
        return None
    answer = PollAnswer(
        jobs_to_start=_hash_list(raw.get("jobsToStart"), "jobsToStart", bad),
        jobs_to_cancel=_hash_list(raw.get("jobsToCancel"), "jobsToCancel", bad),
    )
    labels = raw.get("labelJobs")
    if isinstance(labels, dict):
        for label, probe in labels.items():
            if isinstance(probe, str) and probe:
                answer.label_jobs[str(label)] = probe
            else:
                bad.report(
                    "labelJobs-item", f"'labelJobs.{label:.40}' is {type(probe).__name__}, not a job hash; skipped"
                )
    elif labels is not None:
        bad.report(
            "labelJobs-type", f"'labelJobs' is {type(labels).__name__}, not an object of label: job hash; skipped"
        )
    period = raw.get("refreshPeriod")
    if period is not None:
        if isinstance(period, bool) or not isinstance(period, int | float) or not math.isfinite(period):
            bad.report(
                "refreshPeriod-type", f"'refreshPeriod' {period!r:.40} is not a finite number of milliseconds; skipped"
            )
        else:
            seconds = period / 1000.0
            answer.refresh = min(max(seconds, MIN_REFRESH), max_refresh)
            if answer.refresh != seconds:
                bad.report(
                    "refreshPeriod-low" if seconds < MIN_REFRESH else "refreshPeriod-high",
                    f"'refreshPeriod' {period!r} ms is outside [{MIN_REFRESH * 1000:g}, {max_refresh * 1000:g}] ms; "
                    f"polling every {answer.refresh:g} s instead",
                )
    return answer


def default_client_id() -> str:
    """``<hostname>_<pid>``, as the Node worker names itself."""
    return f"{socket.gethostname() or 'unknown'}_{os.getpid()}"


class ConnectionState:
    """Logs server errors once per change of state (reachable, not reachable) instead of once per poll.

    One outage often fails with several messages (a server going down aborts the poll in flight, then refuses
    the next ones): the first is the warning, a different one later is logged at debug level only."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        message = f"{type(exc).__name__}: {exc}"
        if self.error is None:
            log.warning("executor poll failed (%s); retrying with backoff", message)
        elif message != self.error:
            log.debug("executor poll still failing, now with: %s", message)
        self.error = message

    def ok(self) -> None:
        if self.error is not None:
            log.info("executor reachable again after %d failed poll(s)", self.failures)
        self.error, self.failures = None, 0


class Worker:
    """One daemon: a slot pool, a poll loop and the jobs it runs."""

    def __init__(
        self,
        settings: WorkerSettings,
        executor: ExecutorAPI,
        blob: BlobAPI,
        *,
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.client_id = client_id or default_client_id()
        self.pool = SlotPool(settings.processes, settings.gpus, settings.labels)
        self.metrics = WorkerMetrics()
        self.metrics.add_slots(self.pool.slots)
        job_env = {"DEEPFORGE_GME_API_TOKEN": settings.token} if settings.token else {}
        self.ctx = JobContext(
            executor=executor,
            blob=blob,
            client_id=self.client_id,
            host=settings.host,
            work_dir=settings.work_dir,
            cache_dir=settings.cache_dir,
            cancel_grace=settings.cancel_grace,
            max_bundle_bytes=settings.max_bundle_bytes,
            job_env=job_env,
            metrics=self.metrics,
        )
        self.running: dict[str, JobExecution] = {}
        self.probed: set[str] = set()
        self.refresh = min(DEFAULT_REFRESH, settings.max_refresh)
        self.connection = ConnectionState()
        self.malformed = MalformedAnswers()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        #: The job threads still running; each removes itself when its job is done, so a daemon that runs jobs
        #: for months keeps none of the finished ones.
        self.job_threads: set[threading.Thread] = set()
        self.stopping = False
        self.stop_deadline: float | None = None
        self.polls = 0
        self.started = now_iso()
        #: The last poll: when, and its error if it failed (the status file shows it).
        self.last_poll: dict[str, Any] | None = None
        self._claims_unknown = False
        #: Whether the server may have given our running jobs away (after a failed poll or a stall) and
        #: when the last poll succeeded (monotonic).
        self._ownership_unknown = False
        self._last_ok_poll: float | None = None

    # --- the loop ------------------------------------------------------------------------------------
    def work(self, max_polls: int | None = None) -> int:
        """Poll until stopped (or ``max_polls`` polls, for tests); returns the exit code (0)."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        self.settings.cache_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "worker %s polling %s (slots %d, labels %s)",
            self.client_id,
            self.settings.host,
            len(self.pool.slots),
            self.pool.labels,
        )
        reap_orphaned_jobs(self.settings.work_dir)
        replay_pending_reports(self.ctx)
        while True:
            answer = self.poll()
            if answer is not None:
                self.cancel_jobs(answer.jobs_to_cancel)
                self.start_jobs(answer.jobs_to_start)  # already ours on the server, even if a stop came meanwhile
                self.drop_jobs_given_away()
                if not self.stopping:
                    self.adopt_lost_claims()
                    self.start_label_probes(answer.label_jobs)
            self.write_status()
            if self.stopping and self._drained():
                break
            if max_polls is not None and self.polls >= max_polls:
                break
            self._sleep(self._next_wait())
        self._join_jobs()
        self.write_status()
        log.info("worker %s stopped", self.client_id)
        return 0

    def poll(self) -> PollAnswer | None:
        """One ``POST /rest/executor/worker``; None on any error (logged once per state change).

        An answer that is not a JSON object counts as a failed poll (the server may have claimed jobs in
        it, so lost claims are looked for); wrong-shaped fields are skipped (see :func:`parse_answer`).
        """
        self.polls += 1
        self.metrics.polls.inc()
        with self._lock:
            running = list(self.running)
        try:
            response = self.executor.poll_worker(self.client_id, self.pool.available, self.pool.labels, running)
        except Exception as exc:
            self.connection.failed(exc)
            self._poll_failed(f"{type(exc).__name__}: {exc}")
            return None
        answer = parse_answer(response, self.malformed, self.settings.max_refresh)
        if answer is None:
            self._poll_failed("the answer is not a JSON object")
            return None
        self.connection.ok()
        self.last_poll = {"time": now_iso(), "ok": True}
        now = time.monotonic()
        if self._last_ok_poll is not None and now - self._last_ok_poll > STALL_REFRESHES * self.refresh:
            self._ownership_unknown = True  # frozen, starved or cut off: the server may have requeued our jobs
        self._last_ok_poll = now
        if answer.refresh is not None:
            self.refresh = answer.refresh
        return answer

    def cancel_jobs(self, hashes: list[str]) -> None:
        for job_hash in hashes:
            with self._lock:
                job = self.running.get(job_hash)
            if job is not None and not job.canceled:
                job.cancel()

    def start_jobs(self, hashes: list[str]) -> None:
        for job_hash in hashes:
            if not is_sha1_hex(job_hash):  # it would become a path: fail it on the server, never run it
                threading.Thread(target=refuse_bad_job, args=(self.ctx, job_hash), daemon=True).start()
                continue
            with self._lock:
                if job_hash in self.running:
                    continue
            slot = self.pool.acquire(job_hash, claimed=True)
            if slot is None:
                # The server hands out at most what we reported free, so this only happens when a lost claim
                # is adopted while the slots are busy: look for it again after the next poll.
                log.warning("job %s: claimed for us but no slot is free yet; retrying after the next poll", job_hash)
                self._claims_unknown = True
                continue
            self._spawn(JobExecution(self.ctx, {"hash": job_hash}, slot), slot)

    def adopt_lost_claims(self) -> None:
        """After a failed poll, start the jobs the server assigned to us in an answer we never received.

        ``POST /worker`` claims jobs on the server before it answers; if the answer is lost (a read timeout,
        a dropped connection) those jobs stay RUNNING under our client id and nothing would ever run or
        requeue them, since we keep polling.  So after any failed poll, once the server answers again, we
        look for RUNNING jobs assigned to us that we do not run, and run them.
        """
        if not self._claims_unknown:
            return
        try:
            jobs = self.executor.list_jobs(status=ExecutorStatus.RUNNING)
        except Exception as exc:
            log.debug("listing running jobs to find lost claims failed: %s", exc)
            return
        self._claims_unknown = False
        if not isinstance(jobs, Mapping):
            self.malformed.report("jobList-type", f"the job list is {type(jobs).__name__}, not an object; skipped")
            return
        with self._lock:
            known = set(self.running)
        lost = []
        for job_hash, info in jobs.items():
            if not isinstance(info, Mapping):
                self.malformed.report(
                    "jobList-item", f"job list entry {job_hash!r:.60} is {type(info).__name__}, not a JobInfo; skipped"
                )
            elif info.get("worker") == self.client_id and job_hash not in known:
                lost.append(job_hash)
        if lost:
            log.warning("adopting %d job(s) claimed for us in a poll answer that was lost: %s", len(lost), lost)
            self.start_jobs(lost)

    def drop_jobs_given_away(self) -> None:
        """After a failed poll or a stall, stop the running jobs the server no longer counts as ours.

        The server requeues the jobs of a worker it has not heard from for 5 refresh periods (a SIGSTOP, a
        partition, a starved machine) and hands them to the next worker that polls.  The final report of our
        copy is dropped then (:func:`.reports.post_report`), but the copy itself would keep its slot and run
        the job a second time to its end: the soak run saw all 8 slots of a fleet held by such copies for 12
        minutes.  So each running job is re-read once, and one that is not RUNNING under our client id
        (requeued, claimed by another worker, or ended there) is stopped without a report.
        """
        if not self._ownership_unknown:
            return
        with self._lock:
            running = dict(self.running)
        for job_hash, job in running.items():
            try:
                info = self.executor.get_info(job_hash)
            except Exception as exc:
                log.debug("re-reading job %s after a gap failed: %s; retried after the next poll", job_hash, exc)
                return
            status, owner = info.get("status"), info.get("worker")
            if status == ExecutorStatus.RUNNING and owner in (self.client_id, None):
                continue
            if job.reported or job.canceled:
                continue
            where = f"given to {owner}" if owner and owner != self.client_id else "requeued"
            job.abandon(f"the server {where} it while we were away (now {status})")
        self._ownership_unknown = False

    def start_label_probes(self, label_jobs: Mapping[str, str]) -> None:
        """Run each advertised label probe once; its label is added unless it ends ``FAILED_TO_EXECUTE``."""
        for label, probe_hash in label_jobs.items():
            if label in self.probed or label in self.pool.labels:
                continue
            if not is_sha1_hex(probe_hash):
                log.error("label probe %s: job hash %r is not 40 lowercase hex; not probing", label, probe_hash)
                self.probed.add(label)
                continue
            slot = self.pool.acquire(f"label:{label}")
            if slot is None:
                return
            self.probed.add(label)
            probe = JobExecution(self.ctx, {"hash": probe_hash}, slot, report=False)
            self._spawn(probe, slot, label=label)

    # --- stopping ------------------------------------------------------------------------------------
    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """First call: drain.  Second call: cancel everything now."""
        if not self.stopping:
            log.info(
                "stop requested: draining %d running job(s) for up to %.0fs",
                len(self.running),
                self.settings.drain_timeout,
            )
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.settings.drain_timeout
            self.pool.close()
        else:
            log.info("second stop request: canceling running jobs now")
            self.stop_deadline = time.monotonic()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def _drained(self) -> bool:
        with self._lock:
            jobs = list(self.running.values())
        if not jobs:
            return True
        if self.stop_deadline is not None and time.monotonic() >= self.stop_deadline:
            for job in jobs:
                if not job.canceled:
                    log.info("job %s: drain timeout, canceling", job.hash)
                    job.cancel()
        return False

    def _poll_failed(self, error: str) -> None:
        self._claims_unknown = True
        self._ownership_unknown = True
        self.metrics.poll_errors.inc()
        self.last_poll = {"time": now_iso(), "ok": False, "error": error}

    # --- what an operator sees ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``deepforge-worker status`` prints (see :mod:`.metrics`)."""
        return {
            "clientId": self.client_id,
            "pid": os.getpid(),
            "host": self.settings.host,
            "started": self.started,
            "stopping": self.stopping,
            "labels": self.pool.labels,
            "polls": self.polls,
            "lastPoll": self.last_poll,
            "slots": self.pool.snapshot(),
            "jobsEnded": self.metrics.counts(),
        }

    def write_status(self) -> None:
        try:
            write_status(self.settings.work_dir, self.status())
        except OSError as exc:  # a full disk must not stop the daemon; the metrics still tell
            log.debug("cannot write the status file: %s", exc)

    # --- helpers -------------------------------------------------------------------------------------
    def _spawn(self, job: JobExecution, slot: Slot, label: str | None = None) -> None:
        if label is None:
            with self._lock:
                self.running[job.hash] = job
        thread = threading.Thread(target=self._run_job, args=(job, slot, label), name=f"job-{job.hash[:8]}")
        with self._lock:
            self.job_threads.add(thread)
        thread.start()

    def _run_job(self, job: JobExecution, slot: Slot, label: str | None) -> None:
        self.metrics.slot_busy(slot, True)
        began = time.monotonic()
        try:
            status = job.run()
            if label is None:
                self.metrics.job_ended(str(status), time.monotonic() - began)
            if label is not None:
                if status != ExecutorStatus.FAILED_TO_EXECUTE:
                    self.pool.add_labels([label])
                    log.info("label probe %s: %s; labels now %s", label, status, self.pool.labels)
                else:
                    log.warning("label probe %s failed (%s): %s", label, status, job.reason)
        finally:
            with self._lock:
                if label is None:
                    self.running.pop(job.hash, None)
            self.pool.release(slot)
            self.metrics.slot_busy(slot, False)
            self._wake.set()  # report the freed slot on the next poll without waiting a full period
            with self._lock:
                self.job_threads.discard(threading.current_thread())

    def _next_wait(self) -> float:
        if self.connection.failures:
            return min(self.refresh * 2 ** min(self.connection.failures - 1, 10), self.settings.max_backoff)
        return self.refresh

    def _sleep(self, seconds: float) -> None:
        """Sleep until the next poll; a finished job or a stop request wakes it early (once)."""
        self._wake.wait(seconds if not self.stopping else min(seconds, 1.0))
        self._wake.clear()

    def _join_jobs(self) -> None:
        with self._lock:
            threads = list(self.job_threads)
        for thread in threads:
            thread.join()
