"""The status vocabulary of DeepForge's model: what an Execution's or a Job's ``status`` attribute holds."""

from __future__ import annotations

from enum import StrEnum


class ModelStatus(StrEnum):
    """The ``status`` attribute of an Execution or a Job in the model, as DeepForge writes it.

    DeepForge's meta enums (its ``pipeline`` library) are Execution: pending, running, success, failed,
    canceled; Job: pending, queued, running, canceled, success, failed.  What DeepForge's plugins write
    differs in one value, and so does ours: a Job that failed is ``fail`` (ExecuteJob/ExecutePipeline write
    it and DeepForge's JobDecorator colours a Job by it: an unknown value shows as ``fail``), an Execution that
    failed is ``failed`` (its ExecutionIndex styles that one).

    A cancel request is ``canceled`` written on a running Execution (a value of its enum; the property
    editor's dropdown offers it, and DeepForge's ExecutePipeline reads an Execution ``canceled`` as canceled):
    the runner polls for it, cancels its jobs and finishes the Execution as ``canceled`` with an ``endTime``.
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAIL = "fail"  # a Job that failed
    FAILED = "failed"  # an Execution that failed (also read as a failed Job: DeepForge's Job enum has it)
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (ModelStatus.SUCCESS, ModelStatus.FAIL, ModelStatus.FAILED, ModelStatus.CANCELED)

    @property
    def failed(self) -> bool:
        return self in (ModelStatus.FAIL, ModelStatus.FAILED)

    @property
    def active(self) -> bool:
        """A job in this state has a compute job (its ``jobInfo``) to follow or cancel."""
        return self in (ModelStatus.QUEUED, ModelStatus.RUNNING)

    def __str__(self) -> str:
        return self.value
