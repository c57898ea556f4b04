"""Compute backend ``gme``: jobs run by workers of a WebGME server's executor (``/rest/executor``).

The job id is the metadata hash of the bundle as a blob artifact: ``start_job`` takes that hash (the plugins
upload the bundle themselves), or uploads ``ComputeJob.bundle`` (a directory or zip, as ``deepforge run``
gives it) as that artifact first.  It checks that a connected worker can take the job, creates the executor
job and keeps the returned cancel ``secret`` in ``job_info``.  Everything else works from ``job_info``
alone, so a plugin that died can be replaced by one that resumes watching from the model.

Differences from DeepForge's gme client, on purpose: ``poll`` (so ``watch``) streams output from chunk #0 (DeepForge
skipped it), the executor nonce is sent when configured (DeepForge could not talk to a nonce-protected
executor), and every ``FAILED_*`` code maps to ``failed`` with a sentence instead of leaking through raw.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from ..config import ConfigSchema, Field
from ..errors import BundleError, ComputeError, InvalidHashError, NotFoundError, WebGMEError
from ..hashing import check_sha1_hex
from ..jobs.bundle import read_bundle
from ..jobs.layout import RESULTS_ARTIFACT, RESULTS_FILE, STDOUT_ARTIFACT, STDOUT_FILE, parse_results
from ..webgme import DEFAULT_HOST, HOST_ENV
from ..webgme.executor import ExecutorStatus
from ..webgme.protocols import BlobAPI, ExecutorAPI
from .base import ComputeClient, ComputeJob, JobStatus, Poll, StatusMapping, StatusTable

log = logging.getLogger(__name__)

WORKER_PREFIX = "[deepforge-worker] "
#: How long a submit waits for a worker that could take the job before refusing it (a restarted worker or
#: server lists none until the next poll: the Node worker's default refresh is 5 s, ours reconnect sooner).
WORKER_WAIT_SECONDS = 30.0
WORKER_POLL_SECONDS = 1.0

F = JobStatus.FAILED
S = ExecutorStatus
STATUS_TABLE = StatusTable(
    "gme",
    {
        S.CREATED: StatusMapping(JobStatus.QUEUED),
        S.RUNNING: StatusMapping(JobStatus.RUNNING),
        S.SUCCESS: StatusMapping(JobStatus.SUCCESS),
        S.CANCELED: StatusMapping(JobStatus.CANCELED),
        S.FAILED_TO_EXECUTE: StatusMapping(F, "the job's command failed (non-zero exit)"),
        S.FAILED_TO_GET_SOURCE_METADATA: StatusMapping(F, "the worker could not find the job bundle in the blob"),
        S.FAILED_SOURCE_COULD_NOT_BE_OBTAINED: StatusMapping(F, "the worker could not read the job from the executor"),
        S.FAILED_CREATING_SOURCE_ZIP: StatusMapping(F, "the worker could not download the job bundle"),
        S.FAILED_UNZIP: StatusMapping(F, "the worker refused or could not unpack the job bundle"),
        S.FAILED_EXECUTOR_CONFIG: StatusMapping(F, "the bundle's executor_config.json is missing or invalid"),
        S.FAILED_TO_ARCHIVE_FILE: StatusMapping(F, "the worker could not upload a result file to the blob"),
        S.FAILED_TO_SAVE_JOINT_ARTIFACT: StatusMapping(F, "the worker could not save the joint result artifact"),
        S.FAILED_TO_ADD_OBJECT_HASHES: StatusMapping(F, "the worker could not assemble a result artifact"),
        S.FAILED_TO_SAVE_ARTIFACT: StatusMapping(F, "the worker could not save a result artifact"),
    },
)


class GmeCompute(ComputeClient):
    id = "gme"
    name = "WebGME Executor"
    status_table = STATUS_TABLE
    # The first poll after 0.5 s (a short job is seen ended about that much sooner), backing off to 2 s.
    poll_interval = 0.5
    max_poll_interval = 2.0
    schema = ConfigSchema(
        "gme",
        (
            Field(
                "host",
                "Server URL",
                "WebGME server whose executor runs the job",
                default=DEFAULT_HOST,
                env=(HOST_ENV,),
                binds_secrets=True,
            ),
            Field("apiToken", "API token", "x-api-token; jobs run on workers of this token's user", is_auth=True),
            Field("webgmeToken", "WebGME token", "the user's JWT (Authorization: Bearer)", is_auth=True),
            Field("nonce", "Executor nonce", "x-executor-nonce, if the server sets executor.nonce", is_auth=True),
            Field("labels", "Labels", "Comma-separated worker labels the job needs (e.g. gpu)", default=""),
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.host = str(self.config["host"]).rstrip("/")
        self.worker_wait = WORKER_WAIT_SECONDS

    @cached_property
    def executor(self) -> ExecutorAPI:
        """The :class:`~deepforge_adapters.webgme.executor.ExecutorClient`, made on first use."""
        from ..webgme.executor import ExecutorClient

        api_token, webgme_token = self._tokens()
        return ExecutorClient(self.host, api_token, webgme_token, nonce=self.config["nonce"] or None)

    @cached_property
    def blob(self) -> BlobAPI:
        from ..webgme.blob import BlobClient

        return BlobClient(self.host, *self._tokens())

    def _tokens(self) -> tuple[str | None, str | None]:
        return self.config["apiToken"] or None, self.config["webgmeToken"] or None

    def _job_hash(self, value: Any, what: str = "job_info hash") -> str:
        """The job id, refused unless 40 lowercase hex (it becomes an executor URL segment)."""
        try:
            return check_sha1_hex(value, what)
        except InvalidHashError as exc:
            raise ComputeError(self.id, str(exc)) from None

    # --- submit / cancel -----------------------------------------------------------------------------
    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        labels = _labels(self.config["labels"], job.labels)
        if job.hash:
            job_hash = self._job_hash(job.hash, "ComputeJob.hash")
            try:
                self.blob.metadata(job_hash)
            except NotFoundError:
                raise ComputeError(self.id, f"job bundle {job_hash} is not in the blob of {self.host}") from None
            except WebGMEError as exc:
                raise ComputeError(self.id, f"checking job bundle {job_hash} on {self.host}: {exc}") from None
            self.check_workers(labels)
        elif job.bundle is not None:
            self.check_workers(labels)  # before uploading: no worker, no upload
            job_hash = self.upload_bundle(Path(job.bundle), job.name)
        else:
            raise ComputeError(
                self.id, "ComputeJob.hash is required (a bundle already in the blob) when no ComputeJob.bundle is given"
            )
        try:
            info = self.executor.create_job(job_hash, labels=labels)
        except WebGMEError as exc:
            raise ComputeError(self.id, f"creating executor job {job_hash} on {self.host}: {exc}") from None
        if not info.get("secret"):
            log.info(
                "job %s already exists on %s (%s); watching the existing job", job_hash, self.host, info.get("status")
            )
        return {
            "hash": job_hash,
            "host": self.host,
            "secret": info.get("secret"),
            "labels": labels,
            "createTime": info.get("createTime"),
            "name": job.name,
        }

    def upload_bundle(self, bundle: Path, name: str) -> str:
        """Upload a job bundle (a directory, or a zip: extracted first) as a blob artifact; its metadata hash.

        The artifact holds the bundle's files at their relative paths, as the plugins upload it.
        """
        with tempfile.TemporaryDirectory(prefix="deepforge-gme-bundle-") as scratch:
            root = bundle
            if not bundle.is_dir():
                root = Path(scratch) / "bundle"
                read_bundle(bundle, dest=root)
            else:
                read_bundle(root)  # a malformed bundle fails here, not on the worker
            files: dict[str, str] = {}
            for path in sorted(root.rglob("*")):
                if path.is_symlink():
                    raise BundleError(f"{bundle}: bundles may not contain symbolic links ({path.relative_to(root)})")
                if path.is_file():
                    files[path.relative_to(root).as_posix()] = str(path)
            try:
                artifact = self.blob.upload_artifact(f"{name}-execution-files", files)
            except WebGMEError as exc:
                raise ComputeError(self.id, f"uploading job bundle {bundle} to {self.host}: {exc}") from None
        log.info("uploaded job bundle %s to %s as %s", bundle, self.host, artifact)
        return artifact

    def check_workers(self, labels: list[str]) -> None:
        """Refuse, with the reason, when no connected worker could take the job, after waiting up to
        :attr:`worker_wait` seconds for one: a worker that crashed and was restarted, or a server that was
        restarted, lists no worker until the next poll, and refusing then failed a job of the 1,000-job soak
        run that any worker would have run a second later."""
        deadline = time.monotonic() + self.worker_wait
        while True:
            refusal = self._refusal(labels)
            if refusal is None:
                return
            if time.monotonic() >= deadline:
                raise ComputeError(self.id, refusal)
            log.info("%s; waiting up to %.0f s for one", refusal, deadline - time.monotonic())
            time.sleep(WORKER_POLL_SECONDS)

    def _refusal(self, labels: list[str]) -> str | None:
        """Why no connected worker could take a job with ``labels`` now; None if one could."""
        try:
            workers = self.executor.get_workers()
        except WebGMEError as exc:
            return f"listing workers on {self.host}: {exc}"
        if not workers:
            return f"no worker is connected to {self.host} (for this user); start deepforge-worker"
        offered = [list(w.get("labels") or []) for w in workers.values()]
        if not any(set(labels) <= set(o) for o in offered):
            return f"no connected worker has the labels {labels}; connected workers offer " + "; ".join(
                ",".join(o) or "(no labels)" for o in offered
            )
        return None

    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        self.require(job_info, "hash")
        self._job_hash(job_info["hash"])
        secret = job_info.get("secret")
        if not secret:
            raise ComputeError(
                self.id,
                f"job {job_info['hash']} has no cancel secret in its job_info: it was created earlier by another "
                "start (identical bundle), and only that start received the secret",
            )
        try:
            self.executor.cancel_job(job_info["hash"], secret)
        except WebGMEError as exc:
            raise ComputeError(self.id, f"canceling job {job_info['hash']}: {exc}") from None

    # --- status / output / results ---------------------------------------------------------------------
    def _info(self, job_info: Mapping[str, Any]) -> dict[str, Any] | None:
        self.require(job_info, "hash")
        self._job_hash(job_info["hash"])
        try:
            return dict(self.executor.get_info(job_info["hash"]))
        except WebGMEError as exc:
            if exc.status_code == 404:
                return None
            raise ComputeError(self.id, f"job {job_info['hash']}: {exc}") from None

    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus:
        info = self._info(job_info)
        return JobStatus.NOT_FOUND if info is None else self.status_table[info.get("status")].status

    def get_console_output(self, job_info: Mapping[str, Any]) -> str:
        """Live output while running; the archived ``job_stdout.txt`` once finished (live output is cleared)."""
        info = self._info(job_info)
        return "" if info is None else self._console(info).decode("utf-8", "replace")

    def _console(self, info: Mapping[str, Any]) -> bytes:
        """The archived ``job_stdout.txt`` when the job has one (it keeps every byte), else the live output."""
        hashes = info.get("resultHashes")
        if isinstance(hashes, dict) and hashes.get(STDOUT_ARTIFACT):
            try:
                return self._read_artifact_file(hashes[STDOUT_ARTIFACT], STDOUT_FILE)
            except (NotFoundError, WebGMEError, KeyError) as exc:
                log.warning("job %s: archived stdout unreadable (%s); using live output", info["hash"], exc)
        return "".join(chunk.get("output", "") for chunk in self._outputs(info["hash"])).encode("utf-8")

    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        """The job's info, then its output chunks after the last one seen, from chunk #0 on.

        The cursor is ``{"chunk": last outputNumber seen, "bytes": output bytes seen}``.  If the server
        already cleared the live chunks of a finished job (a resumed watch, more than
        ``clearOutputTimeout`` after the end), the rest comes from the archived stdout.
        """
        self.require(job_info, "hash")
        job_hash = self._job_hash(job_info["hash"])
        last_number, seen = self._load_cursor(cursor)
        info = self._info(job_info)
        if info is None:
            return Poll(JobStatus.NOT_FOUND, cursor=cursor, detail=f"job {job_hash} is not known to {self.host}")
        code = info.get("status")
        out = b""
        number = info.get("outputNumber")
        if isinstance(number, int) and number > last_number:
            for chunk in self._outputs(job_hash, start=last_number + 1, end=number + 1):
                n = chunk.get("outputNumber")
                if isinstance(n, int) and n > last_number and chunk.get("output"):
                    last_number = n
                    out += chunk["output"].encode("utf-8")
        if number is None and self.status_table[code].status.finished:
            out = self._console(info)[seen:]
        return Poll(code, out, {"chunk": last_number, "bytes": seen + len(out)})

    def _load_cursor(self, cursor: Any) -> tuple[int, int]:
        if cursor is None:
            return -1, 0
        if (
            isinstance(cursor, dict)
            and set(cursor) == {"chunk", "bytes"}
            and all(isinstance(cursor[k], int) and not isinstance(cursor[k], bool) for k in cursor)
            and cursor["chunk"] >= -1
            and cursor["bytes"] >= 0
        ):
            return cursor["chunk"], cursor["bytes"]
        raise ComputeError(self.id, f"not a gme output cursor: {cursor!r:.80}")

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        info = self._info(job_info)
        if info is None:
            raise ComputeError(self.id, f"job {job_info['hash']} is not known to {self.host}")
        hashes = info.get("resultHashes")
        if not isinstance(hashes, dict) or not hashes.get(RESULTS_ARTIFACT):
            raise ComputeError(
                self.id, f"job {info['hash']} ({info.get('status')}) has no '{RESULTS_ARTIFACT}' artifact"
            )
        try:
            raw = self._read_artifact_file(hashes[RESULTS_ARTIFACT], RESULTS_FILE)
        except (NotFoundError, WebGMEError, KeyError) as exc:
            raise ComputeError(self.id, f"job {info['hash']}: reading {RESULTS_FILE}: {exc}") from None
        try:
            return parse_results(raw)
        except ValueError as exc:
            raise ComputeError(self.id, f"job {info['hash']}: {exc}") from None

    # --- helpers -------------------------------------------------------------------------------------
    def _outputs(self, job_hash: str, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        try:
            chunks = self.executor.get_output(job_hash, start=start, end=end)
        except WebGMEError as exc:
            if exc.status_code == 404:
                return []
            raise ComputeError(self.id, f"job {job_hash}: reading output: {exc}") from None
        return sorted(chunks, key=lambda c: c.get("outputNumber", 0))

    def _read_artifact_file(self, artifact_hash: str, filename: str) -> bytes:
        """One file of a softLink complex artifact, by its metadata hash (no zip round trip)."""
        metadata = self.blob.metadata(artifact_hash)
        entry = (metadata.get("content") or {})[filename]
        target = entry["content"] if entry.get("contentType") == "softLink" else None
        if target is None:  # an "object" entry: read through the artifact view
            with self.blob.open(artifact_hash, subpath=filename) as fh:
                return bytes(fh.read())
        with self.blob.open(target) as fh:
            return bytes(fh.read())

    def describe_failure(self, code: Any, detail: str | None, output_tail: str) -> str:
        """The table's sentence plus what the worker or the program said last."""
        if detail:
            return detail
        mapping = self.status_table[code]
        lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
        worker_lines = [line[len(WORKER_PREFIX) :] for line in lines if line.startswith(WORKER_PREFIX)]
        program_lines = [line for line in lines if not line.startswith(WORKER_PREFIX)]
        base = mapping.reason or f"job {code}"
        if code == ExecutorStatus.FAILED_TO_EXECUTE and program_lines:
            errors = [line for line in program_lines if "Error" in line]
            return f"{base}: {(errors or program_lines)[-1]}"
        if worker_lines:
            return f"{base}: {worker_lines[-1]}"
        return f"{base} ({code})"


def _labels(configured: Any, extra: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for label in [*str(configured or "").split(","), *extra]:
        label = label.strip()
        if label and label not in out:
            out.append(label)
    return out
