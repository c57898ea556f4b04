"""Compute backend ids -> classes (lazy), extended by the ``deepforge.compute`` entry-point group."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._registry import BackendRegistry
from .base import ComputeClient

BUILTIN: dict[str, str] = {
    "local": "deepforge_adapters.compute.local:LocalCompute",
    "gme": "deepforge_adapters.compute.gme:GmeCompute",
    "sciserver-compute": "deepforge_adapters.compute.sciserver_compute:SciServerCompute",
    "ray": "deepforge_adapters.compute.ray:RayCompute",
    "slurm": "deepforge_adapters.compute.slurm:SlurmCompute",
}

registry: BackendRegistry[ComputeClient] = BackendRegistry("compute", "deepforge.compute", BUILTIN, ComputeClient)


def get_client(backend_id: str, config: Mapping[str, Any] | None = None) -> ComputeClient:
    return registry.get_class(backend_id)(config)


def backends() -> dict[str, dict[str, Any]]:
    """``{id: {"name": display name, "configStructure": [...]}}`` for every backend that loads."""
    return registry.describe()
