"""Start and stop a local WebGME stack: a database, then the WebGME server of ``webgme-config/``.

One launcher for the pytest fixtures, ``make webgme-up``/``make dev`` and the benchmarks, so they all boot the
server the same way.  The database is, in order of preference: ``MONGO_URI`` if set (an existing server), a
``mongod`` on PATH, else nx-27017 (a MongoDB wire-protocol server on SQLite) with this repo's patches
(``webgme-config/nx_patched.py``).  Every process gets a free port, its own pid file and log file under the
stack's run dir, and its own process group, so stacks run side by side and stop completely.

CLI (used by the Makefile)::

    python -m deepforge_dev.stack up   --run-dir .run [--port 8888] [--persist]
    python -m deepforge_dev.stack down --run-dir .run
    python -m deepforge_dev.stack with-db -- node webgme-config/seeds/build_pipeline_seed.js
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
from deepforge_adapters.compute.local import WORK_DIR_ENV as COMPUTE_DIR_ENV
from deepforge_adapters.http import make_session
from deepforge_adapters.policy import POLICY_ENV
from deepforge_adapters.storage.local import ROOT_ENV as STORAGE_ROOT_ENV
from deepforge_adapters.webgme import HOST_ENV

log = logging.getLogger(__name__)

READY_TIMEOUT = 90.0  # seconds; a cold start is ~2 s, a loaded CI machine much slower


def repo_root() -> Path:
    """The checkout this package is installed from (editable install), or ``DEEPFORGE_REPO``."""
    env = os.environ.get("DEEPFORGE_REPO")
    return Path(env) if env else Path(__file__).resolve().parents[2]


def webgme_dir() -> Path:
    return Path(os.environ.get("DEEPFORGE_WEBGME_DIR") or repo_root() / "webgme-config")


def free_port() -> int:
    """A port the OS just gave out (bind to 0) — never a fixed one, several stacks share the machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int) -> None:
    """:class:`StackError` naming ``port`` and how to choose another when something already listens on it.

    Bound like the server binds (every address, ``SO_REUSEADDR``), so a server of another checkout or an
    unrelated program on the port is refused before a database is started or a project seeded in it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError as exc:
            raise StackError(
                f"port {port} is already in use ({exc.strerror}): another WebGME server or program listens "
                f"there; choose another port with --port N or DEEPFORGE_WEBGME_PORT=N "
                f"(make dev DEEPFORGE_WEBGME_PORT={port + 1})"
            ) from None


@dataclass
class StackOptions:
    """What differs between stacks; each maps to an environment variable of ``config/config.default.js``."""

    port: int | None = None
    mongo_uri: str | None = None  # an existing database; default: MONGO_URI env, else start one
    worker_refresh_ms: int | None = None
    nonce: str | None = None
    executor_auth: bool = False
    webgme_auth: bool = False
    allow_guests: bool = True  # with webgme_auth: False refuses guests everywhere (blob included)
    plugin_paths: tuple[str, ...] = ()
    persist: bool = False  # keep the database on disk under the run dir (dev) instead of in memory (tests)
    env: Mapping[str, str] = field(default_factory=dict)


class StackError(RuntimeError):
    """The stack could not be started; the message includes the tail of the failing process's log."""


class Process:
    """A child process in its own process group with a pid file and a log file."""

    def __init__(self, name: str, argv: list[str], run_dir: Path, cwd: Path, env: Mapping[str, str]) -> None:
        self.name = name
        self.log_path = run_dir / f"{name}.log"
        self.pid_path = run_dir / f"{name}.pid"
        self._log: IO[bytes] = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid_path.write_text(f"{self.popen.pid}\n")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        # the whole group, even when the leader already died: the server's plugin workers live in it too
        kill_group(self.popen.pid, grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        self._log.close()
        self.pid_path.unlink(missing_ok=True)


def interrupt_then_kill(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Stop ``proc`` as a developer stops ``make dev`` (Ctrl-C: it stops its server and database itself);
    if it is not gone within ``timeout`` seconds, kill its whole process group."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait(timeout=10)


def terminate(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM one process we started (not its group), SIGKILL it after ``grace`` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_group(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class WebGMEStack:
    """A running database + WebGME server.  ``url`` is the server; ``blob_dir`` its filesystem blob."""

    def __init__(self, options: StackOptions | None = None, run_dir: str | os.PathLike[str] | None = None) -> None:
        self.options = options or StackOptions()
        self._own_run_dir = run_dir is None
        self.run_dir = (Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="deepforge-webgme-"))).resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.run_dir / "data"
        self.blob_dir = self.data_dir / "blob-local-storage"
        self.webgme_dir = webgme_dir()
        self.port = self.options.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mongo_uri = ""
        self.database: Process | None = None
        self.server: Process | None = None

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> WebGMEStack:
        try:
            self._check_installed()
            check_port_free(self.port)
            self.mongo_uri = self._start_database()
            self.start_server()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything this stack started (server first), even half-started; removes a temp run dir."""
        for proc in (self.server, self.database):
            if proc is not None:
                proc.stop()
        self.server = self.database = None
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def start_server(self) -> None:
        env = {**os.environ, **self.server_env()}
        # cwd = the run dir: the server drops temp files (zips being built) in its cwd, not in the checkout.
        self.server = Process("webgme", ["node", str(self.webgme_dir / "app.js")], self.run_dir, self.run_dir, env)
        self.wait_ready(self.server)

    def stop_server(self, hard: bool = False) -> None:
        """Stop the WebGME server only (``hard``: SIGKILL, as a crash would); the database keeps running."""
        if self.server is not None:
            if hard and self.server.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.server.popen.pid, signal.SIGKILL)
            self.server.stop()
            self.server = None

    def restart_server(self) -> None:
        self.stop_server()
        self.start_server()

    def __enter__(self) -> WebGMEStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ pieces
    def server_env(self) -> dict[str, str]:
        o = self.options
        env = {
            "DEEPFORGE_WEBGME_PORT": str(self.port),
            "DEEPFORGE_MONGO_URI": self.mongo_uri,
            "DEEPFORGE_WEBGME_DATA_DIR": str(self.data_dir),
            "NODE_ENV": os.environ.get("NODE_ENV", "default"),
        }
        if o.worker_refresh_ms is not None:
            env["DEEPFORGE_WORKER_REFRESH_MS"] = str(o.worker_refresh_ms)
        if o.nonce:
            env["DEEPFORGE_EXECUTOR_NONCE"] = o.nonce
        if o.executor_auth:
            env["DEEPFORGE_EXECUTOR_AUTH"] = "1"
        if o.webgme_auth:
            env["DEEPFORGE_WEBGME_AUTH"] = "1"
            env["DEEPFORGE_WEBGME_GUESTS"] = "1" if o.allow_guests else "0"
        if o.plugin_paths:
            env["DEEPFORGE_PLUGIN_PATHS"] = ":".join(o.plugin_paths)
        env.setdefault("WEBGME_PYTHON", sys.executable)
        env.update(o.env)
        return env

    def _check_installed(self) -> None:
        if not (self.webgme_dir / "node_modules" / "webgme").is_dir():
            raise StackError(f"WebGME is not installed in {self.webgme_dir}: run `make node`")

    def _start_database(self) -> str:
        uri = self.options.mongo_uri or os.environ.get("MONGO_URI")
        db_name = f"deepforge_{self.port}"
        if uri:
            return _with_database(uri, db_name)
        port = free_port()
        if shutil.which("mongod"):
            db_path = self.run_dir / "mongod"
            db_path.mkdir(exist_ok=True)
            argv = ["mongod", "--dbpath", str(db_path), "--bind_ip", "127.0.0.1", "--port", str(port),
                    "--pidfilepath", str(self.run_dir / "mongod.pidfile")]  # fmt: skip
        else:
            db = str(self.run_dir / "nx.db") if self.options.persist else "memory"
            argv = [sys.executable, str(self.webgme_dir / "nx_patched.py"), "--db", db, "--host", "127.0.0.1",
                    "-p", str(port), "--pid-file", str(self.run_dir / "nx.pidfile"),
                    "--log-file", str(self.run_dir / "nx-internal.log")]  # fmt: skip
        self.database = Process("database", argv, self.run_dir, self.run_dir, os.environ)
        _wait_for_port(self.database, port)
        return f"mongodb://127.0.0.1:{port}/{db_name}"

    def wait_ready(self, proc: Process, timeout: float = READY_TIMEOUT) -> None:
        """Until ``GET /api`` answers 200; a dead process or a timeout raises with its log tail."""
        session = make_session(retries=0, timeout=(2, 5))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StackError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
            with contextlib.suppress(requests.RequestException):
                if session.get(f"{self.url}/api").status_code == 200:
                    return
            time.sleep(0.2)
        raise StackError(f"{proc.name} not ready at {self.url}/api after {timeout:.0f}s:\n{proc.log_tail()}")

    # ------------------------------------------------------------------------------------ users
    def add_user(self, username: str, password: str, email: str | None = None, can_create: bool = True) -> None:
        """Create a WebGME user (needs ``webgme_auth``) with webgme's own ``usermanager`` CLI."""
        usermanager = self.webgme_dir / "node_modules/webgme-engine/src/bin/usermanager.js"
        flags = ["-c"] if can_create else []
        argv = ["node", str(usermanager), "useradd", *flags, username, email or f"{username}@example.invalid", password]
        env = {**os.environ, **self.server_env()}
        done = subprocess.run(argv, cwd=self.webgme_dir, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"usermanager useradd {username} failed: {done.stderr[-2000:]}")

    def create_token(self, username: str, password: str, name: str = "deepforge") -> str:
        """A WebGME access token (``x-api-token``) for the user, created through ``/rest/tokens``."""
        session = make_session()
        url = f"{self.url}/rest/tokens/create/{urllib.parse.quote(name)}"
        response = session.post(url, auth=(username, password))
        if response.status_code != 200:
            raise StackError(f"creating token {name!r} for {username}: HTTP {response.status_code}")
        return str(response.json()["id"])

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "mongo_uri": self.mongo_uri, "run_dir": str(self.run_dir),
                "blob_dir": str(self.blob_dir)}  # fmt: skip


def _with_database(uri: str, db_name: str) -> str:
    """``MONGO_URI`` with the stack's own database name, so stacks sharing one mongod don't collide."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{db_name}"))


def _wait_for_port(proc: Process, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StackError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise StackError(f"{proc.name} did not listen on port {port} within {timeout:.0f}s:\n{proc.log_tail()}")


@contextlib.contextmanager
def running_stack(**options: Any) -> Iterator[WebGMEStack]:
    """``with running_stack(nonce="n") as stack: ...`` -- started, then stopped even on failure."""
    stack = WebGMEStack(StackOptions(**options))
    with stack:
        yield stack


# ---------------------------------------------------------------------------------------------- CLI
def _up(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    state = run_dir / "stack.json"
    if state.exists():
        print(f"a stack is already recorded in {state}; run `make webgme-down` first", file=sys.stderr)
        return 1
    options = StackOptions(port=args.port, persist=args.persist, worker_refresh_ms=args.worker_refresh_ms)
    stack = WebGMEStack(options, run_dir=run_dir)
    stack.start()
    info = stack.describe()
    info["pids"] = {p.name: p.popen.pid for p in (stack.database, stack.server) if p is not None}
    state.write_text(json.dumps(info, indent=2))
    print(stack.url)
    return 0


def _down(args: argparse.Namespace) -> int:
    state = Path(args.run_dir) / "stack.json"
    if not state.exists():
        print(f"no stack recorded in {state}", file=sys.stderr)
        return 0
    info = json.loads(state.read_text())
    for name in ("webgme", "database"):  # server first: it flushes to the database on the way down
        pid = info.get("pids", {}).get(name)
        if pid:
            kill_group(int(pid))
            (Path(args.run_dir) / f"{name}.pid").unlink(missing_ok=True)
    state.unlink()
    return 0


def ensure_project(url: str, name: str, seed: str = "pipeline") -> bool:
    """Create ``guest+<name>`` from ``seed`` unless it exists; True if it was created."""
    session = make_session()
    project = f"{url}/api/projects/guest/{urllib.parse.quote(name)}"
    if session.get(project).status_code == 200:
        return False
    response = session.put(project, json={"type": "file", "seedName": seed})
    if response.status_code not in (200, 201, 204):
        raise StackError(f"creating project {name!r} from seed {seed!r}: HTTP {response.status_code} {response.text}")
    return True


#: Where the demo's example pipeline sits (child names from the root): the pipeline seed's ``MyPipelines/Example``.
DEMO_PIPELINE = ("MyPipelines", "Example")


def find_node(url: str, project: str, names: tuple[str, ...], branch: str = "master") -> str | None:
    """The path of the node reached from the root by child names in ``guest+<project>``, ``None`` if absent.

    Reads the stored nodes over WebGME's tree REST route (a node's own data: its children are the keys that
    are not ``_id``/``atr``/``reg``/``ovr``...), so it needs no plugin; a name inherited from a base is not seen.
    """
    session = make_session()
    base = f"{url}/api/projects/guest/{urllib.parse.quote(project)}/branches/{urllib.parse.quote(branch)}/tree"
    path = ""
    for name in names:
        response = session.get(f"{base}{path or '/'}")
        response.raise_for_status()
        own = ("atr", "reg", "ovr", "meta")
        relids = [
            k for k, v in response.json().items() if not k.startswith("_") and k not in own and isinstance(v, str)
        ]
        for relid in sorted(relids):
            child = session.get(f"{base}{path}/{relid}")
            if child.ok and (child.json().get("atr") or {}).get("name") == name:
                path = f"{path}/{relid}"
                break
        else:
            return None
    return path


def demo_url(url: str, project: str) -> str:
    """The URL ``make dev`` prints: the demo project opened on its example pipeline in the PipelineEditor (on
    the project's root if the pipeline was renamed or removed).  The ``visualizer`` parameter is needed: without
    it WebGME's URL handling opens the node in its ModelEditor, whatever the node's validVisualizers say."""
    query = {"project": f"guest+{project}", "branch": "master"}
    pipeline = find_node(url, project, DEMO_PIPELINE)
    if pipeline:
        query.update(node=pipeline, visualizer="PipelineEditor")
    return f"{url}/?{urllib.parse.urlencode(query)}"


#: The DeepForge plugins dir the WebGME server loads (``webgme-config/config/config.default.js``).
PLUGINS_DIR_ENV = "DEEPFORGE_PLUGINS_DIR"
#: The operator policy ``make dev`` ships (written to ``<run dir>/policy.toml`` once, then kept: edit it there).
#: Relative paths are relative to the policy file, so local storage and compute stay under the run dir.
DEV_POLICY = """\
# The dev stack's operator policy (docs/security.md, "The operator policy file").  `make dev` wrote it once
# and keeps it: edit it here, then restart `make dev`.  Paths are relative to this file.
[storage]
allow = ["gme", "local", "s3", "sciserver-files"]

[storage.local]
root = { fixed = "storage" }

[compute]
allow = ["gme", "local", "sciserver-compute"]

[compute.local]
workDir = { fixed = "compute" }
"""


def dev_policy(run_dir: Path) -> Path:
    """The policy the dev stack runs with: ``$DEEPFORGE_POLICY`` if set, else ``<run dir>/policy.toml``
    (written from :data:`DEV_POLICY` if absent).  The server loads the plugins from ``<run dir>/plugins``,
    whose dialogs are generated for that policy (the checkout's files stay as committed)."""
    if os.environ.get(POLICY_ENV):
        path = Path(os.environ[POLICY_ENV])
    else:
        path = run_dir / "policy.toml"
        if not path.exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(DEV_POLICY)
        os.environ[POLICY_ENV] = str(path.resolve())  # the server and its plugins inherit it
    plugins = (run_dir / "plugins").resolve()
    subprocess.run(
        [sys.executable, "-m", "deepforge_plugins.metadata", "--deploy", str(plugins), str(repo_root() / "plugins")],
        env=os.environ,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    os.environ[PLUGINS_DIR_ENV] = str(plugins)
    return path


def dev_state_env(run_dir: Path) -> dict[str, str]:
    """Every default location of the dev stack's state, under ``run_dir`` (``rm -rf`` it to start over).

    The dev policy fixes the ``local`` roots, but a policy that leaves them to the server (an older
    ``policy.toml``, ``$DEEPFORGE_POLICY``) would fall back to ``~/.local/share/deepforge/...``, and a worker
    command without ``--work-dir``/``--cache-dir`` to directories in its cwd: the server and the worker get
    these defaults (a worker's own command-line options still win).
    """
    root = run_dir.resolve()
    return {
        STORAGE_ROOT_ENV: str(root / "storage"),
        COMPUTE_DIR_ENV: str(root / "compute"),
        "DEEPFORGE_WORKER_WORK_DIR": str(root / "worker"),
        "DEEPFORGE_WORKER_CACHE_DIR": str(root / "worker-cache"),
    }


def _dev(args: argparse.Namespace) -> int:
    """The whole system in the foreground (``make dev``) until Ctrl-C, then everything is stopped."""
    run_dir = Path(args.run_dir)
    check_port_free(args.port)  # before anything is written, started or seeded
    state_env = dev_state_env(run_dir)
    os.environ.update(state_env)  # the server, its plugins and the worker inherit them
    policy = dev_policy(run_dir)
    stack = WebGMEStack(StackOptions(port=args.port, persist=True, worker_refresh_ms=1000), run_dir=run_dir)
    workers: list[Process] = []
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        stack.start()
        created = ensure_project(stack.url, args.demo_project)
        # `make dev` passes DEV_WORKER_CMD (a command line; {url} is replaced by the server URL) to start one
        # worker beside the server; it is stopped with the rest on Ctrl-C.
        if args.worker_cmd:
            argv = [part.replace("{url}", stack.url) for part in args.worker_cmd.split()]
            workers.append(Process("worker", argv, run_dir, repo_root(), {**os.environ, HOST_ENV: stack.url}))
        print(f"\nDeepForge WebGME server: {stack.url}", flush=True)
        print(f"demo project: {demo_url(stack.url, args.demo_project)}"
              f"{' (created)' if created else ''}", flush=True)  # fmt: skip
        print(f"operator policy: {policy} (local storage and compute enabled)", flush=True)
        print(f"state: {run_dir} (storage/, compute/, worker/: rm -rf it to start over)", flush=True)
        print(f"logs: {run_dir}/*.log   stop: Ctrl-C", flush=True)
        while not stopping:
            for proc in (stack.server, stack.database, *workers):
                if proc is not None and not proc.alive():
                    print(f"{proc.name} exited ({proc.popen.returncode}); see {proc.log_path}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
        return 0
    finally:
        print("stopping...", flush=True)
        for proc in workers:
            proc.stop()
        stack.stop()


def _with_db(args: argparse.Namespace) -> int:
    """Run a command with a throw-away database (``DEEPFORGE_MONGO_URI`` set), e.g. the seed builder."""
    command = [c for c in args.cmd if c != "--"]
    stack = WebGMEStack(StackOptions())
    try:
        stack.mongo_uri = stack._start_database()
        env = {**os.environ, "DEEPFORGE_MONGO_URI": stack.mongo_uri}
        return subprocess.run(command, env=env, check=False).returncode
    finally:
        stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_dev.stack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the database and the WebGME server in the background")
    up.add_argument("--run-dir", default=".run")
    up.add_argument("--port", type=int, default=int(os.environ.get("DEEPFORGE_WEBGME_PORT", "8888")))
    up.add_argument("--persist", action="store_true", help="keep the database in <run-dir>/nx.db")
    up.add_argument(
        "--worker-refresh-ms",
        type=int,
        default=None,
        help="the executor's worker refresh period (250: as the suite's own server, for DEEPFORGE_TEST_WEBGME_URL)",
    )
    down = sub.add_parser("down", help="stop what `up` started")
    down.add_argument("--run-dir", default=".run")
    dev = sub.add_parser("dev", help="database + server (+ worker) in the foreground, demo project, until Ctrl-C")
    dev.add_argument("--run-dir", default=".run/dev")
    dev.add_argument("--port", type=int, default=int(os.environ.get("DEEPFORGE_WEBGME_PORT", "8888")))
    dev.add_argument("--demo-project", default="Demo")
    dev.add_argument("--worker-cmd", default=os.environ.get("DEV_WORKER_CMD", ""))
    with_db = sub.add_parser("with-db", help="run a command with DEEPFORGE_MONGO_URI naming a throw-away database")
    with_db.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"up": _up, "down": _down, "dev": _dev, "with-db": _with_db}[args.command](args)
    except StackError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
