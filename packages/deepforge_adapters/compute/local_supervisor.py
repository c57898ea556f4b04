"""The per-job supervisor of ``local`` compute: ``python -m deepforge_adapters.compute.local_supervisor JOBDIR``.

:class:`~deepforge_adapters.compute.local.LocalCompute` starts one of these per job, detached in its own
session, so the queue outlives the process that submitted the jobs.  Everything it knows is on disk in the
job directory, which is the only interface between it and any number of ``LocalCompute`` clients::

    <workDir>/jobs/<hash>/
        work/            the bundle; the job's cwd (results.json lands here)
        state.json       written only by the supervisor, atomically: status, exit code, reason, times, pgid
        stdout.txt       the job's stdout and stderr, merged in the order they were written
        supervisor.pid   pid and start time of this process (written by the client that spawned it)
        cancel           present once someone asked to cancel
    <workDir>/slots/<i>.lock   one fcntl lock per concurrent slot

The loop, top to bottom: wait for a free slot (or a cancel request), run ``executor_config.json``'s
``cmd``/``args`` in a new process group with output appended to ``stdout.txt``, forward a cancel request to
the whole group as SIGINT and SIGKILL it after the grace period, record the end.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ..errors import BundleError
from ..jobs.bundle import OPERATION_PGID_FILE, read_executor_config
from ..jobs.credentials import CredentialPipe, Credentials, job_environment, make_non_dumpable
from ..process import signal_group, spawn_group
from ..streams import atomic_write

GRACE_ENV = "DEEPFORGE_CANCEL_GRACE"
DEFAULT_GRACE = 10.0
#: Extra seconds the supervisor waits beyond the grace before SIGKILL, so that a runner inside the job can
#: first SIGKILL its own operation's process group (which is not ours to reach) and exit cleanly.
GRACE_MARGIN = 3.0
CACHE_ENV = "DEEPFORGE_WORKER_CACHE"
POLL = 0.1

QUEUED, RUNNING, SUCCESS, FAILED, CANCELED = "queued", "running", "success", "failed", "canceled"
FINISHED = frozenset({SUCCESS, FAILED, CANCELED})


def now() -> float:
    return time.time()


class JobDir:
    """Paths and state files of one local job (shared by the supervisor and the clients)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.work = self.path / "work"
        self.state_file = self.path / "state.json"
        self.stdout_file = self.path / "stdout.txt"
        self.pid_file = self.path / "supervisor.pid"
        self.cancel_file = self.path / "cancel"

    def read_state(self) -> dict[str, Any] | None:
        try:
            with open(self.state_file, encoding="utf-8") as f:
                value = json.load(f)
        except FileNotFoundError:
            return None
        return value if isinstance(value, dict) else None

    def write_state(self, state: dict[str, Any]) -> None:
        with atomic_write(self.state_file) as f:
            f.write(json.dumps(state, indent=2, sort_keys=True).encode("utf-8"))

    def update_state(self, **changes: Any) -> dict[str, Any]:
        state = self.read_state() or {}
        state.update(changes)
        self.write_state(state)
        return state

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()


def last_line(path: Path, limit: int = 4096) -> str | None:
    """The last non-empty line of a text file (reading only its tail)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            tail = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else None


class Supervisor:
    def __init__(
        self, job: JobDir, slots_dir: Path, slots: int, grace: float, credentials: Credentials | None = None
    ) -> None:
        self.job = job
        #: The job's plaintext credentials for its runner (handed over by the submitter on our stdin).
        self.credentials = credentials
        self.slots_dir = slots_dir
        self.slots = slots
        self.grace = grace
        self.stop_requested = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Someone signalled the supervisor itself (e.g. a shutdown): treat it as a cancel of the job.
        self.stop_requested = True

    def canceling(self) -> bool:
        return self.stop_requested or self.job.cancel_requested()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.job.update_state(status=QUEUED, supervisorPid=os.getpid())
        slot = self.wait_for_slot()
        if slot is None:
            self.job.update_state(status=CANCELED, finishedAt=now(), reason="canceled while queued")
            return 0
        index, lock = slot
        with lock:
            return self.run_job(index)

    def wait_for_slot(self) -> tuple[int, IO[bytes]] | None:
        """Hold one of the slot locks (for as long as the returned file stays open), or None if canceled."""
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        while not self.canceling():
            for i in range(self.slots):
                f = open(self.slots_dir / f"{i}.lock", "ab")  # noqa: SIM115 - kept open while the job runs
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.close()
                    continue
                return i, f
            time.sleep(POLL)
        return None

    def run_job(self, slot: int) -> int:
        try:
            config = read_executor_config(self.job.work)
        except BundleError as exc:
            self.finish(FAILED, None, f"local compute: bad bundle: {exc}")
            return 0
        command = [config["cmd"], *config.get("args", [])]
        env = job_environment(os.environ)
        # python3/python in the bundle's command resolve to the interpreter deepforge_adapters runs in.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
        env.setdefault(CACHE_ENV, str(self.job.path.parent.parent / "cache"))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.job.stdout_file, "ab") as out:
            with CredentialPipe(self.credentials) as pipe:
                try:
                    child = spawn_group(command, self.job.work, {**env, **pipe.env}, pass_fds=pipe.pass_fds)
                except OSError as exc:
                    self.finish(FAILED, None, f"local compute: cannot start {command[0]!r}: {exc.strerror}")
                    return 0
                pipe.started()
                self.credentials = None
            self.job.update_state(status=RUNNING, startedAt=now(), slot=slot, pgid=child.pid)
            canceled = self.pump(child, out)
        code = child.returncode
        if canceled or code in (130, -signal.SIGINT):
            self.finish(CANCELED, code, "canceled")
        elif code == 0:
            self.finish(SUCCESS, code, None)
        else:
            self.finish(FAILED, code, last_line(self.job.stdout_file) or f"exited with code {code}")
        return 0

    def pump(self, child: subprocess.Popen[bytes], out: IO[bytes]) -> bool:
        """Copy output until the job's group is done; handle cancel.  Returns whether it was canceled."""
        assert child.stdout is not None
        fd = child.stdout.fileno()
        kill_at: float | None = None
        try:
            while True:
                if kill_at is None and self.canceling():
                    signal_group(child.pid, signal.SIGINT)
                    kill_at = now() + self.grace + GRACE_MARGIN
                if kill_at is not None and now() >= kill_at:
                    signal_group(child.pid, signal.SIGKILL)
                    self.kill_operation_group()
                ready, _, _ = select.select([fd], [], [], POLL)
                if not ready:
                    if child.poll() is not None:
                        signal_group(child.pid, signal.SIGKILL)  # leftovers still holding the pipe
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
        finally:
            child.stdout.close()
            child.wait()
            signal_group(child.pid, signal.SIGKILL)
            self.kill_operation_group()
        return kill_at is not None

    def kill_operation_group(self) -> None:
        """SIGKILL the group of an operation whose runner died before it could clean up (see the runner)."""
        try:
            pgid = int((self.job.work / OPERATION_PGID_FILE).read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if pgid > 1:
            signal_group(pgid, signal.SIGKILL)
        (self.job.work / OPERATION_PGID_FILE).unlink(missing_ok=True)

    def finish(self, status: str, code: int | None, reason: str | None) -> None:
        self.job.update_state(status=status, exitCode=code, reason=reason, finishedAt=now())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_adapters.compute.local_supervisor")
    parser.add_argument("job_dir")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--slots-dir", required=True)
    parser.add_argument("--detach", action="store_true", help="fork away; the first process writes the pid file")
    parser.add_argument("--credentials-stdin", action="store_true", help="read the job's credentials (JSON)")
    args = parser.parse_args(argv)
    make_non_dumpable()  # we may hold the job's credentials
    credentials: Credentials | None = None
    if args.credentials_stdin:
        credentials = json.loads(sys.stdin.buffer.read() or b"{}")
    job = JobDir(args.job_dir)
    if args.detach:
        pid = os.fork()
        if pid > 0:  # the first process: record the supervisor, then leave it an orphan of init
            from .local import _process_start

            with atomic_write(job.pid_file) as f:
                f.write(json.dumps({"pid": pid, "start": _process_start(pid) or ""}).encode())
            os._exit(0)
    try:
        grace = float(os.environ.get(GRACE_ENV, "") or DEFAULT_GRACE)
    except ValueError:
        grace = DEFAULT_GRACE
    return Supervisor(job, Path(args.slots_dir), max(1, args.slots), grace, credentials).run()


if __name__ == "__main__":
    sys.exit(main())
