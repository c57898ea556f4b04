"""Storage backend ids -> classes (lazy), extended by the ``deepforge.storage`` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._registry import BackendRegistry
from .base import StorageClient

BUILTIN: dict[str, str] = {
    "local": "deepforge_adapters.storage.local:LocalStorage",
    "gme": "deepforge_adapters.storage.gme:GmeStorage",
    "s3": "deepforge_adapters.storage.s3:S3Storage",
    "sciserver-files": "deepforge_adapters.storage.sciserver_files:SciServerFilesStorage",
}

registry: BackendRegistry[StorageClient] = BackendRegistry("storage", "deepforge.storage", BUILTIN, StorageClient)


def get_client(backend_id: str, config: Mapping[str, Any] | None = None) -> StorageClient:
    """A client for ``backend_id`` with ``config`` validated against its schema."""
    return registry.get_class(backend_id)(config)


def backends() -> dict[str, dict[str, Any]]:
    """``{id: {"name": display name, "configStructure": [...]}}`` for every backend that loads.

    A backend whose module cannot be imported is left out (and logged); ``registry.availability()`` says why.
    """
    return registry.describe()
