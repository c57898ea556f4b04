"""The soak run's system: a WebGME server, SeaweedFS, deepforge-workers, and fault proxies between them.

::

    workers ──► FaultProxy "workers" ──► WebGME server ◄── FaultProxy "plugins" ◄── the server's plugins
    jobs, plugins (s3 storage) ──► FaultProxy "s3" ──► SeaweedFS's S3 gateway

The plugins reach their own server (executor, blob) through ``$DEEPFORGE_SERVER_URL`` = the "plugins" proxy,
so jobs on local compute and gme storage go through it too.  Every process is started in its own process
group with its pid kept, and :meth:`SoakStack.stop` stops them all (it is idempotent, and registered with
``atexit`` while the stack runs).  Every process the workers and the server start carries
``DEEPFORGE_SOAK_RUN=<run id>`` in its environment: after :meth:`SoakStack.stop_for_audit` no process may
still carry it (an orphan).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepforge_adapters.http import make_session
from deepforge_adapters.jobs.runner import CACHE_MAX_ENV
from deepforge_adapters.policy import POLICY_ENV
from deepforge_adapters.secrets import generate_key
from deepforge_adapters.webgme.executor import ExecutorClient

from ..seaweedfs import SeaweedFSServer, start_seaweedfs
from ..stack import StackOptions, WebGMEStack, free_port
from .proxy import FaultProxy

log = logging.getLogger(__name__)

MARKER_ENV = "DEEPFORGE_SOAK_RUN"
SERVER_URL_ENV = "DEEPFORGE_SERVER_URL"


@dataclass(frozen=True)
class StackConfig:
    workers: int = 4
    slots: int = 2
    refresh_ms: int = 500  # the executor's refresh: a worker silent for 5x this is requeued (checked every 10 s)
    cache_max_bytes: int = 32 * 1024 * 1024  # each worker's input cache cap (DEEPFORGE_CACHE_MAX_BYTES)
    work_dir_cap: int = 512 * 1024 * 1024  # what a worker's work dir may hold once the run is over


@dataclass
class Worker:
    """One ``deepforge-worker`` daemon; a replacement after a SIGKILL reuses the same work dir (it reaps the
    jobs its predecessor left)."""

    index: int
    home: Path
    proc: subprocess.Popen[bytes]
    generation: int = 0
    peak_rss_kib: int = 0
    stopped: bool = False  # SIGSTOPped right now

    @property
    def work_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def client_id(self) -> str:
        import socket

        return f"{socket.gethostname()}_{self.proc.pid}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample_rss(self) -> int:
        """The daemon's peak RSS so far (``VmHWM``, KiB), kept over its replacements."""
        with contextlib.suppress(OSError, ValueError), open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
        return self.peak_rss_kib


def policy_text(base: Path) -> str:
    """The soak server's operator policy: gme, local and s3 storage; gme and local compute under ``base``."""
    return f"""\
[storage]
allow = ["gme", "local", "s3"]

[storage.local]
root = {{ under = [{json.dumps(str(base))}] }}

[compute]
allow = ["gme", "local"]

[compute.local]
workDir = {{ under = [{json.dumps(str(base))}] }}
"""


@dataclass
class SoakStack:
    run_dir: Path
    config: StackConfig = field(default_factory=StackConfig)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    webgme: WebGMEStack | None = None
    s3: SeaweedFSServer | None = None
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    proxy_ports: dict[str, int] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    secret_key: str = field(default_factory=generate_key)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> SoakStack:
        atexit.register(self.stop)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.s3 = start_seaweedfs(self.run_dir / "seaweedfs")
            self._proxy("s3", int(self.s3.url.rsplit(":", 1)[1]))
            webgme = WebGMEStack(
                StackOptions(worker_refresh_ms=self.config.refresh_ms), run_dir=self.run_dir / "webgme"
            )
            self._proxy("workers", webgme.port)
            self._proxy("plugins", webgme.port)
            policy = self.run_dir / "policy.toml"
            policy.write_text(policy_text(self.run_dir))
            webgme.options.env = {
                "DEEPFORGE_SECRET_KEY": self.secret_key,
                "DEEPFORGE_PLUGIN_ZMQ_PORT": str(free_port()),
                POLICY_ENV: str(policy),
                SERVER_URL_ENV: self.url_of("plugins"),
                MARKER_ENV: self.run_id,
            }
            self.webgme = webgme.start()
            for i in range(self.config.workers):
                self.workers.append(self._start_worker(i, self.run_dir / f"worker-{i}"))
            self.wait_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _proxy(self, name: str, port: int) -> None:
        proxy = FaultProxy(("127.0.0.1", port))
        self.proxies[name] = proxy
        self.proxy_ports[name] = proxy.start()

    def url_of(self, proxy: str) -> str:
        return f"http://127.0.0.1:{self.proxy_ports[proxy]}"

    @property
    def url(self) -> str:
        """The server itself (no proxy): what the driver and the audit talk to."""
        assert self.webgme is not None
        return self.webgme.url

    def _start_worker(self, index: int, home: Path, generation: int = 0) -> Worker:
        home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "deepforge_worker.cli", "start", "--host", self.url_of("workers"),
                "--work-dir", str(home / "jobs"), "--cache-dir", str(home / "cache"),
                "--processes", str(self.config.slots), "--cancel-grace", "2", "--max-refresh", "2"]  # fmt: skip
        env = {**os.environ, MARKER_ENV: self.run_id, "DEEPFORGE_WORKER_MAX_BACKOFF": "1",
               "DEEPFORGE_SECRET_KEY": self.secret_key, CACHE_MAX_ENV: str(self.config.cache_max_bytes)}  # fmt: skip
        with open(home / f"worker-{generation}.log", "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)  # fmt: skip
        log.info("worker %d (generation %d) started: pid %d", index, generation, proc.pid)
        return Worker(index, home, proc, generation)

    def wait_workers(self, timeout: float = 120.0) -> None:
        """Until every worker polls the server."""
        executor = ExecutorClient(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                polling = executor.get_workers()
                if all(w.client_id in polling for w in self.workers if w.alive()):
                    return
            time.sleep(0.3)
        raise TimeoutError(f"workers not polling {self.url} after {timeout:.0f}s")

    def replace_worker(self, worker: Worker) -> Worker:
        """SIGKILL ``worker`` (the daemon only: its jobs run in their own sessions, as after a crash) and start
        a new one on the same work dir."""
        worker.sample_rss()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
        new = self._start_worker(worker.index, worker.home, worker.generation + 1)
        new.peak_rss_kib = worker.peak_rss_kib
        self.workers[self.workers.index(worker)] = new
        return new

    def sample_rss(self) -> int:
        return max((w.sample_rss() for w in self.workers if w.alive()), default=0)

    def healthy(self) -> bool:
        """The server answers, S3 answers, every worker polls."""
        http = make_session(retries=0, timeout=(2, 5))
        try:
            if http.get(f"{self.url}/api").status_code != 200:
                return False
            assert self.s3 is not None
            self.s3.client().list_buckets()
            polling = ExecutorClient(self.url).get_workers()
        except Exception:
            return False
        return all(w.client_id in polling for w in self.workers if w.alive())

    def stop_workers(self, drain: float = 10.0) -> None:
        """SIGCONT the stopped, SIGTERM every worker (it drains), SIGKILL its group after ``drain`` seconds."""
        for w in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGCONT)
            w.sample_rss()
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + drain
        for w in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(w.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(timeout=10)

    def stop_for_audit(self) -> None:
        """Stop the workers, the server's proxies and the server (and its plugins), then start the server again
        without the run's marker: the audit reads the model; any process still marked is an orphan.  The
        "s3" proxy stays (fault-free): the run's S3 dataInfos name it as their endpoint."""
        self.stop_workers()
        self.proxies["s3"].set_fault("none")
        for name, proxy in self.proxies.items():
            if name != "s3":
                proxy.stop()
        assert self.webgme is not None
        self.webgme.stop_server()
        self.webgme.options.env = {k: v for k, v in self.webgme.options.env.items() if k != MARKER_ENV}
        self.webgme.start_server()

    def stop(self) -> None:
        """Everything, by pid (idempotent): workers, proxies, the WebGME stack, SeaweedFS."""
        with contextlib.suppress(Exception):
            self.stop_workers(drain=0)
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.stop()
        if self.webgme is not None:
            self.webgme.stop()
        if self.s3 is not None:
            self.s3.stop()
        self.kill_marked()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def kill_marked(self) -> list[int]:
        """SIGKILL every process still carrying this run's marker (jobs a SIGKILLed worker left in their own
        sessions, local compute jobs of a run interrupted): the last sweep of :meth:`stop`, after the audit."""
        from .faults import marked_processes

        pids = marked_processes(MARKER_ENV, self.run_id)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            log.warning("killed %d process(es) left with %s=%s: %s", len(pids), MARKER_ENV, self.run_id, pids)
        return pids

    def __enter__(self) -> SoakStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def storage_configs(self, bucket: str) -> dict[str, dict[str, Any]]:
        """Configs to read the run's dataInfos back with: the server itself; S3 through its proxy (the endpoint
        the jobs wrote with, which their dataInfos name)."""
        assert self.s3 is not None
        return {"gme": {"host": self.url}, "s3": {**self.s3.storage_config(bucket), "endpoint": self.url_of("s3")}}
