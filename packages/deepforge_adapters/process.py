"""The one process-group runner: a job's command, every process it starts, and nothing that outlives it.

The in-job runner (:mod:`.jobs.runner`), local compute's supervisor (:mod:`.compute.local_supervisor`) and
the worker (``deepforge_worker.execution``) all run a command through :func:`run` (or :func:`spawn` and a
loop of their own): stdin closed, stderr merged into stdout in write order, the merged output streamed to a
*sink* as it arrives.  With ``stderr_sink`` stderr is a pipe of its own streamed to that sink instead (the
worker keeps a bundle's stderr in ``job_stderr.txt``, as the Node worker does).

Design: a per-job shim.  :func:`spawn` does not start the command itself; it starts this file as a tiny
stdlib-only program (``python -I -S -c <load process.py> process.py --shim ... -- argv``) in a new session, and
the shim:

* makes itself a **child subreaper** (``prctl(PR_SET_CHILD_SUBREAPER)``): anything the job double-forks and
  orphans (``setsid()`` daemons included) is reparented to the shim, not to init, so the shim's
  descendants, read from ``/proc``, are exactly the job's processes;
* where the machine allows it, creates a **cgroup v2 leaf** (``<cgroup2 mount><our cgroup>/deepforge-job-<pid>``
  with a ``cgroup.kill`` file) and puts the command into it before it runs (the shim stays outside, so the
  leaf holds only the job); ``DEEPFORGE_JOB_CGROUP=0`` turns this off;
* runs the command in its own process group, forwards a cancel (SIGINT to the shim) as SIGINT to that
  group and to every orphan reparented to it, and on SIGTERM (the hard kill) or when the command exits
  **kills every descendant**: ``cgroup.kill`` of the leaf, plus SIGKILL to each descendant found in
  ``/proc``, reaping and repeating until none is left, then removes the leaf;
* exits with the command's status (a command killed by a signal makes the shim die of the same signal).

Why a shim per job and not the caller as the subreaper: the worker daemon runs many jobs at once, and an
orphan reparented to the daemon could not be told apart from another job's; a subreaper must be per job.
The shim also works for commands that are not Python (a DeepForge bundle's ``node start.js``).  The shim
stays with the caller's uid (so it can create the cgroup and kill everything) while ``user``/``group``/
``extra_groups`` apply to the command only.

Warm shims: a shim's interpreter and imports took ~45 ms (69-81 ms inside a busy worker) before its command
ran.  A :class:`ShimPool` starts shims ahead of their jobs; each does everything up to the command, then waits
on a socket for it (argv, working directory, environment, and its file descriptors by ``SCM_RIGHTS``), so
the command runs exactly as under a shim started for it.  The worker daemon keeps one per slot.

After the shim exits, :func:`run` reads the pipe to EOF for at most ``drain_timeout`` seconds: the job's
processes are dead by then, so a leaked write end (a file descriptor sent to a process outside the job)
cannot keep a job from ending.  A sink that raises (a full disk) stops the job: it is killed, the rest of
its output is read and discarded, and :class:`RunResult` carries ``sink_error`` for the caller to report.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

#: Set to ``0`` to never use a cgroup (the subreaper alone then finds every descendant).
CGROUP_ENV = "DEEPFORGE_JOB_CGROUP"
#: Seconds the output pipe is still read after the job's processes are gone.
DRAIN_TIMEOUT = 5.0
#: Seconds an idle warm shim gets to exit once its pool lets it go, before it is killed.
WARM_SHIM_EXIT_WAIT = 2.0
#: What a warm shim's own environment keeps of its owner's, to start its interpreter: not the owner's secrets
#: (a worker's token), and not the job's, which it gets with its command.
WARM_SHIM_ENVIRONMENT = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE")
#: The most a warm shim reads of its command's description (argv, cwd, environment as JSON).
WARM_SHIM_MAX_REQUEST = 64 * 1024 * 1024
#: How long the shim keeps killing and reaping leftovers before it gives up (a process stuck in the kernel).
KILL_DEADLINE = 30.0
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_SHIM = str(Path(__file__).resolve())
#: How the shim starts: this file loaded as a module (a script given by path is compiled from source every
#: time, a module is read from its ``__pycache__`` bytecode: ~15 ms of CPU less per shim, two shims per job).
_SHIM_BOOT = (
    "import importlib.util as u, sys; s = u.spec_from_file_location('deepforge_job_shim', sys.argv[1]); "
    "m = u.module_from_spec(s); s.loader.exec_module(m); sys.exit(m._Shim(sys.argv[3:]).main())"
)

Sink = Callable[[bytes], object]


# ------------------------------------------------------------------------------------------------ caller side
def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the whole group; a group that is already gone (or not ours) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_job(pid: int) -> None:
    """Kill every process of a job whose shim is ``pid`` (e.g. one recorded by a process that died).

    SIGTERM makes the shim kill all its descendants and exit; a pid that is gone is not an error.
    """
    signal_group(pid, signal.SIGTERM)


class JobProcess:
    """A running job (its shim); ``stdout`` is the output pipe (stderr merged into it unless ``stderr`` is a
    pipe of its own: :func:`spawn` with ``separate_stderr``), ``pid`` the shim's pid and session id."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.stdout = popen.stdout
        self.stderr = popen.stderr
        self._killed_at: float | None = None

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def interrupt(self) -> None:
        """Cancel: SIGINT to the command's process group and to every orphan of the job."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)

    def kill(self) -> None:
        """Kill every process of the job now (the shim SIGKILLs them all, then exits)."""
        if self._killed_at is None:
            self._killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def _check_kill(self) -> None:
        """A shim that did not end within the kill deadline (never expected) is SIGKILLed with its group."""
        if self._killed_at is not None and time.monotonic() - self._killed_at > KILL_DEADLINE + 5:
            signal_group(self.pid, signal.SIGKILL)


def spawn(
    argv: Sequence[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    *,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    separate_stderr: bool = False,
    shims: ShimPool | None = None,
) -> JobProcess:
    """Start ``argv`` under a per-job shim (see the module docstring); read the merged output from ``.stdout``
    (with ``separate_stderr``, stdout from ``.stdout`` and stderr from ``.stderr``).

    Raises :class:`OSError` (with the errno and strerror of the failed exec) if the command cannot start.
    ``pass_fds`` are kept open in the command, at the same numbers; ``user``/``group``/``extra_groups`` as in
    :class:`subprocess.Popen`, applied to the command only.  With ``shims``, a shim that pool started ahead
    runs the command when it has one of this kind, and the pool starts the next one after this start.
    """
    if not argv:
        raise ValueError("spawn: empty argv")
    if any(int(fd) <= 2 for fd in pass_fds):
        raise ValueError(f"spawn: pass_fds {list(pass_fds)} must not name stdin, stdout or stderr")
    kind = ShimKind.of(user, group, extra_groups, separate_stderr)
    warm = shims.take(kind) if shims is not None else None
    if warm is not None:
        popen, status_r = warm.popen, warm.status_r
        try:
            warm.send(argv, cwd, env, pass_fds)
        except OSError:  # it died while idle: end it and start the usual way
            warm.discard()
            warm = None
    if warm is None:
        popen, status_r = _start_shim(kind, argv, cwd, env, pass_fds)
    try:
        with os.fdopen(status_r, "rb") as status:
            line = status.readline().decode("utf-8", "replace").strip()
    except OSError:
        line = ""
    if shims is not None:
        shims.refill(kind)  # after this start, so the next shim's interpreter does not compete with it
    if line != "ok":
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        popen.wait()
        code, _, message = line.partition(" ")
        number = int(code) if code.isdigit() else errno.EIO
        raise OSError(number, message or f"the job shim ended with {popen.returncode}")
    return JobProcess(popen)


class ShimKind(NamedTuple):
    """What a shim is fixed to when it starts: the command's identity and whether stderr is a pipe of its own."""

    user: str | None
    group: str | None
    extra_groups: tuple[str, ...] | None
    separate_stderr: bool

    @classmethod
    def of(
        cls,
        user: str | int | None = None,
        group: str | int | None = None,
        extra_groups: Sequence[str | int] | None = None,
        separate_stderr: bool = False,
    ) -> ShimKind:
        return cls(
            None if user is None else str(user),
            None if group is None else str(group),
            None if extra_groups is None else tuple(str(g) for g in extra_groups),
            separate_stderr,
        )

    def options(self) -> list[str]:
        opts = []
        if self.user is not None:
            opts += ["--user", self.user]
        if self.group is not None:
            opts += ["--group", self.group]
        if self.extra_groups is not None:
            opts += ["--extra-groups", ",".join(self.extra_groups)]
        return opts


def _start_shim(
    kind: ShimKind,
    argv: Sequence[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    pass_fds: Sequence[int],
    control_fd: int | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start a shim in a new session; its Popen and the read end of its status pipe.  Without ``argv`` it
    waits for its command on ``control_fd`` (a warm shim, :class:`ShimPool`)."""
    status_r, status_w = os.pipe()
    shim = [sys.executable, "-I", "-S", "-c", _SHIM_BOOT, _SHIM, "--shim", "--status-fd", str(status_w)]
    if control_fd is not None:
        shim += ["--control-fd", str(control_fd)]
    for fd in pass_fds:
        shim += ["--pass-fd", str(int(fd))]
    try:
        popen = subprocess.Popen(
            [*shim, *kind.options(), "--", *argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if kind.separate_stderr else subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(status_w, *pass_fds, *(() if control_fd is None else (control_fd,))),
        )
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    return popen, status_r


class WarmShim:
    """A shim started ahead of its job, waiting on a socket for it (:meth:`send`)."""

    def __init__(self, kind: ShimKind) -> None:
        import socket  # here, not at the top: this file is also the shim, whose start-up is what counts

        self.kind = kind
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {k: os.environ[k] for k in WARM_SHIM_ENVIRONMENT if k in os.environ}
            self.popen, self.status_r = _start_shim(kind, (), "/", env, (), control_fd=theirs.fileno())
        except BaseException:
            self.control.close()
            raise
        finally:
            theirs.close()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(
        self, argv: Sequence[str], cwd: str | os.PathLike[str], env: Mapping[str, str], pass_fds: Sequence[int]
    ) -> None:
        """Hand the shim its command: argv, working directory and environment as JSON, ``pass_fds`` along
        with them (SCM_RIGHTS; the shim puts each back at its number here).  Then the socket is closed."""
        import json
        import socket

        request = {"argv": [os.fsdecode(a) for a in argv], "cwd": os.fsdecode(cwd), "env": dict(env),
                   "fds": [int(fd) for fd in pass_fds]}  # fmt: skip
        payload = json.dumps(request).encode()
        message = len(payload).to_bytes(8, "big") + payload
        try:
            sent = socket.send_fds(self.control, [message], [int(fd) for fd in pass_fds])
            self.control.sendall(message[sent:])
        finally:
            self.control.close()

    def discard(self) -> None:
        """End an idle shim: closing its socket is its end (EOF); one that does not go is killed."""
        self.control.close()
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()
        with contextlib.suppress(OSError):
            os.close(self.status_r)
        try:
            self.popen.wait(timeout=WARM_SHIM_EXIT_WAIT)
        except subprocess.TimeoutExpired:
            signal_group(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


class ShimPool:
    """Job shims started before their jobs, so a job starts in the time of a fork, not of an interpreter.

    Why: in the worker, :func:`spawn` took 69-81 ms from the call to the command running (the shim's
    interpreter, its imports and the cgroup; bench/worker_overhead.py), a third of a trivial job's dispatch.
    A warm shim is the same program, started the same way, that has done everything up to the command and
    waits on a socket for it (:meth:`WarmShim.send`); the command then runs exactly as under a cold shim.
    The pool keeps up to ``size`` idle shims of each :class:`ShimKind` it was asked for (a worker: one per
    slot); an idle shim that died is skipped.  :meth:`close` ends the idle ones, and an owner that dies
    without closing ends them too (their socket reads EOF).
    """

    def __init__(self, size: int = 1) -> None:
        import threading

        self.size = max(1, size)
        #: Jobs started by a warm shim so far.
        self.taken = 0
        self._idle: dict[ShimKind, list[WarmShim]] = {}
        #: Shims being started now, by kind (so concurrent refills do not start more than ``size``).
        self._starting: dict[ShimKind, int] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(self, kind: ShimKind) -> WarmShim | None:
        """An idle shim of ``kind`` (None if there is none: the caller starts one the usual way)."""
        while True:
            with self._lock:
                idle = self._idle.setdefault(kind, [])
                shim = idle.pop(0) if idle else None
            if shim is None:
                return None
            if shim.alive():
                with self._lock:
                    self.taken += 1
                return shim
            shim.discard()

    def refill(self, kind: ShimKind) -> None:
        """Start idle shims of ``kind`` until there are ``size`` of them."""
        while True:
            with self._lock:
                if self._closed or len(self._idle.get(kind, ())) + self._starting.get(kind, 0) >= self.size:
                    return
                self._starting[kind] = self._starting.get(kind, 0) + 1
            try:
                shim: WarmShim | None = WarmShim(kind)
            except OSError as exc:  # no fork possible now: jobs still start, cold
                import logging

                logging.getLogger(__name__).warning("cannot start a job shim ahead of its job: %s", exc)
                shim = None
            with self._lock:
                self._starting[kind] -= 1
                if shim is not None and not self._closed:
                    self._idle.setdefault(kind, []).append(shim)
                    continue
            if shim is not None:  # closed meanwhile
                shim.discard()
            return

    def idle_pids(self) -> list[int]:
        """The pids of the shims waiting for a job now."""
        with self._lock:
            return [shim.popen.pid for shims in self._idle.values() for shim in shims]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [shim for shims in self._idle.values() for shim in shims]
            self._idle.clear()
        for shim in idle:
            shim.discard()

    def __enter__(self) -> ShimPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunResult(NamedTuple):
    """How :func:`run` ended: the command's exit code (negative: killed by that signal) and why.

    A NamedTuple, not a dataclass: this file is also the per-job shim, and ``dataclasses`` (which imports
    ``inspect`` and ``ast``) was most of its start-up time (two shims per job: bench/scale_pipelines.py)."""

    returncode: int
    canceled: bool
    #: The exception the sink raised; the job was then killed and its remaining output discarded.
    sink_error: BaseException | None = None
    #: True if the pipe was still open ``drain_timeout`` seconds after the job ended (output after that lost).
    drain_timed_out: bool = False


def run(
    argv: Sequence[str],
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    sink: Sink,
    *,
    should_cancel: Callable[[], bool] = lambda: False,
    should_kill: Callable[[], bool] = lambda: False,
    grace: float = 10.0,
    drain_timeout: float = DRAIN_TIMEOUT,
    on_start: Callable[[JobProcess], None] | None = None,
    poll: float = 0.1,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
    stderr_sink: Sink | None = None,
    shims: ShimPool | None = None,
) -> RunResult:
    """Run ``argv`` (:func:`spawn`), stream its output to ``sink`` and return when nothing of it is left.

    stderr is merged into the output in write order, unless ``stderr_sink`` is given: then stderr goes to that
    sink, stdout to ``sink``.  ``should_cancel`` is polled every ``poll`` seconds: once true the job gets
    SIGINT, and ``grace`` seconds later (or as soon as ``should_kill`` is true) every process of it is killed.
    ``on_start`` receives the :class:`JobProcess` right after the spawn.  :class:`OSError` if the command
    cannot start.  ``shims``: see :func:`spawn`.
    """
    proc = spawn(
        argv,
        cwd,
        env,
        pass_fds=pass_fds,
        user=user,
        group=group,
        extra_groups=extra_groups,
        separate_stderr=stderr_sink is not None,
        shims=shims,
    )
    if on_start is not None:
        on_start(proc)
    assert proc.stdout is not None
    sinks: dict[int, Sink] = {proc.stdout.fileno(): sink}
    if stderr_sink is not None:
        assert proc.stderr is not None
        sinks[proc.stderr.fileno()] = stderr_sink
    open_fds = list(sinks)
    canceled = False
    kill_at: float | None = None
    killed = False
    sink_error: BaseException | None = None
    ended_at: float | None = None
    drain_timed_out = False
    try:
        while True:
            now = time.monotonic()
            if not canceled and should_cancel():
                canceled = True
                proc.interrupt()
                kill_at = now + grace
            if not killed and (should_kill() or (kill_at is not None and now >= kill_at)):
                killed = True
                proc.kill()
            proc._check_kill()
            if ended_at is None and proc.poll() is not None:
                ended_at = now  # the shim is gone, and with it every process of the job
            if ended_at is not None and now - ended_at >= drain_timeout:
                drain_timed_out = True
                break
            ready, _, _ = select.select(open_fds, [], [], poll)
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    open_fds.remove(fd)
                    continue
                if sink_error is None:
                    try:
                        sinks[fd](chunk)
                    except Exception as exc:  # e.g. ENOSPC writing the stdout file: the job cannot go on
                        sink_error = exc
                        if not killed:
                            killed = True
                            proc.kill()
            if not open_fds:
                break
    finally:
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
        code = proc.wait()
    return RunResult(code, canceled, sink_error, drain_timed_out)


# ------------------------------------------------------------------------------------------------ the shim
def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the process tree (zombies included), read from ``/proc``."""
    children = _children_map()
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, ()))
    return out


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, value, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _set_subreaper() -> bool:
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def make_non_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: no core dumps, and same-uid processes can no longer read our
    ``/proc/<pid>/`` environ, mem or fds, nor ptrace us.  Every process that holds a key or a job's
    credentials (worker, local supervisor, runner) and every job shim (an ancestor of job code, holding the
    environment and file descriptors it passes on) calls it for itself: ``execve`` resets the flag, so it
    cannot be inherited.  Returns whether it worked (False off Linux)."""
    return _prctl(_PR_SET_DUMPABLE, 0)


def _cgroup2_base() -> Path | None:
    """The cgroup v2 directory this process is in, if a cgroup2 hierarchy is mounted."""
    mount = None
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                mount = left.split()[4]
                break
    if mount is None:
        return None
    own = None
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                own = line[3:].strip()
    if own is None:
        return None
    return Path(mount) / own.lstrip("/")


def cgroups_wanted() -> bool:
    """Whether our environment leaves job cgroups on (``DEEPFORGE_JOB_CGROUP``)."""
    return os.environ.get(CGROUP_ENV, "").strip().lower() not in ("0", "no", "off", "false")


def make_cgroup_leaf() -> Path | None:
    """A new empty cgroup v2 leaf with ``cgroup.kill`` below our own cgroup, or None where not allowed."""
    if not cgroups_wanted():
        return None
    base = _cgroup2_base()
    if base is None:
        return None
    leaf = base / f"deepforge-job-{os.getpid()}"
    try:
        leaf.mkdir()
    except OSError:
        return None
    if not (leaf / "cgroup.kill").exists():  # kernels before 5.14
        _remove_cgroup(leaf)
        return None
    return leaf


def _cgroup_tree(leaf: Path) -> Iterator[Path]:
    """``leaf`` and the cgroups below it, deepest first (nested job shims make their own leaves)."""
    with contextlib.suppress(OSError):
        for child in leaf.iterdir():
            if child.is_dir():
                yield from _cgroup_tree(child)
    yield leaf


def _cgroup_empty(leaf: Path) -> bool:
    try:
        return all(not (c / "cgroup.procs").read_text().strip() for c in _cgroup_tree(leaf))
    except OSError:
        return True


def _remove_cgroup(leaf: Path) -> None:
    for cgroup in _cgroup_tree(leaf):
        with contextlib.suppress(OSError):
            cgroup.rmdir()


class _Shim:
    def __init__(self, argv: list[str]) -> None:
        self.status_fd = -1
        self.control_fd: int | None = None
        self.pass_fds: list[int] = []
        self.user: str | None = None
        self.group: str | None = None
        self.extra_groups: list[str] | None = None
        i = 0
        while argv[i] != "--":
            opt, value = argv[i], argv[i + 1]
            if opt == "--status-fd":
                self.status_fd = int(value)
            elif opt == "--control-fd":
                self.control_fd = int(value)
            elif opt == "--pass-fd":
                self.pass_fds.append(int(value))
            elif opt == "--user":
                self.user = value
            elif opt == "--group":
                self.group = value
            elif opt == "--extra-groups":
                self.extra_groups = [g for g in value.split(",") if g]
            i += 2
        self.command = argv[i + 1 :]
        self.child: int | None = None
        self.cgroup: Path | None = None
        self.interrupt_pending = False
        self.terminated = False

    # --- signals: SIGINT is a cancel, SIGTERM the hard kill -----------------------------------------
    def on_sigint(self, signum: int, frame: object) -> None:
        if self.child is None:
            self.interrupt_pending = True
            return
        self.forward_interrupt()

    def forward_interrupt(self) -> None:
        """SIGINT to the command's group, and to every orphan (and its group) reparented to us."""
        assert self.child is not None
        signal_group(self.child, signal.SIGINT)
        for pid in _children_map().get(os.getpid(), ()):
            if pid == self.child:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGINT)
                pgid = os.getpgid(pid)
                if pgid == pid:
                    os.killpg(pgid, signal.SIGINT)

    def on_sigterm(self, signum: int, frame: object) -> None:
        self.terminated = True
        self.kill_all()

    def kill_all(self) -> None:
        """SIGKILL every descendant (and the cgroup leaf), reaping, until none is left (or the deadline)."""
        give_up = time.monotonic() + KILL_DEADLINE
        me = os.getpid()
        while True:
            if self.cgroup is not None:
                with contextlib.suppress(OSError):
                    (self.cgroup / "cgroup.kill").write_text("1")
            left = descendants(me)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.reap()
            if not left and (self.cgroup is None or _cgroup_empty(self.cgroup)):
                return
            if time.monotonic() > give_up:
                os.write(2, f"deepforge job shim: processes {left} would not die\n".encode())
                return
            time.sleep(0.01)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.child:
                self.status = status

    def receive_command(self) -> bool:
        """A warm shim (:class:`WarmShim`): become what a cold shim started for this command would be (its
        environment, working directory and file descriptors at their numbers), or False on EOF."""
        import fcntl
        import json
        import socket

        assert self.control_fd is not None
        sock = socket.socket(fileno=self.control_fd)
        data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 256)
        try:
            while 0 < len(data) < 8 or 8 <= len(data) < 8 + int.from_bytes(data[:8], "big"):
                if len(data) >= 8 and int.from_bytes(data[:8], "big") > WARM_SHIM_MAX_REQUEST:
                    raise ValueError("the command's description is too large")
                more = sock.recv(1 << 20)
                if not more:
                    raise ValueError("the command's description ended early")
                data += more
            if not data:
                return False
            request = json.loads(data[8:])
            wanted = [int(fd) for fd in request["fds"]]
            if len(wanted) != len(fds) or any(fd <= 2 for fd in wanted):
                raise ValueError(f"file descriptors {wanted} do not match the {len(fds)} received")
            # Out of the way first: the numbers the command expects may be ours (status pipe, a received fd).
            top = max([*wanted, *fds, self.status_fd, sock.fileno()]) + 1
            status = fcntl.fcntl(self.status_fd, fcntl.F_DUPFD_CLOEXEC, top)
            os.close(self.status_fd)
            self.status_fd = status
            moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, top) for fd in fds]
            for fd in fds:
                os.close(fd)
            fds = []
            for src, dst in zip(moved, wanted, strict=True):
                os.dup2(src, dst)
                os.close(src)
        finally:
            sock.close()
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pass_fds = wanted
        self.command = [str(a) for a in request["argv"]]
        if not self.command:
            raise ValueError("no command")
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in request["env"].items()})
        os.chdir(request["cwd"])
        return True

    # --- spawn -----------------------------------------------------------------------------------------
    def _ids(self) -> tuple[int | None, int | None, list[int] | None]:
        import grp
        import pwd

        def gid(g: str) -> int:
            return int(g) if g.isdigit() else grp.getgrnam(g).gr_gid

        uid = None
        if self.user is not None:
            uid = int(self.user) if self.user.isdigit() else pwd.getpwnam(self.user).pw_uid
        return (
            uid,
            gid(self.group) if self.group is not None else None,
            [gid(g) for g in self.extra_groups] if self.extra_groups is not None else None,
        )

    def _preexec(self, uid: int | None, gid: int | None, groups: list[int] | None) -> Callable[[], None]:
        cgroup = self.cgroup

        def enter() -> None:
            # Order matters: join the leaf while still privileged, then drop to the job's identity.
            os.setpgid(0, 0)
            if cgroup is not None:
                with open(cgroup / "cgroup.procs", "w") as f:
                    f.write("0")
            if groups is not None:
                os.setgroups(groups)
            if gid is not None:
                os.setregid(gid, gid)
            if uid is not None:
                os.setreuid(uid, uid)

        return enter

    def main(self) -> int:
        signal.signal(signal.SIGINT, self.on_sigint)
        signal.signal(signal.SIGTERM, self.on_sigterm)
        make_non_dumpable()  # job code must not read what we pass on (environment, inherited fds) via /proc
        _set_subreaper()
        if self.control_fd is None:
            self.cgroup = make_cgroup_leaf()
        else:
            # A warm shim makes its leaf while it waits (a new cgroup's first process joined it 10-20 ms
            # slower right after the mkdir), and drops it if the command's environment turns cgroups off.
            self.cgroup = make_cgroup_leaf()
            try:
                received = self.receive_command()
            except (OSError, ValueError, KeyError, TypeError) as exc:  # as a cold shim's Popen would have raised
                received = None
                number = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EPROTO
                message = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"warm job shim: {exc!r}"
                os.write(self.status_fd, f"{number} {message}\n".encode())
            if not received or not cgroups_wanted():
                if self.cgroup is not None:
                    _remove_cgroup(self.cgroup)
                self.cgroup = None
            if received is None:
                return 127
            if not received:
                return 0  # the pool let us go (or its owner died) before a job came
        self.status = 0
        try:
            uid, gid, groups = self._ids()
            popen = subprocess.Popen(
                self.command,
                pass_fds=self.pass_fds,
                preexec_fn=self._preexec(uid, gid, groups),
            )
        except (OSError, KeyError, subprocess.SubprocessError) as exc:
            number = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EINVAL
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            os.write(self.status_fd, f"{number} {message}\n".encode())
            if self.cgroup is not None:
                _remove_cgroup(self.cgroup)
            return 127
        self.child = popen.pid
        for fd in self.pass_fds:  # the command has its copies; ours would only keep pipes open
            with contextlib.suppress(OSError):
                os.close(fd)
        os.write(self.status_fd, b"ok\n")
        os.close(self.status_fd)
        if self.terminated:
            self.kill_all()
        elif self.interrupt_pending:
            self.forward_interrupt()
        child_done = False
        while not child_done:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.child:
                self.status, child_done = status, True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the job is over; a late cancel changes nothing
        self.kill_all()
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            import resource

            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            with contextlib.suppress(OSError, ValueError):  # SIGKILL/SIGSTOP have no handler to reset
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
            os.kill(os.getpid(), sig)
            time.sleep(1)
            return 128 + sig
        return os.waitstatus_to_exitcode(self.status)


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--shim":
    sys.exit(_Shim(sys.argv[2:]).main())
