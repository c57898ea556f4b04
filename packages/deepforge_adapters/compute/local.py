"""``local``: run job bundles on this machine, N at a time, with the queue kept on disk.

``start_job`` copies (or safely unzips) the bundle to ``<workDir>/jobs/<hash>/work`` and starts a detached
supervisor process for it (:mod:`.local_supervisor`), which waits for one of ``processes`` slot locks, runs
the bundle's ``executor_config.json`` command there, and records state and output in files.  Because the
state is on disk and the supervisors are not children that die with us, another process constructing
``LocalCompute`` on the same ``workDir`` (say, after a restart) sees, watches and cancels the same jobs;
``job_info`` holds ``{"hash", "workDir", "jobDir"}``, but only ``hash`` is ever used: it must be 40 lowercase
hex (:func:`~deepforge_adapters.hashing.check_sha1_hex`) and the job directory is always derived from it under
the configured ``workDir``.  ``jobDir``/``workDir`` are informational: a job_info read back from a model is
not trusted to name a path (``purge_job`` of a forged ``jobDir`` must not delete it).

The job id is the bundle's content hash (:func:`~deepforge_adapters.jobs.archive.bundle_hash`) unless
``ComputeJob.hash`` is given.  Like the WebGME executor, starting a hash that already exists returns the
existing job instead of running it again while that job is queued, running or succeeded; a failed or canceled
job is run again (the executor re-runs only canceled ones; re-running after a fix is what a local user
wants).  DeepForge defeats the reuse on purpose with a nonce file: see ``build_bundle(enable_job_caching=...)``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigSchema, Field, seconds_from_env
from ..errors import BundleError, ComputeError, ConfigError, InvalidHashError, SecretsError
from ..hashing import check_sha1_hex
from ..jobs.archive import DEFAULT_MAX_BYTES, bundle_hash, safe_extract
from ..jobs.credentials import Credentials, is_runner_command, job_environment, open_job_credentials
from ..jobs.layout import RESULTS_FILE, parse_results, read_executor_config
from ..process import terminate_job
from ..streams import atomic_write
from . import local_supervisor as sup
from .base import ComputeClient, ComputeJob, JobStatus, Poll, StatusMapping, StatusTable

WORK_DIR_ENV = "DEEPFORGE_LOCAL_COMPUTE_DIR"
#: ``lost`` is not written by anyone: it is what a job whose supervisor died while queued/running reads as.
LOST = "lost"
#: The most output bytes one poll reads; a watcher that fell behind catches up over several polls.
READ_LIMIT = 8 * 1024 * 1024

STATUS_TABLE = StatusTable(
    "local",
    {
        sup.QUEUED: StatusMapping(JobStatus.QUEUED),
        sup.RUNNING: StatusMapping(JobStatus.RUNNING),
        sup.SUCCESS: StatusMapping(JobStatus.SUCCESS),
        sup.FAILED: StatusMapping(JobStatus.FAILED, "the job exited with a non-zero code"),
        sup.CANCELED: StatusMapping(JobStatus.CANCELED),
        LOST: StatusMapping(JobStatus.FAILED, "the job's supervisor process died before the job finished"),
    },
)


def default_work_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/deepforge/compute``, else ``~/.local/share/deepforge/compute``."""
    environ = os.environ if environ is None else environ
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "deepforge" / "compute"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against pid reuse), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    except OSError:
        return ""
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _alive(pid: int, start: str | None) -> bool:
    if not os.path.exists("/proc/self/stat"):  # not Linux: best effort
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    current = _process_start(pid)
    return current is not None and (not start or current == start)


class LocalCompute(ComputeClient):
    """Jobs as detached supervisor processes under ``workDir``; see the module docstring."""

    id = "local"
    name = "Local Compute"
    schema = ConfigSchema(
        "local",
        (
            Field("processes", "Processes", "How many jobs may run at the same time", "integer", default=1, minimum=1),
            Field(
                "workDir",
                "Work directory",
                f"Where job directories, the queue state and the input cache live (default: ${WORK_DIR_ENV}, "
                "else ~/.local/share/deepforge/compute)",
                env=(WORK_DIR_ENV,),
            ),
        ),
    )
    status_table = STATUS_TABLE
    # A poll is two small file reads; a job that ended is noticed within 0.5 s (it was 1 s: in a chain of
    # short jobs most of each job's time; bench/scale_pipelines.py).
    poll_interval = 0.1
    max_poll_interval = 0.5

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.processes = int(self.config["processes"])
        self.work_dir = Path(self.config["workDir"] or default_work_dir()).expanduser().resolve()
        try:  # the supervisor reads it; refuse a grace that never ends (nan, inf) or is negative here, up front
            seconds_from_env(os.environ, sup.GRACE_ENV, sup.DEFAULT_GRACE)
        except ConfigError as exc:
            raise ComputeError(self.id, str(exc)) from None

    # -------------------------------------------------------------------------------------- job dirs
    def _job_hash(self, value: Any, what: str = "job_info hash") -> str:
        try:
            return check_sha1_hex(value, what)
        except InvalidHashError as exc:
            raise ComputeError(self.id, f"{exc}: not a valid job id") from None

    def _job(self, job_info: Mapping[str, Any]) -> sup.JobDir:
        """The job's directory, derived from its validated hash under our work dir (never job_info's paths)."""
        self.require(job_info, "hash")
        return sup.JobDir(self.work_dir / "jobs" / self._job_hash(job_info["hash"]))

    def _info(self, job_hash: str, job_dir: Path, name: str) -> dict[str, Any]:
        return {"hash": job_hash, "workDir": str(self.work_dir), "jobDir": str(job_dir), "name": name}

    # -------------------------------------------------------------------------------------- start
    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        if job.bundle is None:
            raise ComputeError(
                self.id,
                f"job {job.hash or job.name!r} has no bundle path; local compute runs bundles from this "
                "machine's disk (a bundle known only by its blob hash runs on the gme compute backend)",
            )
        bundle = Path(job.bundle)
        if not bundle.exists():
            raise ComputeError(self.id, f"bundle {bundle} does not exist")
        try:
            job_hash = job.hash or bundle_hash(bundle)
        except BundleError as exc:
            raise ComputeError(self.id, str(exc)) from None
        self._job_hash(job_hash, "job hash")
        jobs = self.work_dir / "jobs"
        job_dir = sup.JobDir(jobs / job_hash)
        info = self._info(job_hash, job_dir.path, job.name)
        existing = self._state(job_dir)
        if existing is not None:
            if existing.get("status") in (sup.QUEUED, sup.RUNNING, sup.SUCCESS):
                return info  # the same bundle again: the existing job, as the WebGME executor does
            if existing.get("status") == LOST and isinstance(existing.get("pgid"), int):
                terminate_job(existing["pgid"])
            shutil.rmtree(job_dir.path, ignore_errors=True)  # failed or canceled: run it again

        jobs.mkdir(parents=True, exist_ok=True)
        staging = sup.JobDir(tempfile.mkdtemp(prefix=f".new-{job_hash}-", dir=jobs))
        try:
            self._stage(bundle, staging.work)
            creds = self._credentials(staging.work)
            staging.write_state(
                {
                    "status": sup.QUEUED,
                    "createdAt": sup.now(),
                    "hash": job_hash,
                    "name": job.name,
                    "labels": list(job.labels),
                    "meta": dict(job.meta),
                }
            )
            try:
                os.rename(staging.path, job_dir.path)
            except OSError:
                if job_dir.read_state() is not None:  # someone else started the same hash just now
                    return info
                raise
        finally:
            shutil.rmtree(staging.path, ignore_errors=True)
        self._spawn_supervisor(job_dir, creds)
        return info

    def _credentials(self, work: Path) -> Credentials | None:
        """The job's plaintext credentials, opened here (the submitter holds the key) for the supervisor to
        hand to the runner; the key itself never reaches the job's processes."""
        config = read_executor_config(work)
        if not is_runner_command(config.cmd, config.args):
            return None
        try:
            return open_job_credentials(work, None)
        except SecretsError as exc:
            raise ComputeError(self.id, f"cannot start bundle: {exc}") from None

    def _stage(self, bundle: Path, work: Path) -> None:
        try:
            if bundle.is_dir():
                shutil.copytree(bundle, work, symlinks=True)
                for dirpath, dirnames, filenames in os.walk(work):
                    for name in [*dirnames, *filenames]:
                        if os.path.islink(os.path.join(dirpath, name)):
                            raise BundleError(f"{bundle}: bundles may not contain symbolic links ({name})")
            else:
                safe_extract(bundle, work, DEFAULT_MAX_BYTES)
            read_executor_config(work)
        except BundleError as exc:
            raise ComputeError(self.id, f"cannot start bundle: {exc}") from None

    def _spawn_supervisor(self, job_dir: sup.JobDir, creds: Credentials | None) -> None:
        """Start the job's supervisor, detached, without waiting for it: ``/bin/sh`` starts it in the
        background and exits at once (so neither we nor whoever holds the key is an ancestor of the job: it is
        reparented to init), printing its pid, which we record with its start time in ``supervisor.pid``.
        ``creds`` go to the supervisor on its stdin (sh passes the pipe on as fd 3 and never reads it).

        The supervisor used to fork itself away and write that file, and we waited for its interpreter to
        start and import the package (0.15-0.2 s a job, ~45 % of a 500-operation fan-out's plugin time); now
        the wait is one ``sh`` fork (bench/scale_pipelines.py)."""
        argv = [
            sys.executable,
            "-m",
            sup.__name__,
            str(job_dir.path),
            "--slots",
            str(self.processes),
            "--slots-dir",
            str(self.work_dir / "slots"),
            *(["--credentials-stdin"] if creds is not None else []),
        ]
        log = job_dir.path / "supervisor.log"
        # an asynchronous list's stdin is /dev/null unless redirected: hand it the pipe we got as fd 0 (as fd 3)
        script = 'log=$1; shift; exec 3<&0; "$@" <&3 3<&- >>"$log" 2>&1 & echo $!'
        proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", str(log), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=job_environment(os.environ),  # the key stays with us
            start_new_session=True,  # not in our process group: survives us and our Ctrl-C
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        printed = proc.stdout.read()
        proc.stdout.close()
        try:
            if creds is not None:
                proc.stdin.write(json.dumps(creds).encode("utf-8"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        try:
            pid = int(printed)
        except ValueError:
            pid = 0
        if code != 0 or pid <= 0:
            raise ComputeError(self.id, f"the job's supervisor did not start (exit code {code}); see {log}")
        with atomic_write(job_dir.pid_file) as f:
            f.write(json.dumps({"pid": pid, "start": _process_start(pid) or ""}).encode())

    # -------------------------------------------------------------------------------------- status
    def _state(self, job: sup.JobDir) -> dict[str, Any] | None:
        """state.json, with a queued/running job whose supervisor is gone reported as ``lost``."""
        state = job.read_state()
        if state is None or state.get("status") in sup.FINISHED:
            return state
        try:
            pid_info = json.loads(job.pid_file.read_text())
        except FileNotFoundError:
            return state  # just being started
        except ValueError:
            pid_info = {}
        pid = pid_info.get("pid")
        if isinstance(pid, int) and _alive(pid, pid_info.get("start")):
            return state
        state = job.read_state() or state  # it may have finished between the two reads
        if state.get("status") in sup.FINISHED:
            return state
        return {
            **state,
            "status": LOST,
            "reason": f"local compute: the job's supervisor (pid {pid}) died "
            f"while the job was {state.get('status')}; its output so far is kept",
        }

    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus:
        state = self._state(self._job(job_info))
        if state is None:
            return JobStatus.NOT_FOUND
        return self.status_table[state.get("status")].status

    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        """The state, then ``stdout.txt`` from the byte offset ``cursor`` (at most :data:`READ_LIMIT` at once)."""
        job = self._job(job_info)
        offset = self.byte_offset(cursor)
        state = self._state(job)  # before reading: a finished job has written all its output
        if state is None:
            missing = f"local compute: no job {job_info['hash']!r} under {self.work_dir}"
            return Poll(JobStatus.NOT_FOUND, cursor=offset, detail=missing)
        data = b""
        with contextlib.suppress(FileNotFoundError), open(job.stdout_file, "rb") as f:
            f.seek(offset)
            data = f.read(READ_LIMIT)
        reason = state.get("reason")
        return Poll(
            state.get("status"),
            data,
            offset + len(data),
            more=len(data) == READ_LIMIT,
            detail=str(reason) if reason else None,
        )

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        job = self._job(job_info)
        path = job.work / RESULTS_FILE
        try:
            return parse_results(path.read_bytes(), str(path))
        except FileNotFoundError:
            state = self._state(job) or {}
            raise ComputeError(
                self.id, f"job {job_info['hash']}: no {RESULTS_FILE} (status: {state.get('status', 'unknown')})"
            ) from None
        except ValueError as exc:
            raise ComputeError(self.id, f"job {job_info['hash']}: {exc}") from None

    # -------------------------------------------------------------------------------------- cancel, purge
    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        """Ask the job's supervisor to cancel (it SIGINTs the job's group, then SIGKILLs it); returns at once."""
        job = self._job(job_info)
        state = self._state(job)
        if state is None:
            raise ComputeError(self.id, f"cannot cancel: no job {job_info['hash']!r} under {self.work_dir}")
        if state.get("status") in sup.FINISHED:
            return
        job.cancel_file.touch()
        if state.get("status") == LOST:  # nobody will act on the request: clean up and record it ourselves
            if isinstance(state.get("pgid"), int):
                terminate_job(state["pgid"])
            job.update_state(status=sup.CANCELED, finishedAt=sup.now(), reason="canceled (supervisor was gone)")

    def purge_job(self, job_info: Mapping[str, Any]) -> None:
        job = self._job(job_info)
        state = self._state(job)
        if state is not None and state.get("status") in (sup.QUEUED, sup.RUNNING):
            raise ComputeError(self.id, f"job {job_info['hash']} is {state['status']}; cancel it before purging")
        shutil.rmtree(job.path, ignore_errors=True)
