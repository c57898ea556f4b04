"""The per-job supervisor of ``local`` compute: ``python -m deepforge_adapters.compute.local_supervisor JOBDIR``.

:class:`~deepforge_adapters.compute.local.LocalCompute` starts one of these per job, detached in its own
session, so the queue outlives the process that submitted the jobs.  Everything it knows is on disk in the
job directory, which is the only interface between it and any number of ``LocalCompute`` clients::

    <workDir>/jobs/<hash>/
        work/            the bundle; the job's cwd (results.json lands here)
        state.json       written only by the supervisor, atomically: status, exit code, reason, times, pgid
        stdout.txt       the job's stdout and stderr, merged in the order they were written
        supervisor.pid   pid and start time of this process (written by the client that started it)
        cancel           present once someone asked to cancel
    <workDir>/slots/<i>.lock   one fcntl lock per concurrent slot
    <workDir>/slots/queue.lock held by the queued supervisor that polls the slots; the rest wait for it

The loop, top to bottom: wait for a free slot (or a cancel request; one queued supervisor at a time polls the
slots, the rest wait in the kernel for their turn), run ``executor_config.json``'s
``cmd``/``args`` with :func:`deepforge_adapters.process.run` (output appended to ``stdout.txt``), forward a
cancel request as SIGINT and SIGKILL every process of the job after the grace period (and at its end, so a
double-forked daemon does not outlive it), record the end.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any

from ..config import seconds_from_env
from ..errors import BundleError, ConfigError
from ..jobs.credentials import CredentialPipe, Credentials, job_environment
from ..jobs.layout import read_executor_config
from ..process import JobProcess, make_non_dumpable
from ..process import run as run_job_process
from ..streams import atomic_write

GRACE_ENV = "DEEPFORGE_CANCEL_GRACE"
DEFAULT_GRACE = 10.0
#: Extra seconds the supervisor waits beyond the grace before SIGKILL, so that a runner inside the job can
#: first stop its own operation and exit cleanly (with its own last line).
GRACE_MARGIN = 3.0
CACHE_ENV = "DEEPFORGE_WORKER_CACHE"
POLL = 0.1
#: How often a queued supervisor looks for a cancel request (the head of the queue polls the slots every POLL).
QUEUED_POLL = 0.5
#: Held by the one queued supervisor that polls the slots (:meth:`Supervisor.wait_for_slot`).
QUEUE_LOCK = "queue.lock"

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
        """Hold one of the slot locks (for as long as the returned file stays open), or None if canceled.

        Only the head of the queue polls the slots: the queued supervisor holding ``queue.lock``.  The others
        wait for that lock in the kernel (a thread blocked in ``flock``), their main thread waking every
        ``QUEUED_POLL`` only to look for a cancel request.  When every queued supervisor tried every slot
        every ``POLL`` (a fan-out keeps ExecutePipeline's 32 running jobs submitted, 30 of them queued on 2
        slots), a 500-operation fan-out spent 21 ms more CPU per supervisor (process accounting,
        bench/scale_pipelines.py), and the cost grew with the length of the queue.
        """
        self.slots_dir.mkdir(parents=True, exist_ok=True)
        if self.canceling():
            return None
        slot = self.try_slots()
        if slot is not None:
            return slot
        got: list[tuple[int, IO[bytes]]] = []
        given_up = threading.Event()
        ended = threading.Event()

        def queue() -> None:
            try:
                with open(self.slots_dir / QUEUE_LOCK, "ab") as head:
                    fcntl.flock(head.fileno(), fcntl.LOCK_EX)  # our turn at the head of the queue
                    while not given_up.is_set():
                        slot = self.try_slots()
                        if slot is not None:
                            got.append(slot)
                            return  # leaving the block hands the head of the queue to the next supervisor
                        time.sleep(POLL)
            finally:
                ended.set()

        threading.Thread(target=queue, name="deepforge-queue", daemon=True).start()
        while not ended.wait(QUEUED_POLL):
            if self.canceling():
                given_up.set()  # a thread still blocked in flock ends with the process
                return None
        return got[0] if got else None

    def try_slots(self) -> tuple[int, IO[bytes]] | None:
        """One free slot's lock, held, or None when every slot is taken."""
        for i in range(self.slots):
            f = open(self.slots_dir / f"{i}.lock", "ab")  # noqa: SIM115 - kept open while the job runs
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            return i, f
        return None

    def run_job(self, slot: int) -> int:
        try:
            config = read_executor_config(self.job.work)
        except BundleError as exc:
            self.finish(FAILED, None, f"local compute: bad bundle: {exc}")
            return 0
        command = config.argv
        env = job_environment(os.environ)
        # python3/python in the bundle's command resolve to the interpreter deepforge_adapters runs in.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
        env.setdefault(CACHE_ENV, str(self.job.path.parent.parent / "cache"))
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.job.stdout_file, "ab") as out, CredentialPipe(self.credentials) as pipe:

            def sink(chunk: bytes) -> None:
                out.write(chunk)
                out.flush()

            def started(proc: JobProcess) -> None:
                pipe.started()  # the runner holds the read end now: feed it, then forget the credentials
                self.credentials = None
                self.job.update_state(status=RUNNING, startedAt=now(), slot=slot, pgid=proc.pid)

            try:
                # SIGINT on cancel, SIGKILL to every process of the job after the grace and at its end.
                result = run_job_process(
                    command,
                    self.job.work,
                    {**env, **pipe.env},
                    sink,
                    should_cancel=self.canceling,
                    grace=self.grace + GRACE_MARGIN,
                    on_start=started,
                    poll=POLL,
                    pass_fds=pipe.pass_fds,
                )
            except OSError as exc:
                self.finish(FAILED, None, f"local compute: cannot start {command[0]!r}: {exc.strerror}")
                return 0
        code = result.returncode
        if result.sink_error is not None:
            self.finish(FAILED, code, f"local compute: writing {self.job.stdout_file} failed: {result.sink_error}")
        elif result.canceled or code in (130, -signal.SIGINT):
            self.finish(CANCELED, code, "canceled")
        elif code == 0:
            self.finish(SUCCESS, code, None)
        else:
            self.finish(FAILED, code, last_line(self.job.stdout_file) or f"exited with code {code}")
        return 0

    def finish(self, status: str, code: int | None, reason: str | None) -> None:
        self.job.update_state(status=status, exitCode=code, reason=reason, finishedAt=now())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_adapters.compute.local_supervisor")
    parser.add_argument("job_dir")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--slots-dir", required=True)
    parser.add_argument("--credentials-stdin", action="store_true", help="read the job's credentials (JSON)")
    args = parser.parse_args(argv)
    make_non_dumpable()  # we may hold the job's credentials
    credentials: Credentials | None = None
    if args.credentials_stdin:
        credentials = json.loads(sys.stdin.buffer.read() or b"{}")
    job = JobDir(args.job_dir)
    try:  # LocalCompute refused a bad value before starting us; never wait a nan or negative grace
        grace = seconds_from_env(os.environ, GRACE_ENV, DEFAULT_GRACE)
    except ConfigError:
        grace = DEFAULT_GRACE
    return Supervisor(job, Path(args.slots_dir), max(1, args.slots), grace, credentials).run()


if __name__ == "__main__":
    sys.exit(main())
