"""One job, from claim to final report (the WebGME executor protocol, §3.5 of the reference).

Steps, each with the executor status it ends in when it fails:

1. blob metadata of the job hash ........................ ``FAILED_TO_GET_SOURCE_METADATA``
2. ``/rest/blob/view/<hash>/`` streamed to ``source.zip`` . ``FAILED_CREATING_SOURCE_ZIP``
3. safe unzip (no absolute paths, ``..``, escaping links, bombs) ``FAILED_UNZIP``
4. ``executor_config.json`` validated ...................... ``FAILED_EXECUTOR_CONFIG``
5. ``cmd args`` in its own process group, cwd = job dir, stdout and stderr merged into ``job_stdout.txt``
   and the live output queue ............................... ``FAILED_TO_EXECUTE`` / ``CANCELED``
6. result files archived per ``resultArtifacts`` ......... ``FAILED_TO_ARCHIVE_FILE`` / ``FAILED_TO_SAVE_ARTIFACT``
7. output flushed, then one final ``POST /update`` with status, times, ``resultHashes``, ``outputNumber``.

Every failure also writes its reason into ``job_stdout.txt`` (and the live output), so a user sees *why*
instead of a bare status code.  What the Node worker got wrong and this fixes: stderr is kept, the whole
process group is canceled (SIGINT, then SIGKILL), live output starts at #0 and is capped per chunk, and a
late report for a job the server gave to another worker is not posted (see :meth:`JobExecution.report`).

An I/O error (a full disk, EIO) anywhere in a job fails that job with a readable reason and frees its slot:
when ``job_stdout.txt`` cannot be written the job's process group is killed and the job ends
``FAILED_TO_EXECUTE``; the reason still reaches the live output, and the final report is posted even when it
cannot be saved to disk first.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deepforge_adapters.errors import BundleError, NotFoundError, SecretsError, WebGMEError
from deepforge_adapters.hashing import check_sha1_hex
from deepforge_adapters.jobs.archive import safe_extract
from deepforge_adapters.jobs.credentials import (
    CredentialPipe,
    Credentials,
    is_runner_command,
    job_environment,
    open_job_credentials,
)
from deepforge_adapters.jobs.layout import EXECUTOR_CONFIG_FILE as EXECUTOR_CONFIG
from deepforge_adapters.jobs.layout import (
    STDOUT_ARTIFACT,
    STDOUT_FILE,
    ExecutorConfig,
    ResultArtifact,
    read_executor_config,
)
from deepforge_adapters.process import JobProcess, terminate_job
from deepforge_adapters.process import run as run_job_process
from deepforge_adapters.streams import atomic_write, copy_stream
from deepforge_adapters.webgme import HOST_ENV
from deepforge_adapters.webgme.executor import is_finished

from .globmatch import minimatch
from .output import OutputQueue
from .slots import Slot

log = logging.getLogger(__name__)

SOURCE_ZIP = "source.zip"
REPORT_SUFFIX = ".report.json"
PGID_SUFFIX = ".pgid"
#: The worker's own credentials when given in its environment: never passed on to a job.
WORKER_SECRET_VARIABLES = ("DEEPFORGE_WORKER_TOKEN", "DEEPFORGE_WORKER_NONCE")
#: Exit code of a process ended by SIGINT in a shell; the Node worker treats it as canceled too.
SIGINT_EXIT = 130


def now_iso() -> str:
    """``new Date().toISOString()``: UTC with milliseconds and a ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class JobFailed(Exception):
    """Ends a job early with an executor status and a reason for the user."""

    def __init__(self, status: str, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


@dataclass
class JobContext:
    """What every job of one worker shares."""

    executor: Any  # deepforge_adapters.webgme.executor.ExecutorClient
    blob: Any  # deepforge_adapters.webgme.blob.BlobClient
    client_id: str
    host: str
    work_dir: Path
    cache_dir: Path
    cancel_grace: float = 10.0
    max_bundle_bytes: int = 10 * 1024**3
    #: Extra environment for every job (e.g. the gme storage token); never logged.
    job_env: Mapping[str, str] = field(default_factory=dict)
    #: How long the final report is retried while the server is unreachable.
    report_retry_for: float = 600.0
    #: The deployment keyring (``None``: read from our environment / key file when a job needs it).
    keyring: Any = None
    #: ``--run-as``: the job's processes run under this account, not the worker's.
    run_as: RunAs | None = None


@dataclass(frozen=True)
class RunAs:
    """The account jobs run under (``deepforge-worker start --run-as USER``)."""

    user: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        """The account ``user`` (a name or a uid); ``ValueError`` with a clear message if unusable."""
        import pwd

        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"--run-as {user}: no such user") from None
        if entry.pw_uid == os.geteuid():
            raise ValueError(f"--run-as {user}: that is the worker's own uid ({entry.pw_uid}); isolation needs another")
        if os.geteuid() != 0 and not _has_setid_capabilities():
            raise ValueError(
                f"--run-as {user}: the worker must run as root (or with CAP_SETUID and CAP_SETGID) to start jobs "
                "under another uid"
            )
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def own(self, path: Path) -> None:
        """Give ``path`` (and everything under it) to this account, so the job can write its files."""
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [*dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)


def _has_setid_capabilities() -> bool:
    """CAP_SETGID (6) and CAP_SETUID (7) in our effective set (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    caps = int(line.split()[1], 16)
    return bool(caps & (1 << 6)) and bool(caps & (1 << 7))


class JobExecution:
    """Runs one job in ``slot``; :meth:`run` blocks until reported, :meth:`cancel` may come from any thread.

    With ``report=False`` it is a label probe: nothing is posted to the server and the directory is kept
    only until the status is known.
    """

    def __init__(self, ctx: JobContext, info: Mapping[str, Any], slot: Slot, *, report: bool = True) -> None:
        self.ctx = ctx
        # The hash becomes the job dir and URL segments: the daemon refuses a bad one (refuse_bad_job) first.
        self.hash: str = check_sha1_hex(info.get("hash"), "executor job hash")
        self.info: dict[str, Any] = {"hash": self.hash}
        self.slot = slot
        self.report_enabled = report
        self.job_dir = ctx.work_dir / self.hash
        self.status: str | None = None
        self.reason: str | None = None
        self.reported = False
        self.config: ExecutorConfig | None = None
        self._proc: JobProcess | None = None
        self._canceled = threading.Event()
        self._lock = threading.Lock()
        self._queue: OutputQueue | None = None
        self._stdout: Any = None
        #: Set by the pump when job_stdout.txt cannot be written (ENOSPC...): the job then fails with it.
        self._io_error: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    # --- public --------------------------------------------------------------------------------------
    def run(self) -> str:
        """Execute and report; returns the final status.  Never raises (a bug becomes FAILED_TO_EXECUTE)."""
        try:
            self._prepare_dir()
            self._execute()
        except JobFailed as exc:
            self.status, self.reason = exc.status, exc.reason
        except Exception as exc:  # pragma: no cover - defensive: a worker bug must still end the job
            log.exception("job %s: unexpected worker error", self.hash)
            self.status, self.reason = "FAILED_TO_EXECUTE", f"worker error: {type(exc).__name__}: {exc}"
        if self.reason:
            self._emit(f"\n[deepforge-worker] {self.status}: {self.reason}\n")
        self.info.setdefault("finishTime", now_iso())
        self.info["status"] = self.status
        self._close_output()
        if self.report_enabled:
            self._archive_results_safely()
            self.report()
        self._cleanup()
        return str(self.status)

    def cancel(self) -> None:
        """SIGINT to the job's processes now, SIGKILL to every one of them after the grace period.

        The job's thread acts on it (:func:`deepforge_adapters.process.run` polls the flag).
        """
        if not self._canceled.is_set():
            log.info("job %s: canceling", self.hash)
        self._canceled.set()

    @property
    def canceled(self) -> bool:
        return self._canceled.is_set()

    # --- steps ---------------------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        if self.job_dir.exists():
            shutil.rmtree(self.job_dir, ignore_errors=True)
        try:
            self.job_dir.mkdir(parents=True)
        except OSError as exc:
            raise JobFailed(
                "FAILED_CREATING_SOURCE_ZIP", f"cannot create the job directory {self.job_dir}: {exc.strerror or exc}"
            ) from None

    def _open_stdout(self) -> None:
        """``job_stdout.txt`` in the job dir, opened after the unzip (the bundle must not collide with it)."""
        if self._stdout is None and self.job_dir.is_dir():
            try:
                self._stdout = open(self.job_dir / STDOUT_FILE, "ab")  # noqa: SIM115 - closed in _close_output
            except OSError as exc:
                raise JobFailed("FAILED_TO_EXECUTE", f"cannot create {STDOUT_FILE}: {exc.strerror or exc}") from None

    def _execute(self) -> None:
        zip_path = self.ctx.work_dir / f"{self.hash}.{SOURCE_ZIP}"  # outside the dir the bundle fills
        try:
            self._download(zip_path)
            self._unzip(zip_path)
        finally:
            zip_path.unlink(missing_ok=True)
        self.info["startTime"] = now_iso()
        self._open_stdout()
        self.config = self._read_executor_config()
        self._run_process(self.config)

    def _download(self, zip_path: Path) -> None:
        """Stream ``/rest/blob/view/<hash>/`` to disk (open() reads the metadata first, as the Node worker did)."""
        try:
            with self.ctx.blob.open(self.hash, view=True) as src, open(zip_path, "wb") as dst:
                copy_stream(src, dst)
        except NotFoundError as exc:
            raise JobFailed("FAILED_TO_GET_SOURCE_METADATA", f"job bundle {self.hash}: {exc}") from None
        except WebGMEError as exc:
            status = "FAILED_TO_GET_SOURCE_METADATA" if exc.status_code == 404 else "FAILED_CREATING_SOURCE_ZIP"
            raise JobFailed(status, f"downloading job bundle {self.hash}: {exc}") from None
        except Exception as exc:
            raise JobFailed("FAILED_CREATING_SOURCE_ZIP", f"downloading job bundle {self.hash}: {exc}") from None

    def _unzip(self, zip_path: Path) -> None:
        try:
            safe_extract(zip_path, self.job_dir, self.ctx.max_bundle_bytes)
        except BundleError as exc:
            raise JobFailed("FAILED_UNZIP", str(exc)) from None
        except (OSError, ValueError) as exc:
            raise JobFailed("FAILED_UNZIP", f"{SOURCE_ZIP}: {exc}") from None

    def _read_executor_config(self) -> ExecutorConfig:
        try:
            return read_executor_config(self.job_dir, where=EXECUTOR_CONFIG, require_artifacts=True)
        except BundleError as exc:
            raise JobFailed("FAILED_EXECUTOR_CONFIG", str(exc)) from None

    def _run_process(self, config: ExecutorConfig) -> None:
        if self.report_enabled:
            self._queue = OutputQueue(
                self._post_output, config.output_interval, config.output_segment_size, name=self.hash[:8]
            )
        env = job_environment(os.environ)  # never the key, its file's path or a credentials fd
        for var in WORKER_SECRET_VARIABLES:  # nor the worker's own executor credentials
            env.pop(var, None)
        # The worker's own interpreter first on PATH: a bundle's ``python3 -m deepforge_adapters.jobs.runner``
        # then finds the same installation as the worker (and the worker's venv need not be activated).
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)])
        env.update(
            {
                "ORIGIN_URL": self.ctx.host,
                HOST_ENV: self.ctx.host,
                "DEEPFORGE_WORKER_CACHE": str(self.ctx.cache_dir),
                "DEEPFORGE_JOB_HASH": self.hash,
            }
        )
        env.update(self.slot.env())
        self.ctx.cache_dir.mkdir(parents=True, exist_ok=True)
        creds = self._credentials(config)
        run_as = self.ctx.run_as
        if run_as is not None:
            run_as.own(self.job_dir)
            os.chown(self.ctx.cache_dir, run_as.uid, run_as.gid)
            env.update({"HOME": str(self.job_dir), "USER": run_as.user, "LOGNAME": run_as.user})
        argv = [config.cmd, *config.args]
        if self._canceled.is_set():
            raise JobFailed("CANCELED", "canceled before it started")
        with CredentialPipe(creds) as pipe:
            try:
                # Every process of the job, double-forked ones included, is killed on cancel and at its end.
                result = run_job_process(
                    argv,
                    self.job_dir,
                    {**env, **pipe.env},
                    self._sink,
                    should_cancel=self._canceled.is_set,
                    grace=self.ctx.cancel_grace,
                    on_start=lambda proc: self._started(proc, pipe),
                    pass_fds=pipe.pass_fds,
                    user=run_as.uid if run_as else None,
                    group=run_as.gid if run_as else None,
                    extra_groups=[] if run_as else None,
                )
            except OSError as exc:
                raise JobFailed("FAILED_TO_EXECUTE", f"cannot start {config.cmd!r}: {exc.strerror}") from None
            finally:
                if self._queue is not None:
                    self._queue.add(self._decoder.decode(b"", final=True))
        code = result.returncode
        self.info["finishTime"] = now_iso()
        if self._io_error is None and result.sink_error is not None:
            self._io_error = f"writing the job's output failed: {result.sink_error}"
        if self._io_error is not None:
            raise JobFailed("FAILED_TO_EXECUTE", f"{self._io_error}; the job was stopped")
        if self.canceled or code in (SIGINT_EXIT, -signal.SIGINT):
            raise JobFailed("CANCELED", "canceled on request")
        if code != 0:
            how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise JobFailed("FAILED_TO_EXECUTE", f"{config.cmd} ended with {how}")
        self.status = "SUCCESS"

    def _credentials(self, config: ExecutorConfig) -> Credentials | None:
        """This job's plaintext credentials for the runner (None for any other command: it gets none)."""
        if not is_runner_command(config.cmd, config.args):
            return None
        try:
            return open_job_credentials(self.job_dir, self.ctx.keyring, env=self.ctx.job_env)
        except SecretsError as exc:
            raise JobFailed("FAILED_TO_EXECUTE", str(exc)) from None

    def _started(self, proc: JobProcess, pipe: CredentialPipe) -> None:
        pipe.started()  # the command holds the read end now: feed it this job's credentials
        with self._lock:
            self._proc = proc
        try:
            record_process_group(self.ctx.work_dir, self.hash, proc.pid)
        except OSError as exc:  # e.g. a full disk: do not leave a job running that nothing could reap later
            self._io_error = f"cannot record the job's process group: {exc.strerror or exc}"
            log.error("job %s: %s; stopping the job", self.hash, self._io_error)
            proc.kill()
            return
        log.info("job %s: started pid %d in slot %d", self.hash, proc.pid, self.slot.index)

    def _sink(self, data: bytes) -> None:
        """One read of the job's output: appended to ``job_stdout.txt``, then to the live output.

        When ``job_stdout.txt`` cannot be written (ENOSPC, EIO...) the error is recorded and re-raised:
        :func:`deepforge_adapters.process.run` then kills every process of the job and drains the pipe (so
        the job never blocks in a write), and :meth:`_run_process` fails the job with the reason.
        """
        try:
            self._stdout.write(data)
            self._stdout.flush()
        except OSError as exc:
            self._io_error = f"writing {STDOUT_FILE} failed: {exc.strerror or exc}"
            log.error("job %s: %s; stopping the job", self.hash, self._io_error)
            raise
        if self._queue is not None:
            self._queue.add(self._decoder.decode(data))

    def _emit(self, text: str) -> None:
        """A worker message in the job's console: into ``job_stdout.txt`` (if writable) and the live output."""
        try:
            self._open_stdout()
            if self._stdout is not None and not self._stdout.closed and self._io_error is None:
                self._stdout.write(text.encode())
                self._stdout.flush()
        except (OSError, JobFailed) as exc:  # a full disk: the live output below still carries the message
            log.debug("job %s: cannot write a worker message to %s: %s", self.hash, STDOUT_FILE, exc)
        if self.report_enabled and (self._queue is None or not self._queue.enabled):
            # Live output was off (or never set up): worker messages are still worth posting.
            self._queue = OutputQueue(self._post_output, None, 1, name=self.hash[:8])
        if self._queue is not None:
            self._queue.add(text, essential=True)

    def _post_output(self, number: int, text: str) -> None:
        self.ctx.executor.post_output(self.hash, number, text)

    def _close_output(self) -> None:
        if self._queue is not None:
            self._queue.close(timeout=self.ctx.report_retry_for)
            if self._queue.last_number is not None:
                self.info["outputNumber"] = self._queue.last_number
            if self._queue.dropped_bytes:
                log.info(
                    "job %s: %d bytes of output were not streamed live (the server was slower than the job; "
                    "%s has every byte); live output buffered at most %d of %d characters",
                    self.hash,
                    self._queue.dropped_bytes,
                    STDOUT_FILE,
                    self._queue.peak_buffered,
                    self._queue.max_buffer_chars,
                )
        if self._stdout is not None:
            try:
                self._stdout.close()
            except OSError as exc:  # its buffer could not be flushed (a full disk): already reported
                log.debug("job %s: closing %s: %s", self.hash, STDOUT_FILE, exc)

    # --- results -------------------------------------------------------------------------------------
    def _archive_results_safely(self) -> None:
        """Archive even after a failure (the Node worker does too); before the spawn only ``stdout`` exists."""
        artifacts = self.config.result_artifacts if self.config else (ResultArtifact(STDOUT_ARTIFACT, (STDOUT_FILE,)),)
        try:
            self.info["resultHashes"] = self.archive_results(artifacts)
        except JobFailed as exc:
            log.error("job %s: %s", self.hash, exc)
            if self.status == "SUCCESS":
                self.status, self.reason = exc.status, exc.reason
                self.info["status"] = exc.status

    def archive_results(self, artifacts: tuple[ResultArtifact, ...]) -> dict[str, str]:
        """Upload each matching file once and save one softLink complex artifact per result artifact."""
        files: dict[str, Path] = {}
        members: dict[str, list[str]] = {a.name: [] for a in artifacts}
        for relpath, path in _walk_files(self.job_dir):
            for artifact in artifacts:
                if not artifact.patterns or any(minimatch(relpath, p) for p in artifact.patterns):
                    members[artifact.name].append(relpath)
                    files[relpath] = path
        hashes: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for relpath, path in files.items():
            try:
                sizes[relpath] = path.stat().st_size
                with open(path, "rb") as fh:
                    hashes[relpath], _ = self.ctx.blob.create_file(relpath, fh, size=sizes[relpath])
            except Exception as exc:
                raise JobFailed("FAILED_TO_ARCHIVE_FILE", f"archiving {relpath}: {exc}") from None
        result: dict[str, str] = {}
        for artifact in artifacts:
            try:
                entries = {rel: hashes[rel] for rel in members[artifact.name]}
                result[artifact.name] = self.ctx.blob.create_artifact(artifact.name, entries, sizes)
            except Exception as exc:
                raise JobFailed("FAILED_TO_SAVE_ARTIFACT", f"result artifact {artifact.name!r}: {exc}") from None
        return result

    # --- reporting -----------------------------------------------------------------------------------
    def report(self) -> bool:
        """Post the final update once, unless the job is no longer ours.

        The server requeues the jobs of a worker it has not heard from for 5 refresh periods; another
        worker may then run it.  Before posting we re-read the job: if its ``worker`` is someone else (or
        it already finished), our late result is dropped instead of clobbering theirs.  The remaining race
        (the server reassigns it between our read and our post) cannot be closed without a lease token in
        the protocol; the window is one round trip.

        The body is first written to ``<work_dir>/<hash>.report.json`` so a daemon killed before the post
        succeeds re-sends it on its next start (:func:`replay_pending_reports`).
        """
        body = {k: v for k, v in self.info.items() if v is not None}
        body["worker"] = self.ctx.client_id
        pending = self.ctx.work_dir / f"{self.hash}{REPORT_SUFFIX}"
        try:
            with atomic_write(pending) as fh:
                fh.write(json.dumps({"clientId": self.ctx.client_id, "info": body}).encode())
        except OSError as exc:  # a full disk must not keep the report from the server
            log.warning("job %s: cannot save the report to %s (%s); posting it anyway", self.hash, pending, exc)
        self.reported = post_report(self.ctx, self.hash, body, retry_for=self.ctx.report_retry_for)
        pending.unlink(missing_ok=True)
        return self.reported

    def _cleanup(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)
        (self.ctx.work_dir / f"{self.hash}{PGID_SUFFIX}").unlink(missing_ok=True)


def post_report(
    ctx: JobContext, job_hash: str, body: dict[str, Any], retry_for: float, client_id: str | None = None
) -> bool:
    """The ownership check and the final ``POST /update``, retried while the server is unreachable."""
    owner = client_id or ctx.client_id
    delay = 0.5
    give_up = time.monotonic() + retry_for
    while True:
        try:
            current = ctx.executor.get_info(job_hash)
            if is_finished(current.get("status")):
                log.warning(
                    "job %s: already %s on the server; not reporting %s",
                    job_hash,
                    current["status"],
                    body.get("status"),
                )
                return False
            if current.get("worker") not in (owner, None):
                log.warning(
                    "job %s: the server gave it to %s; dropping our late %s",
                    job_hash,
                    current["worker"],
                    body.get("status"),
                )
                return False
            ctx.executor.update_job(job_hash, body)
            log.info("job %s: reported %s", job_hash, body.get("status"))
            return True
        except WebGMEError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:
                log.error("job %s: final update refused: %s", job_hash, exc)
                return False
            error: Exception = exc
        except Exception as exc:
            error = exc
        if time.monotonic() + delay > give_up:
            log.error("job %s: final update failed after retries: %s", job_hash, error)
            return False
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


#: The status a job whose hash is not a blob hash ends in: its source cannot be obtained by construction.
BAD_HASH_STATUS = "FAILED_SOURCE_COULD_NOT_BE_OBTAINED"


def refuse_bad_job(ctx: JobContext, job_hash: Any) -> bool:
    """Fail a job the server gave us whose hash is not 40 lowercase hex, without touching the disk.

    The executor accepts any string as a job hash (``POST /rest/executor/create/%2Ftmp%2Fvictim``); such a
    hash must never become a path.  The job gets its reason as output #0 and a final ``BAD_HASH_STATUS``, so it
    ends (and is not requeued to the next worker) instead of staying RUNNING.  Returns whether it was posted.
    """
    shown = job_hash if isinstance(job_hash, str) else repr(job_hash)
    reason = f"the job hash {shown!r:.120} is not a blob hash (40 lowercase hex digits); refusing to run it"
    log.error("job %r: %s", shown, reason)
    if not isinstance(job_hash, str) or not job_hash:
        return False  # nothing to address it by
    try:
        ctx.executor.post_output(job_hash, 0, f"[deepforge-worker] {BAD_HASH_STATUS}: {reason}\n")
    except Exception as exc:
        log.warning("job %r: posting the refusal as output failed: %s", shown, exc)
    body = {"status": BAD_HASH_STATUS, "finishTime": now_iso(), "outputNumber": 0, "worker": ctx.client_id}
    return post_report(ctx, job_hash, body, retry_for=min(ctx.report_retry_for, 60.0))


def replay_pending_reports(ctx: JobContext) -> int:
    """Re-send final reports a previous daemon wrote but did not get acknowledged; returns how many posted.

    A report is only replayed while the job is still ours to finish: assigned to the daemon that wrote it
    or requeued (``CREATED``) and not yet claimed by another worker.
    """
    posted = 0
    if not ctx.work_dir.is_dir():
        return 0
    for path in sorted(ctx.work_dir.glob(f"*{REPORT_SUFFIX}")):
        job_hash = path.name[: -len(REPORT_SUFFIX)]
        try:
            saved = json.loads(path.read_text())
            body, writer = dict(saved["info"]), str(saved["clientId"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable pending report %s", path)
            path.unlink(missing_ok=True)
            continue
        body["worker"] = ctx.client_id
        if post_report(ctx, job_hash, body, retry_for=10.0, client_id=writer):
            posted += 1
        path.unlink(missing_ok=True)
    return posted


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/<pid>/stat`` field 22): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_process_group(work_dir: Path, job_hash: str, pgid: int) -> None:
    """Remember a running job's process group, so a daemon restarted after a SIGKILL can stop it."""
    with atomic_write(work_dir / f"{job_hash}{PGID_SUFFIX}") as fh:
        fh.write(json.dumps({"pgid": pgid, "start": _start_time(pgid)}).encode())


def reap_orphaned_jobs(work_dir: Path) -> int:
    """SIGKILL the process groups of jobs a previous daemon left running; returns how many were found.

    A daemon killed with SIGKILL cannot stop its jobs (they run in their own sessions so that a TERM to the
    daemon drains instead of killing them).  The server requeues those jobs to other workers, so the
    orphans only burn CPU/GPU time, and a GPU slot must not be shared: the next daemon on this work dir
    stops them before it claims anything.  The recorded start time guards against a reused pid.
    """
    reaped = 0
    if not work_dir.is_dir():
        return 0
    for path in sorted(work_dir.glob(f"*{PGID_SUFFIX}")):
        try:
            record = json.loads(path.read_text())
            pgid, start = int(record["pgid"]), record.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if start is not None and _start_time(pgid) == start:
            log.warning("job %s: stopping the processes (shim %d) left running by a previous daemon", path.stem, pgid)
            terminate_job(pgid)
            reaped += 1
        path.unlink(missing_ok=True)
        shutil.rmtree(work_dir / path.name[: -len(PGID_SUFFIX)], ignore_errors=True)
    return reaped


def _walk_files(root: Path) -> list[tuple[str, Path]]:
    """Every file under ``root`` as (``/``-relative path, path), following links to files like ``fs.stat``."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file():
                out.append((path.relative_to(root).as_posix(), path))
    return out


#: Signature of the callback the daemon gives a job to learn that it finished.
OnDone = Callable[[JobExecution], None]
