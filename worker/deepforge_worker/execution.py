"""One job, from claim to final report (the WebGME executor protocol: docs/protocols.md, "The executor: running a job").

Steps, each with the executor status it ends in when it fails:

1. blob metadata of the job hash ........................ ``FAILED_TO_GET_SOURCE_METADATA``
2. ``/rest/blob/view/<hash>/`` streamed to ``source.zip`` . ``FAILED_CREATING_SOURCE_ZIP``
3. safe unzip (no absolute paths, ``..``, escaping links, bombs) ``FAILED_UNZIP``
4. ``executor_config.json`` validated ...................... ``FAILED_EXECUTOR_CONFIG``
5. ``cmd args`` in its own process group, cwd = job dir; stdout to ``job_stdout.txt`` and the live output
   queue, stderr to ``job_stderr.txt`` only, as the Node worker does ... ``FAILED_TO_EXECUTE`` / ``CANCELED``
6. result files archived per ``resultArtifacts`` ......... ``FAILED_TO_ARCHIVE_FILE`` / ``FAILED_TO_SAVE_ARTIFACT``
7. output flushed, then one final ``POST /update`` with status, times, ``resultHashes``, ``outputNumber``.

Every failure also writes its reason into ``job_stdout.txt`` (and the live output), so a user sees *why*
instead of a bare status code.  What the Node worker got wrong and this fixes: the whole process group is
canceled (SIGINT, then SIGKILL), live output starts at #0 and is capped per chunk, and a late report for a
job the server gave to another worker is not posted (see :meth:`JobExecution.report`).  stderr is kept as the
Node worker keeps it, in ``job_stderr.txt`` (archived when a result pattern matches it, never live): a
DeepForge bundle's ``start.js`` logs its debug lines there on purpose, and merges its operation's stderr into
its stdout itself, as our runner does.

An I/O error (a full disk, EIO) anywhere in a job fails that job with a readable reason and frees its slot:
when ``job_stdout.txt`` cannot be written the job's process group is killed and the job ends
``FAILED_TO_EXECUTE``; the reason still reaches the live output, and the final report is posted even when it
cannot be saved to disk first.

The final report itself (ownership check, on-disk copy, replay) is :mod:`.reports`; the record of the job's
process group, for a restarted daemon to reap, is :mod:`.orphans`.
"""

from __future__ import annotations

import codecs
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from deepforge_adapters.errors import BundleError, JobFailed, NotFoundError, SecretsError, WebGMEError
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
    STDERR_FILE,
    STDOUT_ARTIFACT,
    STDOUT_FILE,
    ExecutorConfig,
    ResultArtifact,
    read_executor_config,
)
from deepforge_adapters.process import JobProcess
from deepforge_adapters.process import run as run_job_process
from deepforge_adapters.streams import copy_stream
from deepforge_adapters.timestamps import now_iso
from deepforge_adapters.webgme import HOST_ENV
from deepforge_adapters.webgme.executor import ExecutorStatus

from .context import JobContext
from .globmatch import minimatch
from .orphans import forget_process_group, record_process_group
from .output import OutputQueue
from .reports import deliver_report
from .slots import Slot

log = logging.getLogger(__name__)

SOURCE_ZIP = "source.zip"
#: Tries of the bundle download in all, and the first pause between them (doubling).
SOURCE_DOWNLOAD_ATTEMPTS = 3
SOURCE_DOWNLOAD_BACKOFF = 1.0
#: The worker's own credentials when given in its environment: never passed on to a job.
WORKER_SECRET_VARIABLES = ("DEEPFORGE_WORKER_TOKEN", "DEEPFORGE_WORKER_NONCE")
#: Exit code of a process ended by SIGINT in a shell; the Node worker treats it as canceled too.
SIGINT_EXIT = 130
#: Bytes of a job's stderr kept in memory to quote its last line when the job fails.
STDERR_TAIL_BYTES = 4096


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
        self.status: ExecutorStatus | None = None
        self.reason: str | None = None
        self.reported = False
        self.config: ExecutorConfig | None = None
        self._proc: JobProcess | None = None
        self._canceled = threading.Event()
        self._lock = threading.Lock()
        self._queue: OutputQueue | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        #: The end of the job's stderr, for the failure reason (the live output never carries stderr).
        self._stderr_tail = b""
        #: Set by the pump when job_stdout.txt cannot be written (ENOSPC...): the job then fails with it.
        self._io_error: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    # --- public --------------------------------------------------------------------------------------
    def run(self) -> ExecutorStatus:
        """Execute and report; returns the final status.  Never raises (a bug becomes FAILED_TO_EXECUTE)."""
        try:
            self._prepare_dir()
            self._execute()
        except JobFailed as exc:
            self.status, self.reason = _status_of(exc), exc.reason
        except Exception as exc:  # pragma: no cover - defensive: a worker bug must still end the job
            log.exception("job %s: unexpected worker error", self.hash)
            self.status = ExecutorStatus.FAILED_TO_EXECUTE
            self.reason = f"worker error: {type(exc).__name__}: {exc}"
        if self.reason:
            self._emit(f"\n[deepforge-worker] {self.status}: {self.reason}\n")
        self.info.setdefault("finishTime", now_iso())
        self.info["status"] = self.status
        self._close_output()
        if self.report_enabled:
            self._archive_results_safely()
            self.report()
        self._cleanup()
        return self.status or ExecutorStatus.FAILED_TO_EXECUTE

    def cancel(self) -> None:
        """SIGINT to the job's processes now, SIGKILL to every one of them after the grace period.

        The job's thread acts on it (:func:`deepforge_adapters.process.run` polls the flag).
        """
        if not self._canceled.is_set():
            log.info("job %s: canceling", self.hash)
        self._canceled.set()

    def abandon(self, reason: str) -> None:
        """Stop the job and never report it: the server has given it to someone else (see
        :meth:`.daemon.Worker.drop_jobs_given_away`).  A report already under way still meets the ownership
        check of :func:`.reports.post_report`."""
        log.warning("job %s: %s; stopping our copy without reporting it", self.hash, reason)
        self.report_enabled = False
        self.cancel()

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
                f"cannot create the job directory {self.job_dir}: {exc.strerror or exc}",
                ExecutorStatus.FAILED_CREATING_SOURCE_ZIP,
            ) from None

    def _open_stdout(self) -> None:
        """``job_stdout.txt`` in the job dir, opened after the unzip (the bundle must not collide with it)."""
        if self._stdout is None and self.job_dir.is_dir():
            try:
                self._stdout = open(self.job_dir / STDOUT_FILE, "ab")  # noqa: SIM115 - closed in _close_output
            except OSError as exc:
                reason = f"cannot create {STDOUT_FILE}: {exc.strerror or exc}"
                raise JobFailed(reason, ExecutorStatus.FAILED_TO_EXECUTE) from None

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
        """Stream ``/rest/blob/view/<hash>/`` to disk (open() reads the metadata first, as the Node worker did).

        The server builds that zip on the fly, so a download cut off midway cannot be resumed, only done
        again: a broken connection or a 5xx (a server restarting) is retried, up to
        :data:`SOURCE_DOWNLOAD_ATTEMPTS` tries in all (the 1,000-job soak run failed a job whose bundle
        download a proxy reset cut after 1,341 bytes)."""
        for attempt in range(1, SOURCE_DOWNLOAD_ATTEMPTS + 1):
            try:
                with self.ctx.blob.open(self.hash, view=True) as src, open(zip_path, "wb") as dst:
                    self.ctx.metrics.bytes_down.inc(copy_stream(src, dst))
                return
            except NotFoundError as exc:
                raise JobFailed(
                    f"job bundle {self.hash}: {exc}", ExecutorStatus.FAILED_TO_GET_SOURCE_METADATA
                ) from None
            except WebGMEError as exc:
                transient = exc.status_code is None or exc.status_code >= 500
                if not transient or attempt == SOURCE_DOWNLOAD_ATTEMPTS or self.canceled:
                    status = (
                        ExecutorStatus.FAILED_TO_GET_SOURCE_METADATA
                        if exc.status_code == 404
                        else ExecutorStatus.FAILED_CREATING_SOURCE_ZIP
                    )
                    raise JobFailed(f"downloading job bundle {self.hash}: {exc}", status) from None
                log.warning("job %s: downloading its bundle: %s; again (%d/%d)", self.hash, exc, attempt + 1,
                            SOURCE_DOWNLOAD_ATTEMPTS)  # fmt: skip
                self._canceled.wait(SOURCE_DOWNLOAD_BACKOFF * 2 ** (attempt - 1))
            except Exception as exc:
                reason = f"downloading job bundle {self.hash}: {exc}"
                raise JobFailed(reason, ExecutorStatus.FAILED_CREATING_SOURCE_ZIP) from None

    def _unzip(self, zip_path: Path) -> None:
        try:
            safe_extract(zip_path, self.job_dir, self.ctx.max_bundle_bytes)
        except BundleError as exc:
            raise JobFailed(str(exc), ExecutorStatus.FAILED_UNZIP) from None
        except (OSError, ValueError) as exc:
            raise JobFailed(f"{SOURCE_ZIP}: {exc}", ExecutorStatus.FAILED_UNZIP) from None

    def _read_executor_config(self) -> ExecutorConfig:
        try:
            return read_executor_config(self.job_dir, where=EXECUTOR_CONFIG, require_artifacts=True)
        except BundleError as exc:
            raise JobFailed(str(exc), ExecutorStatus.FAILED_EXECUTOR_CONFIG) from None

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
            raise JobFailed("canceled before it started", ExecutorStatus.CANCELED)
        self._open_stderr()
        with CredentialPipe(creds) as pipe:
            try:
                # Every process of the job, double-forked ones included, is killed on cancel and at its end.
                result = run_job_process(
                    argv,
                    self.job_dir,
                    {**env, **pipe.env},
                    self._sink,
                    stderr_sink=self._stderr_sink,
                    should_cancel=self._canceled.is_set,
                    grace=self.ctx.cancel_grace,
                    on_start=lambda proc: self._started(proc, pipe),
                    pass_fds=pipe.pass_fds,
                    user=run_as.uid if run_as else None,
                    group=run_as.gid if run_as else None,
                    extra_groups=[] if run_as else None,
                )
            except OSError as exc:
                reason = f"cannot start {config.cmd!r}: {exc.strerror}"
                raise JobFailed(reason, ExecutorStatus.FAILED_TO_EXECUTE) from None
            finally:
                if self._queue is not None:
                    self._queue.add(self._decoder.decode(b"", final=True))
        code = result.returncode
        self.info["finishTime"] = now_iso()
        if self._io_error is None and result.sink_error is not None:
            self._io_error = f"writing the job's output failed: {result.sink_error}"
        if self._io_error is not None:
            raise JobFailed(f"{self._io_error}; the job was stopped", ExecutorStatus.FAILED_TO_EXECUTE)
        if self.canceled or code in (SIGINT_EXIT, -signal.SIGINT):
            raise JobFailed("canceled on request", ExecutorStatus.CANCELED)
        if code != 0:
            how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise JobFailed(
                f"{config.cmd} ended with {how}{self._stderr_last_line()}", ExecutorStatus.FAILED_TO_EXECUTE
            )
        self.status = ExecutorStatus.SUCCESS

    def _credentials(self, config: ExecutorConfig) -> Credentials | None:
        """This job's plaintext credentials for the runner (None for any other command: it gets none)."""
        if not is_runner_command(config.cmd, config.args):
            return None
        try:
            return open_job_credentials(self.job_dir, self.ctx.keyring, env=self.ctx.job_env)
        except SecretsError as exc:
            raise JobFailed(str(exc), ExecutorStatus.FAILED_TO_EXECUTE) from None

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
        assert self._stdout is not None, "job_stdout.txt is opened before the job starts"
        try:
            self._stdout.write(data)
            self._stdout.flush()
        except OSError as exc:
            self._io_error = f"writing {STDOUT_FILE} failed: {exc.strerror or exc}"
            log.error("job %s: %s; stopping the job", self.hash, self._io_error)
            raise
        if self._queue is not None:
            self._queue.add(self._decoder.decode(data))

    def _open_stderr(self) -> None:
        """``job_stderr.txt`` in the job dir, created when the command is started (as the Node worker does)."""
        try:
            self._stderr = open(self.job_dir / STDERR_FILE, "ab")  # noqa: SIM115 - closed in _close_output
        except OSError as exc:
            reason = f"cannot create {STDERR_FILE}: {exc.strerror or exc}"
            raise JobFailed(reason, ExecutorStatus.FAILED_TO_EXECUTE) from None

    def _stderr_sink(self, data: bytes) -> None:
        """One read of the job's stderr: appended to ``job_stderr.txt`` only (never live); I/O errors as
        :meth:`_sink`'s."""
        assert self._stderr is not None, "job_stderr.txt is opened before the job starts"
        self._stderr_tail = (self._stderr_tail + data)[-STDERR_TAIL_BYTES:]
        try:
            self._stderr.write(data)
            self._stderr.flush()
        except OSError as exc:
            self._io_error = f"writing {STDERR_FILE} failed: {exc.strerror or exc}"
            log.error("job %s: %s; stopping the job", self.hash, self._io_error)
            raise

    def _stderr_last_line(self) -> str:
        """``; its last line on stderr: ...`` for a failure reason, or "" when the job wrote nothing there."""
        lines = [line.strip() for line in self._stderr_tail.decode("utf-8", "replace").splitlines() if line.strip()]
        return f"; its last line in {STDERR_FILE}: {lines[-1][:300]}" if lines else ""

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
        for name, stream in ((STDOUT_FILE, self._stdout), (STDERR_FILE, self._stderr)):
            if stream is not None:
                try:
                    stream.close()
                except OSError as exc:  # its buffer could not be flushed (a full disk): already reported
                    log.debug("job %s: closing %s: %s", self.hash, name, exc)

    # --- results -------------------------------------------------------------------------------------
    def _archive_results_safely(self) -> None:
        """Archive even after a failure (the Node worker does too); before the spawn only ``stdout`` exists."""
        artifacts = self.config.result_artifacts if self.config else (ResultArtifact(STDOUT_ARTIFACT, (STDOUT_FILE,)),)
        try:
            self.info["resultHashes"] = self.archive_results(artifacts)
        except JobFailed as exc:
            log.error("job %s: %s", self.hash, exc)
            if self.status == ExecutorStatus.SUCCESS:
                self.status, self.reason = _status_of(exc), exc.reason
                self.info["status"] = self.status

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
                self.ctx.metrics.bytes_up.inc(sizes[relpath])
            except Exception as exc:
                raise JobFailed(f"archiving {relpath}: {exc}", ExecutorStatus.FAILED_TO_ARCHIVE_FILE) from None
        result: dict[str, str] = {}
        for artifact in artifacts:
            try:
                entries = {rel: hashes[rel] for rel in members[artifact.name]}
                result[artifact.name] = self.ctx.blob.create_artifact(artifact.name, entries, sizes)
            except Exception as exc:
                reason = f"result artifact {artifact.name!r}: {exc}"
                raise JobFailed(reason, ExecutorStatus.FAILED_TO_SAVE_ARTIFACT) from None
        return result

    # --- reporting -----------------------------------------------------------------------------------
    def report(self) -> bool:
        """Post the final update once, unless the job is no longer ours (see :func:`.reports.post_report`).

        The body is saved to disk first, so a daemon killed before the post succeeds re-sends it on its next
        start (:func:`.reports.replay_pending_reports`).
        """
        body = {k: v for k, v in self.info.items() if v is not None}
        body["worker"] = self.ctx.client_id
        self.reported = deliver_report(self.ctx, self.hash, body)
        return self.reported

    def _cleanup(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)
        forget_process_group(self.ctx.work_dir, self.hash)


def _status_of(exc: JobFailed) -> ExecutorStatus:
    """The executor status a :class:`JobFailed` raised in a job ends it in."""
    return ExecutorStatus(exc.status or ExecutorStatus.FAILED_TO_EXECUTE)


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
