"""A client for WebGME's executor REST API (``/rest/executor``): the job queue that workers poll.

Used on both sides: the ``gme`` compute backend creates, watches and cancels jobs; ``deepforge-worker``
polls ``POST /worker``, posts output chunks and the final update.  The protocol is documented in
docs/protocols.md ("The executor"); names here follow it (JobInfo, OutputInfo, WorkerInfo).

Every request carries the configured ``x-api-token`` / ``Authorization: Bearer`` and ``x-executor-nonce``
(DeepForge's client never sent the nonce, so it couldn't talk to a server that requires one).

Retries (see :mod:`._rest`): GETs and the idempotent POSTs (``create`` is keyed by the job hash, ``update``
overlays fields, ``output`` upserts by number, ``cancel`` sets a flag) are retried on 5xx and broken
connections.  ``poll_worker`` is retried only when the request could not have reached the server: it
claims jobs, and replaying it after a lost answer would leave those jobs RUNNING on a worker that never
heard of them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import requests

from ..errors import WebGMEError
from ._rest import DEFAULT_HOST, auth_headers, check, json_body, quote_segment, request_with_replay, session_with

log = logging.getLogger(__name__)


class ExecutorStatus(StrEnum):
    """A JobInfo ``status`` of webgme-engine's executor (``common/executor/JobInfo.js``), as its strings."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    CANCELED = "CANCELED"
    FAILED_TO_EXECUTE = "FAILED_TO_EXECUTE"
    FAILED_TO_GET_SOURCE_METADATA = "FAILED_TO_GET_SOURCE_METADATA"
    FAILED_SOURCE_COULD_NOT_BE_OBTAINED = "FAILED_SOURCE_COULD_NOT_BE_OBTAINED"
    FAILED_CREATING_SOURCE_ZIP = "FAILED_CREATING_SOURCE_ZIP"
    FAILED_UNZIP = "FAILED_UNZIP"
    FAILED_EXECUTOR_CONFIG = "FAILED_EXECUTOR_CONFIG"
    FAILED_TO_ARCHIVE_FILE = "FAILED_TO_ARCHIVE_FILE"
    FAILED_TO_SAVE_JOINT_ARTIFACT = "FAILED_TO_SAVE_JOINT_ARTIFACT"
    FAILED_TO_ADD_OBJECT_HASHES = "FAILED_TO_ADD_OBJECT_HASHES"
    FAILED_TO_SAVE_ARTIFACT = "FAILED_TO_SAVE_ARTIFACT"

    @property
    def finished(self) -> bool:
        """``JobInfo.isFinishedStatus``: every status but CREATED and RUNNING."""
        return self not in (ExecutorStatus.CREATED, ExecutorStatus.RUNNING)

    def __str__(self) -> str:
        return self.value


#: JobInfo.finishedStatuses of webgme-engine's ``common/executor/JobInfo.js``.
FINISHED_STATUSES = frozenset(s for s in ExecutorStatus if s.finished)


def is_finished(status: str | None) -> bool:
    return status in FINISHED_STATUSES


#: The job id :meth:`ExecutorClient.caller_identity` creates to learn who the server takes the caller for.
IDENTITY_PROBE_HASH = hashlib.sha1(b"deepforge: executor identity probe").hexdigest()


class ExecutorClient:
    """``/rest/executor`` of one WebGME server."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        api_token: str | None = None,
        webgme_token: str | None = None,
        nonce: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.session = session_with(auth_headers(api_token, webgme_token, nonce), session)

    def __repr__(self) -> str:
        return f"ExecutorClient({self.host!r})"

    def url(self, *parts: str) -> str:
        """Each part is percent-encoded as one path segment: a job hash such as ``/tmp/x`` stays one segment."""
        return f"{self.host}/rest/executor/" + "/".join(quote_segment(p) for p in parts)

    # ------------------------------------------------------------------------------------ plumbing
    def _get(self, what: str, *parts: str, params: Mapping[str, Any] | None = None) -> Any:
        what = f"executor {what} at {self.host}"
        response = self.session.get(self.url(*parts), params=params, allow_redirects=False)
        return json_body(check(response, what), what)

    def _post(self, what: str, body: Any, *parts: str, replay: bool = True) -> requests.Response:
        what = f"executor {what} at {self.host}"
        url = self.url(*parts)
        if replay:
            response = request_with_replay(lambda: self.session.post(url, json=body, allow_redirects=False), what)
        else:
            try:
                response = self.session.post(url, json=body, allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise WebGMEError(f"{what}: {type(exc).__name__}: {exc}") from None
        return check(response, what)

    # ------------------------------------------------------------------------------------ jobs
    def create_job(self, job_hash: str, labels: Sequence[str] = ()) -> dict[str, Any]:
        """Queue the job whose artifact has metadata hash ``job_hash``; returns its JobInfo.

        A new (or re-run canceled) job's JobInfo includes ``secret``, the only way to cancel it later.  An
        existing job is returned as it is, without the secret: identical job artifacts behave as cached.
        (So if a 5xx/broken connection hid the answer that created the job, the replay returns it without
        the secret; such a job can't be canceled through this client.  That's the server's design.)
        """
        body = {"hash": job_hash, "labels": list(labels)}
        response = self._post(f"create {job_hash}", body, "create", job_hash)
        return dict(json_body(response, f"executor create {job_hash}"))

    def get_info(self, job_hash: str) -> dict[str, Any]:
        """The JobInfo (no secret); :class:`WebGMEError` with ``status_code`` 404 if the job is unknown."""
        return dict(self._get(f"info {job_hash}", "info", job_hash))

    def list_jobs(self, status: ExecutorStatus | None = None) -> dict[str, Any]:
        """``{hash: JobInfo}`` of the caller's jobs, optionally only those with ``status``."""
        return dict(self._get("job list", "", params={"status": status} if status else None))

    def update_job(self, job_hash: str, info: Mapping[str, Any]) -> None:
        """Overlay fields of a JobInfo (the worker's final report: status, times, resultHashes...)."""
        self._post(f"update {job_hash}", dict(info, hash=job_hash), "update", job_hash)

    def cancel_job(self, job_hash: str, secret: str) -> None:
        """Ask the job's worker to stop it (403 with a wrong secret); a finished job is left as it is."""
        self._post(f"cancel {job_hash}", {"secret": secret}, "cancel", job_hash)

    # ------------------------------------------------------------------------------------ output
    def get_output(self, job_hash: str, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        """OutputInfos ``{outputNumber, output}`` sorted by number; ``start`` inclusive, ``end`` exclusive."""
        params = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        body = self._get(f"output {job_hash}", "output", job_hash, params=params or None)
        if not isinstance(body, list):
            raise WebGMEError(f"executor output {job_hash} at {self.host}: expected a list, got {body!r:.200}")
        return body

    def post_output(self, job_hash: str, output_number: int, output: str) -> None:
        """Store output chunk ``output_number`` (0, 1, 2...); posting the same number again overwrites it."""
        body = {"outputNumber": output_number, "output": output}
        self._post(f"output {job_hash} #{output_number}", body, "output", job_hash)

    # ------------------------------------------------------------------------------------ workers
    def get_workers(self) -> dict[str, Any]:
        """``{clientId: {clientId, lastSeen, labels, jobs: [...]}}`` of the (caller's) workers."""
        return dict(self._get("worker list", "worker"))

    def poll_worker(
        self, client_id: str, available_processes: int, labels: Sequence[str], running_jobs: Sequence[str]
    ) -> dict[str, Any]:
        """One worker heartbeat; the server's answer names jobs to start and to cancel.

        Returns WorkerInfo.ServerResponse ``{jobsToStart, refreshPeriod, labelJobs, jobsToCancel}``.
        """
        body = {
            "clientId": client_id,
            "availableProcesses": available_processes,
            "labels": list(labels),
            "runningJobs": list(running_jobs),
        }
        response = self._post(f"worker poll {client_id}", body, "worker", replay=False)
        answer = json_body(response, f"executor worker poll {client_id}")
        if not isinstance(answer, dict):
            # The daemon validates the fields (deepforge_worker.daemon.parse_answer); the shape is checked here.
            raise WebGMEError(
                f"executor worker poll {client_id}: the answer is {type(answer).__name__}, not a JSON object",
                response.status_code,
            )
        return answer

    def caller_identity(self) -> list[Any]:
        """The ``userId`` list the executor records for this client's credentials (``[None]``: nobody).

        The executor maps an ``x-api-token`` to its user, and an *unknown* token to no user at all, which it
        then answers like any other caller: every read looks the same for a valid and an unknown token, and
        only a job the caller creates records who it was.  So this creates one probe job under the fixed id
        :data:`IDENTITY_PROBE_HASH` with status ``CANCELED`` (no worker ever claims a canceled job, and the
        next probe replaces it, so the server keeps one such record at most) and reads its ``userId``.
        """
        body = {"hash": IDENTITY_PROBE_HASH, "status": ExecutorStatus.CANCELED, "labels": []}
        response = self._post("identity probe", body, "create", IDENTITY_PROBE_HASH)
        info = json_body(response, "executor identity probe")
        user_ids = info.get("userId") if isinstance(info, dict) else None
        if not isinstance(user_ids, list):
            raise WebGMEError(f"executor identity probe at {self.host}: the answer has no userId list", None)
        return user_ids
