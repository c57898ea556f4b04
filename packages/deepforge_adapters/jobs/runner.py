"""The in-job runner (replaces DeepForge's ``start.js``): inputs -> run the operation -> outputs.

``python -m deepforge_adapters.jobs.runner`` in a bundle directory, read top to bottom:

1. read ``job.json`` (:func:`~deepforge_adapters.jobs.bundle.read_bundle`);
2. for each input: take its sealed config's plaintext from the credentials pipe the worker or local compute
   handed over (``DEEPFORGE_CREDENTIALS_FD``, :mod:`.credentials`; a runner started by hand may instead hold
   a key in ``DEEPFORGE_SECRET_KEY``/``_FILE``), fetch it through
   its storage backend into the worker cache (``DEEPFORGE_WORKER_CACHE``, default ``.deepforge-cache`` in
   the job dir; size cap ``DEEPFORGE_CACHE_MAX_BYTES``) and symlink it to ``artifacts/<name>``;
3. run the job's command with :func:`deepforge_adapters.process.run`, stdout and stderr merged in order into
   our stdout; SIGINT/SIGTERM are forwarded as SIGINT, then every process of the operation is SIGKILLed
   after ``DEEPFORGE_CANCEL_GRACE`` seconds (default 10); a canceled job exits 130; whatever the operation
   started is killed when it ends; matplotlib's backend is :mod:`.plotting` (``MPLBACKEND``, unless set), so
   a figure the operation shows reaches the model;
4. upload each declared ``outputs/<name>/data`` with ``put_file_stream`` to ``<storage dir>/<run>/<name>``;
5. write ``results.json`` ``{name: {"type": ..., "dataInfo": ...}}`` atomically.

Any failure ends the run with a non-zero exit and ONE line, the last line of output, that says what failed:
``deepforge: input 'x' from s3 storage, 'a/b': NoSuchKey ...``.  No line ever carries a secret value.

Output keys: ``<run>`` of step 4 is a fresh segment per run (:func:`~deepforge_adapters.storage.base.fresh_segment`:
UTC time and random hex), so a re-run never overwrites a key an earlier run's dataInfo points at.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from .. import secrets
from ..config import seconds_from_env
from ..errors import ConfigError, DeepForgeError, JobFailed, StorageError
from ..process import JobProcess, make_non_dumpable
from ..process import run as run_job_process
from ..storage import get_client
from ..storage.base import DataInfo, StorageClient, fresh_segment
from ..storage.cache import WorkerCache
from ..streams import ProgressCallback, atomic_write
from .bundle import JobSpec, open_config, read_bundle
from .credentials import job_environment, receive_credentials
from .layout import PLOT_BACKEND, RESULTS_FILE, RUNNER_PREFIX

log = logging.getLogger(__name__)

CACHE_ENV = "DEEPFORGE_WORKER_CACHE"
CACHE_MAX_ENV = "DEEPFORGE_CACHE_MAX_BYTES"
GRACE_ENV = "DEEPFORGE_CANCEL_GRACE"
DEFAULT_GRACE = 10.0
EXIT_CANCELED = 130
#: Seconds between progress lines of a long transfer (environment override for tests and chatty logs).
PROGRESS_ENV = "DEEPFORGE_PROGRESS_INTERVAL"
DEFAULT_PROGRESS_INTERVAL = 5.0
MIB = 1024 * 1024
PREFIX = RUNNER_PREFIX


class Canceled(Exception):
    """SIGINT/SIGTERM arrived."""


def _env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    try:
        return seconds_from_env(environ, name, default)
    except ConfigError as exc:
        raise JobFailed(str(exc)) from None


class Runner:
    """One run of one bundle; :meth:`run` returns the process exit code."""

    def __init__(self, job_dir: Path, out: BinaryIO, environ: Mapping[str, str] | None = None) -> None:
        self.job_dir = job_dir
        self.out = out
        self.environ = dict(os.environ if environ is None else environ)
        self.child: JobProcess | None = None
        self.cancel_requested = False
        self.kill_requested = False
        self._tail = b""
        self._spawning = False
        try:
            self.credentials = receive_credentials(self.environ)
        except DeepForgeError as exc:
            raise JobFailed(str(exc)) from None
        if self.credentials is not None and environ is None:
            os.environ.update(self.credentials["env"])  # for our clients only: self.environ goes to the job
        self.grace = _env_float(self.environ, GRACE_ENV, DEFAULT_GRACE)
        self.progress_interval = _env_float(self.environ, PROGRESS_ENV, DEFAULT_PROGRESS_INTERVAL)

    # ------------------------------------------------------------------------------------------ output
    def say(self, line: str) -> None:
        self.out.write((PREFIX + secrets.redact(line) + "\n").encode("utf-8", "replace"))
        self.out.flush()

    # ------------------------------------------------------------------------------------------ the run
    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            spec = read_bundle(self.job_dir)
            self.fetch_inputs(spec)
            code = self.run_operation(spec)
            if self.cancel_requested:
                raise Canceled()
            if code != 0:
                raise JobFailed(self._exit_reason(spec, code))
            results = self.upload_outputs(spec)
            with atomic_write(self.job_dir / RESULTS_FILE) as f:
                f.write(json.dumps(results, indent=2).encode("utf-8"))
            self.say(f"job finished; outputs: {', '.join(results) or '(none)'}")
            return 0
        except Canceled:
            self.say("job canceled")
            return EXIT_CANCELED
        except (JobFailed, DeepForgeError) as exc:
            self.say(str(exc))
            return 1
        except Exception as exc:  # the last line must still say what happened
            log.debug("runner crashed", exc_info=True)
            self.say(f"runner error: {type(exc).__name__}: {exc}")
            return 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = not self.cancel_requested
        self.cancel_requested = True
        if self._spawning:  # run_operation's loop acts on the flags (SIGINT, then SIGKILL after the grace)
            self.kill_requested = not first
            return
        child = self.child
        if child is None or child.returncode is not None:
            raise Canceled()  # not running the operation: stop what we are doing (uploads are atomic)

    def _progress(self, what: str) -> ProgressCallback:
        """A progress callback printing a line at most every ``progress_interval`` seconds (so: big transfers)."""
        last = time.monotonic()

        def report(done: int, total: int | None) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= self.progress_interval and done:
                last = now
                of = f" of {total / MIB:.1f} MiB" if total else " MiB"
                self.say(f"{what}: {done / MIB:.1f}{of}")

        return report

    # ------------------------------------------------------------------------------------------ inputs
    def _client(
        self,
        backend: str,
        config: Mapping[str, Any],
        what: str,
        project: str,
        handed: Mapping[str, Any] | None,
        bind: Mapping[str, Any] | None = None,
    ) -> StorageClient:
        """A client for ``config``: its sealed fields come from the credentials handed over (``handed``, with
        ``bind``, the destination they were opened for), or, for a runner started by hand without them, are
        opened with a key from our environment."""
        try:
            sealed = [name for name, value in config.items() if secrets.is_sealed(value)]
            if self.credentials is not None:
                missing = [name for name in sealed if name not in (handed or {})]
                if missing:
                    raise JobFailed(
                        f"{what}: no credentials were handed over for the sealed field {missing[0]!r} of "
                        f"{backend} storage"
                    )
                # the destination the secrets were opened for wins over what job.json says now
                opened = {**config, **{name: (handed or {})[name] for name in sealed}, **((sealed and bind) or {})}
            else:
                opened = open_config(backend, config, secrets.load_keyring(self.environ) if sealed else None, project)
        except DeepForgeError as exc:
            raise JobFailed(f"{what}: cannot open the sealed config of {backend} storage: {exc}") from None
        try:
            return get_client(backend, opened)
        except DeepForgeError as exc:
            raise JobFailed(f"{what}: {exc}") from None

    def _cache(self) -> WorkerCache:
        root = self.environ.get(CACHE_ENV) or str(self.job_dir / ".deepforge-cache")
        raw = self.environ.get(CACHE_MAX_ENV, "").strip()
        try:
            max_bytes = int(raw) if raw else None
        except ValueError:
            raise JobFailed(f"environment variable {CACHE_MAX_ENV}={raw!r} is not an integer") from None
        return WorkerCache(root, max_bytes=max_bytes)

    def fetch_inputs(self, spec: JobSpec) -> None:
        if not spec.inputs:
            return
        cache = self._cache()
        artifacts = self.job_dir / "artifacts"
        artifacts.mkdir(exist_ok=True)
        for inp in spec.inputs:
            backend = inp.data_info.backend
            what = f"input {inp.name!r}"
            creds = self.credentials or {}
            handed, bind = creds.get("inputs", {}).get(inp.name), creds.get("bind", {}).get("inputs", {}).get(inp.name)
            client = self._client(backend, inp.config, what, spec.project, handed, bind)
            self.say(f"fetching input {inp.name!r} from {backend} storage")
            try:
                cached = cache.fetch(client, inp.data_info, progress=self._progress(f"input {inp.name!r}"))
            except StorageError as exc:
                raise JobFailed(f"{what} from {exc}") from None
            except (DeepForgeError, OSError) as exc:
                raise JobFailed(f"{what} from {backend} storage: {type(exc).__name__}: {exc}") from None
            link = artifacts / inp.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(Path(cached).resolve())

    # ------------------------------------------------------------------------------------------ operation
    def _command(self, spec: JobSpec) -> list[str]:
        command = list(spec.command)
        if command[0] in ("python", "python3"):
            command[0] = sys.executable  # the interpreter this runner (and the job's libraries) live in
        return command

    def run_operation(self, spec: JobSpec) -> int:
        """Run the command (:func:`deepforge_adapters.process.run`); copy its merged output to ours as it arrives.

        A first SIGINT/SIGTERM to the runner is a cancel (SIGINT to the operation, every process of it killed
        after the grace), a second one kills them at once.  Nothing the operation starts outlives it.
        """
        (self.job_dir / "outputs").mkdir(exist_ok=True)
        env = job_environment(self.environ)  # no key, key file path or credentials fd for the job
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("MPLBACKEND", PLOT_BACKEND)  # plt.show() sends the figure to the model (jobs/plotting.py)
        command = self._command(spec)
        self.say(f"running {' '.join(spec.command)}")
        self._tail = b""

        def sink(chunk: bytes) -> None:
            self.out.write(chunk)
            self.out.flush()
            self._tail = (self._tail + chunk)[-4096:]

        def started(proc: JobProcess) -> None:
            self.child = proc

        self._spawning = True
        try:
            result = run_job_process(
                command,
                self.job_dir,
                env,
                sink,
                should_cancel=lambda: self.cancel_requested,
                should_kill=lambda: self.kill_requested,
                grace=self.grace,
                on_start=started,
            )
        except OSError as exc:
            if self.cancel_requested:
                raise Canceled() from None
            raise JobFailed(f"cannot start {spec.command[0]!r}: {exc.strerror}") from None
        finally:
            self._spawning = False
        if result.sink_error is not None:
            raise JobFailed(f"writing the operation's output failed: {result.sink_error}")
        return result.returncode

    def _exit_reason(self, spec: JobSpec, code: int) -> str:
        what = f"operation ({' '.join(spec.command)})"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            reason = f"{what} was killed by signal {name}"
        else:
            reason = f"{what} exited with code {code}"
        lines = [line for line in self._tail.decode("utf-8", "replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else ""
        return f"{reason}: {last[:300]}" if last else reason

    # ------------------------------------------------------------------------------------------ outputs
    def upload_outputs(self, spec: JobSpec) -> dict[str, Any]:
        problems = [(n, p) for n in spec.outputs if (p := _not_a_file(self.job_dir / "outputs" / n / "data"))]
        if problems:
            (name, problem), rest = problems[0], problems[1:]
            what = "was not written" if problem == MISSING else "is not a regular file"
            missing = [n for n, p in rest if p == MISSING]
            others = [f"outputs/{n}/data {p}" for n, p in rest if p != MISSING]
            raise JobFailed(
                f"declared output {name!r} {what} (outputs/{name}/data {problem})"
                + (f"; also missing: {', '.join(missing)}" if missing else "")
                + (f"; also: {'; '.join(others)}" if others else "")
            )
        if not spec.outputs:
            return {}
        creds = self.credentials or {}
        handed, bind = creds.get("storage"), creds.get("bind", {}).get("storage")
        client = self._client(spec.storage_id, spec.storage_config, "job storage", spec.project, handed, bind)
        results: dict[str, Any] = {}
        run = fresh_segment()  # never a key an earlier run wrote (and a dataInfo may point at)
        for name in spec.outputs:
            out_dir = self.job_dir / "outputs" / name
            type_name = self._output_type(out_dir, name)
            target = f"{spec.storage_dir}/{run}/{name}" if spec.storage_dir else f"{run}/{name}"
            data = out_dir / "data"
            self.say(f"uploading output {name!r} ({data.stat().st_size} bytes) to {spec.storage_id} storage")
            try:
                with _open_regular(data, f"outputs/{name}/data") as f:
                    size = os.fstat(f.fileno()).st_size
                    progress = self._progress(f"output {name!r}")
                    info: DataInfo = client.put_file_stream(target, f, progress=progress, size=size)
            except StorageError as exc:
                raise JobFailed(f"output {name!r} to {exc}") from None
            except (DeepForgeError, OSError) as exc:
                raise JobFailed(f"output {name!r} to {spec.storage_id} storage: {type(exc).__name__}: {exc}") from None
            results[name] = {"type": type_name, "dataInfo": info.to_json()}
        return results

    @staticmethod
    def _output_type(out_dir: Path, name: str) -> str:
        meta = out_dir / "metadata.json"
        if not meta.exists():
            return ""
        try:
            value = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:
            raise JobFailed(f"output {name!r}: outputs/{name}/metadata.json is not valid JSON: {exc}") from None
        type_name = value.get("type", "") if isinstance(value, dict) else ""
        return type_name if isinstance(type_name, str) else ""


MISSING = "is missing"


def _not_a_file(path: Path) -> str | None:
    """None for a regular file (or a link to one); else what ``path`` is, for the error message."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "is a dangling symbolic link" if path.is_symlink() else MISSING
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    return f"is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file"


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def _open_regular(path: Path, shown: str) -> BinaryIO:
    """Open a regular file for reading; never blocks on a FIFO swapped in after the check (``O_NONBLOCK``)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise JobFailed(f"{shown} is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_adapters.jobs.runner", description="Run a job bundle.")
    parser.add_argument("--job-dir", default=".", help="the bundle directory (default: the current directory)")
    args = parser.parse_args(argv)
    make_non_dumpable()  # we hold the job's credentials: the operation (same uid) must not read our memory
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    secrets.install_redaction()
    try:
        runner = Runner(Path(args.job_dir).resolve(), sys.stdout.buffer)
    except JobFailed as exc:
        print(PREFIX + str(exc), flush=True)
        return 1
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
