"""What the executor's two sides need of the WebGME REST clients, as :class:`typing.Protocol` s.

:class:`~.executor.ExecutorClient` and :class:`~.blob.BlobClient` satisfy them; ``deepforge-worker`` and the
``gme`` compute backend are typed against these, so a test (or another transport) can pass anything with the
same methods, and mypy checks both the callers and the real clients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..streams import Readable
from .blob import BlobReader
from .executor import ExecutorStatus


class ExecutorAPI(Protocol):
    """``/rest/executor``: the job queue (see :class:`~.executor.ExecutorClient` for each call's contract)."""

    def create_job(self, job_hash: str, labels: Sequence[str] = ()) -> dict[str, Any]: ...

    def get_info(self, job_hash: str) -> dict[str, Any]: ...

    def list_jobs(self, status: ExecutorStatus | None = None) -> dict[str, Any]: ...

    def update_job(self, job_hash: str, info: Mapping[str, Any]) -> None: ...

    def cancel_job(self, job_hash: str, secret: str) -> None: ...

    def get_output(self, job_hash: str, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]: ...

    def post_output(self, job_hash: str, output_number: int, output: str) -> None: ...

    def get_workers(self) -> dict[str, Any]: ...

    def poll_worker(
        self, client_id: str, available_processes: int, labels: Sequence[str], running_jobs: Sequence[str]
    ) -> dict[str, Any]: ...

    def caller_identity(self) -> list[Any]: ...


class BlobAPI(Protocol):
    """``/rest/blob``: what a worker reads a job bundle from and archives its results into."""

    def create_file(self, name: str, readable: Readable, size: int | None = None) -> tuple[str, dict[str, Any]]: ...

    def create_artifact(self, name: str, entries: Mapping[str, str], sizes: Mapping[str, int] | None = None) -> str: ...

    def upload_artifact(self, name: str, files: Mapping[str, str | os.PathLike[str]]) -> str: ...

    def metadata(self, metadata_hash: str) -> dict[str, Any]: ...

    def open(self, metadata_hash: str, subpath: str | None = None, view: bool = False) -> BlobReader: ...
