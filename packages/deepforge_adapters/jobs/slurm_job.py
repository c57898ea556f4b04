"""The job side of ``slurm`` compute: ``python -m deepforge_adapters.jobs.slurm_job --payload-fd 3``.

The batch script :class:`~deepforge_adapters.compute.slurm.SlurmCompute` submits ``exec``\\ s this module with
its payload (one JSON line: the bundle as a base64 tar.gz, the output channel, the job's credentials) on a
file descriptor, so nothing but the script reaches the compute node: no shared filesystem is needed.  Read
top to bottom:

1. unpack the bundle into a fresh node-local directory (``workDir``, else ``$TMPDIR``);
2. run its ``executor_config.json`` command (our runner) with :func:`deepforge_adapters.process.run`,
   handing the runner its credentials through a pipe (:mod:`deepforge_adapters.jobs.credentials`);
3. stream the merged output to Slurm's own output file *and*, in numbered segments, to the **channel**: a
   storage (the job's own storage, or ``local`` storage on a directory the submitting host shares with the
   nodes) under ``<prefix>/out/<n>``, which the submitting side polls;
4. a SIGINT (``scancel --batch --signal=INT``, our cancel) is forwarded to the runner as SIGINT, and every
   process of the job is killed after the grace; a SIGTERM (Slurm's own: a time limit, a plain scancel)
   does the same without marking the job canceled;
5. at the end, upload ``results.json`` and ``end.json`` (exit code, canceled or not, segment count).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import shutil
import signal
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from .. import secrets
from ..config import seconds_from_env
from ..errors import ConfigError, DeepForgeError, NotFoundError
from ..process import JobProcess, make_non_dumpable
from ..process import run as run_job_process
from ..storage import StorageClient, get_client
from .bundle import open_config
from .credentials import CredentialPipe, is_runner_command, job_environment
from .layout import RESULTS_FILE, RUNNER_PREFIX, read_executor_config

log = logging.getLogger(__name__)

END_FILE = "end.json"
#: The most bytes one output segment holds.
SEGMENT_BYTES = 1024 * 1024
GRACE_ENV = "DEEPFORGE_CANCEL_GRACE"
DEFAULT_GRACE = 10.0
#: Beyond the runner's grace, so that the runner can stop its operation first and say so.
GRACE_MARGIN = 3.0
EXIT_CANCELED = 130


def segment_name(prefix: str, index: int) -> str:
    return f"{prefix}/out/{index:08d}"


def channel_client(channel: Mapping[str, Any], credentials: Mapping[str, Any] | None = None) -> StorageClient:
    """The storage client of an output channel ``{"backend", "config", "project", "prefix"}``.

    Its sealed fields are taken from ``credentials`` (the job side: what the submitter opened for it, with
    the destination they were opened for), else opened with the keyring in our environment (the submitting
    side, which holds the deployment key as it did to build the bundle).
    """
    backend, config = str(channel["backend"]), dict(channel.get("config") or {})
    sealed = [name for name, value in config.items() if secrets.is_sealed(value)]
    if sealed and credentials is not None:
        handed = credentials.get("storage") or {}
        bind = (credentials.get("bind") or {}).get("storage") or {}
        opened = {**config, **{name: handed[name] for name in sealed if name in handed}, **bind}
    else:
        opened = open_config(
            backend, config, secrets.load_keyring() if sealed else None, str(channel.get("project", ""))
        )
    return get_client(backend, opened)


class OutputChannel:
    """The job's output, uploaded as numbered segments every ``interval`` seconds (and when one fills)."""

    def __init__(self, client: StorageClient, prefix: str, interval: float) -> None:
        self.client = client
        self.prefix = prefix
        self.interval = interval
        self.segments = 0
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._upload_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="slurm-output", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def write(self, chunk: bytes) -> None:
        with self._lock:
            self._buffer += chunk
            full = len(self._buffer) >= SEGMENT_BYTES
        if full:  # a fast writer waits for the upload: the buffer stays bounded
            self.flush()

    def flush(self) -> None:
        with self._upload_lock:
            while True:
                with self._lock:
                    data = bytes(self._buffer[:SEGMENT_BYTES])
                    del self._buffer[:SEGMENT_BYTES]
                if not data:
                    return
                self.put(segment_name(self.prefix, self.segments), data)
                self.segments += 1

    def put(self, name: str, data: bytes) -> None:
        self.client.put_file_stream(name, io.BytesIO(data), size=len(data))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as exc:  # the storage is down: keep the output, try again next time
                self.error = exc
                log.warning("slurm job: cannot upload output: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()


class SlurmJobShim:
    def __init__(self, payload: Mapping[str, Any]) -> None:
        self.payload = payload
        self.canceled = False
        self.stopping = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self.canceled = True  # our cancel (scancel --batch --signal=INT)
        self.stopping = True

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        credentials = self.payload.get("credentials")
        channel = self.payload["channel"]
        out = OutputChannel(
            channel_client(channel, credentials), str(channel["prefix"]), float(self.payload.get("flushInterval", 0.5))
        )
        base = self.payload.get("workDir") or os.environ.get("TMPDIR") or None
        work = Path(tempfile.mkdtemp(prefix=f"deepforge-slurm-{os.environ.get('SLURM_JOB_ID', 'job')}-", dir=base))
        out.start()
        try:
            try:
                code = self._run(work, out, credentials)
            finally:
                out.close()
            results = work / RESULTS_FILE
            if results.is_file():
                out.put(f"{channel['prefix']}/{RESULTS_FILE}", results.read_bytes())
            end = {"exitCode": code, "canceled": self.canceled, "segments": out.segments}
            out.put(f"{channel['prefix']}/{END_FILE}", json.dumps(end).encode())
        finally:  # the node's disk is shared with other jobs (a SIGKILL after Slurm's KillWait still leaves it)
            shutil.rmtree(work, ignore_errors=True)
        return code

    def _say(self, out: OutputChannel, line: str) -> None:
        data = f"{RUNNER_PREFIX}{secrets.redact(line)}\n".encode()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        out.write(data)

    def _run(self, work: Path, out: OutputChannel, credentials: Any) -> int:
        try:
            with tarfile.open(fileobj=io.BytesIO(base64.b64decode(self.payload["bundle"])), mode="r:gz") as tar:
                tar.extractall(work, filter="data")
            config = read_executor_config(work)
        except (DeepForgeError, tarfile.TarError, ValueError, OSError) as exc:
            self._say(out, f"slurm: cannot unpack the job bundle: {exc}")
            return 1
        if not is_runner_command(config.cmd, config.args):
            credentials = None  # only our runner is ever handed credentials
        env = job_environment(os.environ)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            grace = seconds_from_env(os.environ, GRACE_ENV, DEFAULT_GRACE)
        except ConfigError:
            grace = DEFAULT_GRACE

        def sink(chunk: bytes) -> None:
            sys.stdout.buffer.write(chunk)  # Slurm's own output file
            sys.stdout.buffer.flush()
            out.write(chunk)

        with CredentialPipe(credentials) as pipe:

            def started(proc: JobProcess) -> None:
                pipe.started()

            try:
                result = run_job_process(
                    config.argv,
                    work,
                    {**env, **pipe.env},
                    sink,
                    should_cancel=lambda: self.stopping,
                    grace=grace + GRACE_MARGIN,
                    on_start=started,
                    pass_fds=pipe.pass_fds,
                )
            except OSError as exc:
                self._say(out, f"slurm: cannot start {config.cmd!r}: {exc.strerror}")
                return 1
        if result.sink_error is not None:
            self._say(out, f"slurm: uploading the output failed: {result.sink_error}")
            return 1
        code = result.returncode
        return 128 - code if code < 0 else code


def read_end(client: StorageClient, prefix: str) -> dict[str, Any] | None:
    """The job's ``end.json`` (None until it is written)."""
    try:
        info = client.stat(f"{prefix}/{END_FILE}")
    except NotFoundError:
        return None
    with client.get_file_stream(info) as f:
        value = json.loads(f.read(65536))
    return value if isinstance(value, dict) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_adapters.jobs.slurm_job")
    parser.add_argument("--payload-fd", type=int, required=True)
    args = parser.parse_args(argv)
    make_non_dumpable()  # we hold the job's credentials
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    secrets.install_redaction()
    with os.fdopen(args.payload_fd, "rb") as f:
        payload = json.loads(f.read())
    for group in ("storage", "env"):
        for value in ((payload.get("credentials") or {}).get(group) or {}).values():
            secrets.register_secret(str(value))
    started = time.monotonic()
    code = SlurmJobShim(payload).run()
    log.debug("slurm job: done in %.1f s, exit code %d", time.monotonic() - started, code)
    return code


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
