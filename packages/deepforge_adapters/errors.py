"""The exception hierarchy every adapter raises.

Callers (the CLI, the runner, the worker, the plugins) catch these to turn a failure into a readable status:
each error says which backend, which file or field, and what the remote side answered.  Messages never
contain secret values (see :mod:`deepforge_adapters.config`).
"""

from __future__ import annotations


class DeepForgeError(Exception):
    """Base of every error this library raises on purpose."""


class ConfigError(DeepForgeError, ValueError):
    """A backend configuration is invalid: names the backend and the field."""

    def __init__(self, backend: str, field: str | None, message: str) -> None:
        self.backend = backend
        self.field = field
        where = f"{backend}: config field {field!r}" if field else f"{backend}: config"
        super().__init__(f"{where}: {message}")


class UnknownBackendError(DeepForgeError, LookupError):
    """No backend is registered under this id."""

    def __init__(self, kind: str, backend: str, known: list[str]) -> None:
        self.kind = kind
        self.backend = backend
        super().__init__(f"unknown {kind} backend {backend!r}; known backends: {', '.join(sorted(known)) or '(none)'}")


class MissingDependencyError(DeepForgeError, ImportError):
    """A backend's optional dependency is not installed: names the backend, the package and the extra."""

    def __init__(self, kind: str, backend: str, package: str, extra: str | None) -> None:
        self.kind = kind
        self.backend = backend
        self.package = package
        self.extra = extra
        how = f"pip install 'deepforge-adapters[{extra}]'" if extra else f"pip install {package}"
        super().__init__(f"the {backend!r} {kind} backend needs {package!r}, which is not installed: {how}")


class DataInfoError(DeepForgeError, ValueError):
    """A dataInfo (the JSON pointer to an artifact) is malformed."""


class StorageError(DeepForgeError):
    """A storage operation failed; ``backend`` and ``name`` say where."""

    def __init__(self, backend: str, message: str, name: str | None = None) -> None:
        self.backend = backend
        self.name = name
        where = f"{backend} storage" + (f", {name!r}" if name else "")
        super().__init__(f"{where}: {message}")


class NotFoundError(StorageError, FileNotFoundError):
    """The artifact does not exist in the backend."""


class IntegrityError(StorageError):
    """Bytes read back do not match the size or hash recorded for them."""


class WebGMEError(DeepForgeError):
    """A WebGME REST call (blob, executor) answered with an error; ``status_code`` is the HTTP status."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class ComputeError(DeepForgeError):
    """A compute operation failed; ``backend`` says which one."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"{backend} compute: {message}")


class InvalidHashError(DeepForgeError, ValueError):
    """A job id or blob hash is not 40 lowercase hex digits (it would become a path or a URL segment)."""


class BundleError(DeepForgeError, ValueError):
    """A job bundle is malformed or unsafe (zip-slip, missing file, bad schema)."""


class SecretsError(DeepForgeError):
    """Sealed secrets cannot be opened (no key, wrong key, tampered token)."""


class JobFailed(DeepForgeError):
    """Ends a job early: ``reason`` is the sentence a user reads; ``status``, where the caller reports one,
    is the status the job ends in (the worker's executor status; the runner reports none, its exit code does).
    """

    def __init__(self, reason: str, status: str | None = None) -> None:
        self.reason = reason
        self.status = status
        super().__init__(reason if status is None else f"{status}: {reason}")
