"""The status vocabulary of DeepForge's model: what an Execution's or a Job's ``status`` attribute holds."""

from __future__ import annotations

from enum import StrEnum


class ModelStatus(StrEnum):
    """The ``status`` attribute of an Execution or a Job in the model (DeepForge's vocabulary).

    A job's ``queued``/``running``/``success``/``failed``/``canceled`` are the compute
    :class:`~deepforge_adapters.compute.JobStatus` names; ``canceling`` is written on an Execution to ask its
    runner to cancel it.
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"
    CANCELING = "canceling"

    @property
    def finished(self) -> bool:
        return self in (ModelStatus.SUCCESS, ModelStatus.FAILED, ModelStatus.CANCELED)

    @property
    def active(self) -> bool:
        """A job in this state has a compute job (its ``jobInfo``) to follow or cancel."""
        return self in (ModelStatus.QUEUED, ModelStatus.RUNNING)

    def __str__(self) -> str:
        return self.value
