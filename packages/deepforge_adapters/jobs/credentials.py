"""Handing a job its plaintext credentials without the deployment key entering the job's process tree.

Whoever holds the key (the worker daemon; for ``local`` compute, the process that submits the job) opens the
sealed fields of ONE job's ``job.json`` (:func:`open_job_credentials`) and gives the runner only those values
through an inherited pipe (:class:`CredentialPipe`); the runner reads them once at start
(:func:`receive_credentials`).  The environment of the runner and of the operation holds no key, no key file
path and no credential: only ``DEEPFORGE_CREDENTIALS_FD``, the number of an already drained pipe.

The payload is JSON::

    {"storage": {"<field>": "<plain>"}, "inputs": {"<input name>": {"<field>": "<plain>"}},
     "bind": {"storage": {"endpoint": "..."}, "inputs": {"<input name>": {...}}},
     "env": {"<VAR>": "<value>"}}      # e.g. the worker's gme token, for the runner's own clients only

``bind`` holds the destination fields (``binds_secrets``) the secrets were opened for; the runner uses
those values, not what ``job.json`` says by the time it reads it (in same-uid mode another job could
rewrite this job's directory in between).

Processes that hold secrets make themselves non-dumpable (:func:`make_non_dumpable`), so job code running
under the same uid cannot read their ``/proc/<pid>/environ``, ``mem`` or attach a debugger to them.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import secrets
from ..errors import SecretsError
from .layout import JOB_FILE

# jobs.bundle and the storage registry are imported where they are used: the local supervisor, a process per
# job, imports this module for CredentialPipe and job_environment alone, and those two modules (with storage
# and zipfile behind them) were ~45 ms of its start (bench/scale_pipelines.py, ``python -X importtime``).

log = logging.getLogger(__name__)

CREDENTIALS_FD_ENV = "DEEPFORGE_CREDENTIALS_FD"
#: Variables that never reach a runner or an operation started by the worker or local compute (the SciServer
#: account link's key: a job started by a plugin must not ask the WebGME server for linked tokens).
KEY_VARIABLES = (secrets.KEY_ENV, secrets.KEY_FILE_ENV, CREDENTIALS_FD_ENV, secrets.LINK_KEY_ENV)

Credentials = dict[str, Any]


def is_runner_command(cmd: str, args: Sequence[str]) -> bool:
    """Whether an executor command is the deepforge runner: the only command ever handed credentials (a
    bundle with another ``cmd`` is job code from its first instruction on)."""
    from .bundle import executor_config

    return Path(cmd).name in ("python3", "python") and list(args) == list(executor_config()["args"])


def has_sealed_fields(job_dir: Path) -> bool:
    """Whether ``job_dir/job.json`` (if any) carries a sealed value (so the key is needed to run it)."""
    path = job_dir / JOB_FILE
    try:
        return '"$sealed"' in path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def open_job_credentials(
    job_dir: Path, keyring: secrets.Keyring | str | None, env: Mapping[str, str] | None = None
) -> Credentials:
    """The plaintext of every sealed field of the bundle in ``job_dir``, opened in its context.

    ``keyring`` is only loaded (``None``: from the environment) when something is sealed.  Raises
    :class:`SecretsError` naming the config ("job storage", "input 'x'") and the field.  ``env`` is extra
    variables for the runner's own use.  A directory without ``job.json`` (not a deepforge bundle) gives
    only ``env``; a malformed ``job.json`` is left for the runner to report.
    """
    from ..storage.registry import registry as storage_registry
    from .bundle import open_config, parse_job

    creds: Credentials = {"storage": {}, "inputs": {}, "bind": {"storage": {}, "inputs": {}}, "env": dict(env or {})}
    if not (job_dir / JOB_FILE).is_file() or not has_sealed_fields(job_dir):
        return creds
    try:
        spec = parse_job(job_dir)
    except Exception:  # BundleError: the runner says what is wrong with job.json
        return creds
    ring = secrets.as_keyring(keyring)

    def opened(what: str, backend: str, config: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        sealed = [name for name, value in config.items() if secrets.is_sealed(value)]
        if not sealed:
            return {}, {}
        try:
            plain = open_config(backend, config, ring, spec.project)
            schema = storage_registry.get_class(backend).schema
        except SecretsError as exc:
            raise SecretsError(f"{what}: cannot open the sealed config of {backend} storage: {exc}") from None
        except Exception as exc:  # an unknown backend: the runner reports it
            log.debug("cannot open %s: %s", what, exc)
            return {}, {}
        return {name: str(plain[name]) for name in sealed}, {n: config.get(n) for n in schema.binding_names()}

    creds["storage"], creds["bind"]["storage"] = opened("job storage", spec.storage_id, spec.storage_config)
    for inp in spec.inputs:
        values, bind = opened(f"input {inp.name!r}", inp.data_info.backend, inp.config)
        if values:
            creds["inputs"][inp.name] = values
            creds["bind"]["inputs"][inp.name] = bind
    return creds


class CredentialPipe:
    """A pipe whose read end a child inherits; the payload is written by a thread once the child exists.

    ``with CredentialPipe(creds) as pipe: spawn(..., pass_fds=pipe.pass_fds, env={**env, **pipe.env})``,
    then :meth:`started` (closes our read end, writes, closes the write end).  ``CredentialPipe(None)`` is
    no pipe at all (nothing to pass, no variable).
    """

    def __init__(self, creds: Credentials | None) -> None:
        self._data = json.dumps(creds).encode("utf-8") if creds is not None else b""
        self.read_fd, self._write_fd = os.pipe() if creds is not None else (-1, -1)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self.read_fd,) if self.read_fd >= 0 else ()

    @property
    def env(self) -> dict[str, str]:
        return {CREDENTIALS_FD_ENV: str(self.read_fd)} if self.read_fd >= 0 else {}

    def started(self) -> None:
        """The child has the read end: close ours and feed it (from a thread, a pipe holds only 64 KiB)."""
        if self.read_fd < 0:
            return
        os.close(self.read_fd)
        self.read_fd = -1
        threading.Thread(target=self._feed, name="credentials", daemon=True).start()

    def _feed(self) -> None:
        fd, self._write_fd = self._write_fd, -1
        try:
            view = memoryview(self._data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:  # the child exited without reading: nothing to hand over any more
            log.debug("credentials pipe: %s", exc)
        finally:
            os.close(fd)
            self._data = b""

    def close(self) -> None:
        for fd in (self.read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self.read_fd = self._write_fd = -1

    def __enter__(self) -> CredentialPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.read_fd >= 0:  # never started: close both ends
            self.close()


def receive_credentials(environ: dict[str, str]) -> Credentials | None:
    """In the runner: read and close the pipe named by ``DEEPFORGE_CREDENTIALS_FD`` (removed from
    ``environ``); ``None`` when there is none (a runner started by hand, which may hold a key itself)."""
    raw = environ.pop(CREDENTIALS_FD_ENV, "").strip()
    os.environ.pop(CREDENTIALS_FD_ENV, None)
    if not raw:
        return None
    try:
        fd = int(raw)
        chunks = []
        with os.fdopen(fd, "rb") as f:
            while chunk := f.read(65536):
                chunks.append(chunk)
        value = json.loads(b"".join(chunks))
    except (ValueError, OSError) as exc:
        raise SecretsError(f"cannot read the job's credentials from {CREDENTIALS_FD_ENV}={raw}: {exc}") from None
    if not isinstance(value, dict):
        raise SecretsError(f"{CREDENTIALS_FD_ENV}: expected a JSON object")
    for part in ("storage", "inputs", "env"):
        value.setdefault(part, {})
    value.setdefault("bind", {"storage": {}, "inputs": {}})
    for group in (value["storage"], value["env"], *value["inputs"].values()):
        for item in group.values():
            secrets.register_secret(str(item))
    return value


def job_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the key, the key file path, the credentials fd and the SciServer link key."""
    return {k: v for k, v in environ.items() if k not in KEY_VARIABLES}
