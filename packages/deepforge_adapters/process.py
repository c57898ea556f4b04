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

#: Set to ``0`` to never use a cgroup (the subreaper alone then finds every descendant).
CGROUP_ENV = "DEEPFORGE_JOB_CGROUP"
#: Seconds the output pipe is still read after the job's processes are gone.
DRAIN_TIMEOUT = 5.0
#: How long the shim keeps killing and reaping leftovers before it gives up (a process stuck in the kernel).
KILL_DEADLINE = 30.0
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_SHIM = os.path.realpath(__file__)
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
) -> JobProcess:
    """Start ``argv`` under a per-job shim (see the module docstring); read the merged output from ``.stdout``
    (with ``separate_stderr``, stdout from ``.stdout`` and stderr from ``.stderr``).

    Raises :class:`OSError` (with the errno and strerror of the failed exec) if the command cannot start.
    ``pass_fds`` are kept open in the command; ``user``/``group``/``extra_groups`` as in :class:`subprocess.Popen`,
    applied to the command only.
    """
    if not argv:
        raise ValueError("spawn: empty argv")
    status_r, status_w = os.pipe()
    shim = [sys.executable, "-I", "-S", "-c", _SHIM_BOOT, _SHIM, "--shim", "--status-fd", str(status_w)]
    for fd in pass_fds:
        shim += ["--pass-fd", str(int(fd))]
    if user is not None:
        shim += ["--user", str(user)]
    if group is not None:
        shim += ["--group", str(group)]
    if extra_groups is not None:
        shim += ["--extra-groups", ",".join(str(g) for g in extra_groups)]
    try:
        popen = subprocess.Popen(
            [*shim, "--", *argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stderr else subprocess.STDOUT,
            start_new_session=True,
            pass_fds=(status_w, *pass_fds),
        )
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    try:
        with os.fdopen(status_r, "rb") as status:
            line = status.readline().decode("utf-8", "replace").strip()
    except OSError:
        line = ""
    if line != "ok":
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        popen.wait()
        code, _, message = line.partition(" ")
        number = int(code) if code.isdigit() else errno.EIO
        raise OSError(number, message or f"the job shim ended with {popen.returncode}")
    return JobProcess(popen)


class RunResult:
    """How :func:`run` ended: the command's exit code (negative: killed by that signal) and why.

    A plain class, not a dataclass or a ``typing.NamedTuple``: this file is also the per-job shim (two per
    job), which imports neither ``dataclasses`` (``inspect``, ``ast``) nor ``typing`` nor ``pathlib``, each a
    sizeable part of a shim's start (bench/scale_pipelines.py; docs/benchmarks.md, "Scale: fifth round")."""

    __slots__ = ("canceled", "drain_timed_out", "returncode", "sink_error")

    def __init__(
        self, returncode: int, canceled: bool, sink_error: BaseException | None = None, drain_timed_out: bool = False
    ) -> None:
        self.returncode = returncode
        self.canceled = canceled
        #: The exception the sink raised; the job was then killed and its remaining output discarded.
        self.sink_error = sink_error
        #: True if the pipe was still open ``drain_timeout`` seconds after the job ended (output after that lost).
        self.drain_timed_out = drain_timed_out

    def __repr__(self) -> str:
        return (
            f"RunResult(returncode={self.returncode!r}, canceled={self.canceled!r}, "
            f"sink_error={self.sink_error!r}, drain_timed_out={self.drain_timed_out!r})"
        )


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
) -> RunResult:
    """Run ``argv`` (:func:`spawn`), stream its output to ``sink`` and return when nothing of it is left.

    stderr is merged into the output in write order, unless ``stderr_sink`` is given: then stderr goes to that
    sink, stdout to ``sink``.  ``should_cancel`` is polled every ``poll`` seconds: once true the job gets
    SIGINT, and ``grace`` seconds later (or as soon as ``should_kill`` is true) every process of it is killed.
    ``on_start`` receives the :class:`JobProcess` right after the spawn.  :class:`OSError` if the command
    cannot start.
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


# Cgroup paths are strings, not pathlib: see RunResult.
def _cgroup2_base() -> str | None:
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
    return os.path.join(mount, own.lstrip("/"))


def make_cgroup_leaf() -> str | None:
    """A new empty cgroup v2 leaf with ``cgroup.kill`` below our own cgroup, or None where not allowed."""
    if os.environ.get(CGROUP_ENV, "").strip().lower() in ("0", "no", "off", "false"):
        return None
    base = _cgroup2_base()
    if base is None:
        return None
    leaf = os.path.join(base, f"deepforge-job-{os.getpid()}")
    try:
        os.mkdir(leaf)
    except OSError:
        return None
    if not os.path.exists(os.path.join(leaf, "cgroup.kill")):  # kernels before 5.14
        _remove_cgroup(leaf)
        return None
    return leaf


def _cgroup_tree(leaf: str) -> Iterator[str]:
    """``leaf`` and the cgroups below it, deepest first (nested job shims make their own leaves)."""
    try:
        with os.scandir(leaf) as entries:
            children = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except OSError:
        children = []
    for child in children:
        yield from _cgroup_tree(child)
    yield leaf


def _cgroup_empty(leaf: str) -> bool:
    def procs(cgroup: str) -> str:
        with open(os.path.join(cgroup, "cgroup.procs")) as f:
            return f.read().strip()

    try:
        return all(not procs(c) for c in _cgroup_tree(leaf))
    except OSError:
        return True


def _remove_cgroup(leaf: str) -> None:
    for cgroup in _cgroup_tree(leaf):
        with contextlib.suppress(OSError):
            os.rmdir(cgroup)


class _Shim:
    def __init__(self, argv: list[str]) -> None:
        self.status_fd = -1
        self.pass_fds: list[int] = []
        self.user: str | None = None
        self.group: str | None = None
        self.extra_groups: list[str] | None = None
        i = 0
        while argv[i] != "--":
            opt, value = argv[i], argv[i + 1]
            if opt == "--status-fd":
                self.status_fd = int(value)
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
        self.cgroup: str | None = None
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
                with contextlib.suppress(OSError), open(os.path.join(self.cgroup, "cgroup.kill"), "w") as f:
                    f.write("1")
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
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
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
        self.cgroup = make_cgroup_leaf()
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
