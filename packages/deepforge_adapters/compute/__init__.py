"""Compute adapters: one interface to where operations run."""

from .base import ComputeClient, ComputeJob, JobStatus, JobUpdate, Poll, StatusMapping, StatusTable
from .registry import backends, get_client, registry

__all__ = [
    "ComputeClient",
    "ComputeJob",
    "JobStatus",
    "JobUpdate",
    "Poll",
    "StatusMapping",
    "StatusTable",
    "backends",
    "get_client",
    "registry",
]
