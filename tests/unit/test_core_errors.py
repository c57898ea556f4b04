"""errors.py: every error names where it happened, and the hierarchy lets callers catch by kind."""

from __future__ import annotations

from deepforge_adapters.errors import (
    BundleError,
    ComputeError,
    ConfigError,
    DataInfoError,
    DeepForgeError,
    IntegrityError,
    NotFoundError,
    SecretsError,
    StorageError,
    UnknownBackendError,
    WebGMEError,
)


def test_messages_name_backend_field_and_artifact() -> None:
    assert str(ConfigError("s3", "bucketName", "is required")) == "s3: config field 'bucketName': is required"
    assert str(ConfigError("s3", None, "expected an object")) == "s3: config: expected an object"
    assert str(StorageError("gme", "HTTP 500", "proj/model")) == "gme storage, 'proj/model': HTTP 500"
    assert str(StorageError("gme", "server down")) == "gme storage: server down"
    assert str(ComputeError("local", "no slot")) == "local compute: no slot"
    assert str(UnknownBackendError("compute", "x", ["b", "a"])) == ("unknown compute backend 'x'; known backends: a, b")
    err = WebGMEError("HTTP 404 Not Found", status_code=404)
    assert err.status_code == 404


def test_hierarchy() -> None:
    assert issubclass(NotFoundError, StorageError) and issubclass(NotFoundError, FileNotFoundError)
    assert issubclass(IntegrityError, StorageError)
    for cls in (ConfigError, DataInfoError, BundleError):
        assert issubclass(cls, ValueError)
    assert issubclass(UnknownBackendError, LookupError)
    for cls in (ConfigError, UnknownBackendError, DataInfoError, StorageError, ComputeError, SecretsError, WebGMEError):
        assert issubclass(cls, DeepForgeError)
    err = NotFoundError("s3", "no such key", "a/b")
    assert (err.backend, err.name) == ("s3", "a/b")
