"""``sciserver-compute``: run a job bundle as a SciServer Compute batch ("JOBM" docker) job.

The flow, readable top to bottom:

1. ``start_job`` copies the bundle's files to ``Temporary/<user>/scratch/deepforge-jobs/<hash>-<nonce>/``
   through the ``sciserver-files`` storage backend (one code path for moving bytes), finds the compute domain
   and image by name, and submits a docker job whose command ``cd``s into that folder as the container sees
   it (``/home/idies/workspace/...``), runs the bundle's ``executor_config.json`` command (our job runner)
   with stderr merged into stdout, and copies ``results.json`` into the job's working directory.
2. ``poll`` (which the base ``watch`` calls, with backoff while nothing changes) looks at that one job
   (``GET jobs/{id}``, not the user's whole job list), maps SciServer's bit-flag statuses through
   :data:`STATUS_TABLE`, reads the growth of ``stdout.txt`` from the job's ``resultsFolderURI`` while it
   runs, checks ``results.json`` at the end and removes the scratch folder.
3. Every failure (unknown domain or image, a 500 with SciServer's message, a job in ERROR) carries the
   server's words.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import requests

from ..config import ConfigSchema, Field
from ..errors import BundleError, ComputeError, DeepForgeError, NotFoundError, StorageError
from ..jobs.archive import bundle_files, staged_bundle
from ..jobs.layout import RESULTS_FILE, parse_results, read_executor_config
from ..sciserver.session import (
    CREDENTIAL_FIELDS,
    DEFAULT_RACM_URL,
    SciServerAuthError,
    SciServerSession,
    server_message,
)
from ..storage import StorageClient
from ..storage import get_client as get_storage_client
from .base import ComputeClient, ComputeJob, JobStatus, Poll, StatusMapping, StatusTable

log = logging.getLogger(__name__)

WORKSPACE = "/home/idies/workspace/"
SCRATCH_POOL = "Temporary"
SCRATCH_DIR = "deepforge-jobs"
#: The only scratch folders ``purge_job`` deletes: what ``start_job`` names (one segment under SCRATCH_DIR).
_SCRATCH_RE = re.compile(rf"{re.escape(SCRATCH_DIR)}/[A-Za-z0-9_.-]{{1,40}}-[0-9a-f]{{8}}")
STARTED = 8
#: Not SciServer's: what ``poll`` reports for a job SciServer calls a SUCCESS that left no results.json.
NO_RESULTS = "no-results"

#: The batch domains SciServer offers everyone (DeepForge's list); the dialog offers them, any name is accepted.
COMPUTE_DOMAINS = ("Small Jobs Domain", "Large Jobs Domain")
#: SciServer JOBM status bit flags (sciserver-api.md 4.7) -> DeepForge statuses.
STATUS_TABLE = StatusTable(
    "sciserver-compute",
    {
        1: StatusMapping(JobStatus.QUEUED),  # PENDING: stored in JOBM, not yet taken by a job manager
        2: StatusMapping(JobStatus.QUEUED),  # QUEUED in a job manager
        4: StatusMapping(JobStatus.QUEUED),  # ACCEPTED: the container is being prepared
        8: StatusMapping(JobStatus.RUNNING),  # STARTED
        16: StatusMapping(JobStatus.RUNNING),  # FINISHED: run over, wrap-up not yet confirmed
        32: StatusMapping(JobStatus.SUCCESS),
        64: StatusMapping(JobStatus.FAILED, "SciServer reported the job as ERROR"),
        128: StatusMapping(JobStatus.CANCELED, "the job was canceled"),
        NO_RESULTS: StatusMapping(JobStatus.FAILED, "the job finished but wrote no results.json"),
    },
)


class SciServerCompute(ComputeClient):
    id = "sciserver-compute"
    name = "SciServer Compute"
    schema = ConfigSchema(
        "sciserver-compute",
        (
            *CREDENTIAL_FIELDS,
            Field(
                "computeDomain",
                "Compute Domain",
                "Batch compute domain, by name: a small job shares its machine with up to 4 others (about 32 GB of "
                "RAM); a large one runs alone (about 240 GB) but may wait longer to start",
                default="Small Jobs Domain",
                suggestions=COMPUTE_DOMAINS,
            ),
            Field(
                "image",
                "Image",
                "Docker image, by name; it must provide python3 with deepforge-adapters "
                "(default: the domain's first image)",
            ),
            Field(
                "racmUrl",
                "RACM URL",
                "SciServer RACM root (JOBM jobs API)",
                default=DEFAULT_RACM_URL,
                binds_secrets=True,
            ),
        ),
    )
    status_table = STATUS_TABLE
    poll_interval = 1.0
    max_poll_interval = 10.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        try:
            self.session = SciServerSession.from_config(self.id, self.config)
        except SciServerAuthError as exc:
            raise ComputeError(self.id, str(exc)) from None
        self.jobm_url = self.config["racmUrl"].rstrip("/") + "/jobm/rest"
        self._files: dict[tuple[str, str], StorageClient] = {}

    # ------------------------------------------------------------------------------------ plumbing
    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> Any:
        """A JOBM call; any status but 200 is a :class:`ComputeError` with SciServer's message."""
        try:
            response = self.session.request(method, self.jobm_url + path, what=what, **kwargs)
        except (SciServerAuthError, requests.RequestException) as exc:
            raise ComputeError(self.id, str(exc)) from None
        if response.status_code != 200:
            self._fail(what, response)
        try:
            return response.json()
        except ValueError:
            raise ComputeError(self.id, f"{what}: SciServer answered 200 with a body that is not JSON") from None

    def _fail(self, what: str, response: requests.Response) -> NoReturn:
        hint = " (is the token valid?)" if response.status_code in (400, 403) else ""
        raise ComputeError(self.id, f"{what} failed: {server_message(response)}{hint}")

    def username(self) -> str:
        try:
            return self.session.whoami()
        except SciServerAuthError as exc:
            raise ComputeError(self.id, str(exc)) from None

    def files(self, pool: str, volume: str) -> StorageClient:
        """A ``sciserver-files`` client on ``pool``/``volume`` with this backend's credentials and URLs."""
        if (pool, volume) in self._files:
            return self._files[pool, volume]
        config = {
            key: self.config[key]
            for key in ("username", "password", "token", "loginUrl", "fileServiceUrl")
            if self.config[key]
        }
        config.update(volumePool=pool, volume=volume, username=self.username())
        self._files[pool, volume] = get_storage_client("sciserver-files", config)
        return self._files[pool, volume]

    def scratch(self) -> StorageClient:
        return self.files(SCRATCH_POOL, f"{self.username()}/scratch")

    # ------------------------------------------------------------------------------------ submit
    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        if job.bundle is None:
            raise ComputeError(
                self.id,
                f"job {job.hash or job.name!r} has no bundle path; sciserver-compute uploads bundles from this "
                "machine's disk",
            )
        with staged_bundle(self.id, Path(job.bundle)) as root:
            argv = executor_argv(self.id, root)
            domain = self._domain()
            image = self._image(domain)
            username = self.username()
            label = re.sub(r"[^A-Za-z0-9_.-]", "_", job.hash or "job")[:40]
            scratch_dir = f"{SCRATCH_DIR}/{label}-{uuid.uuid4().hex[:8]}"
            scratch = self.scratch()
            try:
                count = self._upload_bundle(root, scratch, scratch_dir)
                log.info(
                    "%s: uploaded %d bundle files to %s/%s/scratch/%s",
                    self.id,
                    count,
                    SCRATCH_POOL,
                    username,
                    scratch_dir,
                )
                body = {
                    "command": self._command(argv, f"{WORKSPACE}{SCRATCH_POOL}/{username}/scratch/{scratch_dir}"),
                    "submitterDID": job.name,
                    "dockerComputeEndpoint": domain["apiEndpoint"],
                    "dockerImageName": image,
                    "volumeContainers": [],
                    # Mount every user volume the domain offers (inputs may live in any), writable where allowed.
                    "userVolumes": [
                        {"userVolumeId": v["id"], "needsWriteAccess": "write" in (v.get("allowedActions") or [])}
                        for v in domain.get("userVolumes") or []
                    ],
                    "resultsFolderURI": "",
                }
                submitted = self._request("POST", "/jobs/docker", f"submit job {job.name!r}", json=body)
            except BaseException:
                self._remove_scratch(scratch, scratch_dir)
                raise
        log.info("%s: submitted SciServer job %s (%s) to %r", self.id, submitted.get("id"), job.name, domain["name"])
        return {
            "hash": job.hash or scratch_dir,
            "id": submitted["id"],
            "scratchDir": scratch_dir,
            "computeDomain": domain["name"],
        }

    def _domain(self) -> dict[str, Any]:
        wanted = self.config["computeDomain"]
        domains = self._request("GET", "/computedomains", "list compute domains", params={"batch": "true"})
        for domain in domains:
            if domain.get("name") == wanted:
                return dict(domain)
        names = ", ".join(repr(d.get("name")) for d in domains) or "none"
        raise ComputeError(self.id, f"unknown compute domain {wanted!r}; domains available to you: {names}")

    def _image(self, domain: Mapping[str, Any]) -> str:
        images = [str(i.get("name")) for i in domain.get("images") or []]
        wanted = self.config["image"]
        if not images:
            raise ComputeError(self.id, f"compute domain {domain['name']!r} offers you no images")
        if not wanted:
            return images[0]
        if wanted not in images:
            raise ComputeError(
                self.id, f"image {wanted!r} is not available in {domain['name']!r}; available: {', '.join(images)}"
            )
        return str(wanted)

    @staticmethod
    def _command(argv: list[str], job_dir: str) -> str:
        """The shell command: run the bundle's command in its folder; leave results.json in the working dir.

        SciServer starts the command in the job's working directory (``resultsFolderURI``), where it
        collects ``stdout.txt``; the bundle lives in the scratch folder.  stderr is merged into stdout so
        the streamed output is the whole story, in order.
        """
        run = " ".join(shlex.quote(a) for a in argv)
        return (
            f'RESULTS_DIR="$PWD"; cd {shlex.quote(job_dir)} || exit 97; {run} 2>&1; status=$?; '
            f'if [ -f {RESULTS_FILE} ]; then cp {RESULTS_FILE} "$RESULTS_DIR/{RESULTS_FILE}"; fi; exit $status'
        )

    @staticmethod
    def _upload_bundle(root: Path, scratch: StorageClient, scratch_dir: str) -> int:
        files = bundle_files(root)
        for rel, path in files:
            with open(path, "rb") as src:
                scratch.put_file_stream(f"{scratch_dir}/{rel}", src, size=os.path.getsize(path))
        return len(files)

    def _remove_scratch(self, scratch: StorageClient, scratch_dir: str) -> None:
        try:
            scratch.delete_dir(scratch_dir)
        except NotFoundError:
            return  # removed already (a finished job is polled more than once)
        except DeepForgeError as exc:
            log.warning("%s: could not remove scratch folder %s: %s", self.id, scratch_dir, exc)

    # ------------------------------------------------------------------------------------ observe
    def _job_id(self, job_info: Mapping[str, Any]) -> int:
        """The JOBM job id of ``job_info``, refused unless a positive integer (it becomes a URL segment)."""
        self.require(job_info, "id")
        value = job_info["id"]
        if isinstance(value, str) and value.isdecimal():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ComputeError(self.id, f"job_info id {value!r:.40} is not a SciServer job id")
        return value

    def get_job(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        job_id = self._job_id(job_info)
        return dict(self._request("GET", f"/jobs/{job_id}", f"get job {job_id}"))

    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus:
        return self.status_table[self.get_job(job_info).get("status")].status

    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        job_id = self._job_id(job_info)
        self._request("POST", f"/jobs/{job_id}/cancel", f"cancel job {job_id}")

    def purge_job(self, job_info: Mapping[str, Any]) -> None:
        """Remove the scratch folder (the job's working directory with stdout and results stays)."""
        scratch_dir = job_info.get("scratchDir")
        if not scratch_dir:
            return
        if not isinstance(scratch_dir, str) or not _SCRATCH_RE.fullmatch(scratch_dir):
            # job_info comes back from the model: it must not name any other folder of the user's scratch
            raise ComputeError(
                self.id, f"job_info scratchDir {scratch_dir!r:.120} is not a folder this backend created; not purging"
            )
        self._remove_scratch(self.scratch(), scratch_dir)

    def _results_file(self, job: Mapping[str, Any], name: str) -> tuple[StorageClient, str] | None:
        """(storage client, filename) of ``name`` in the job's working directory, once SciServer set it."""
        folder = job.get("resultsFolderURI")
        if not folder:
            return None
        if not folder.startswith(WORKSPACE):
            raise ComputeError(self.id, f"job {job.get('id')}: unexpected resultsFolderURI {folder!r}")
        pool, owner, volume, *rest = [p for p in folder[len(WORKSPACE) :].split("/") if p]
        return self.files(pool, f"{owner}/{volume}"), "/".join([*rest, name])

    def _read_text(self, job: Mapping[str, Any], name: str, skip: int = 0) -> tuple[bytes, int] | None:
        """Bytes of ``name`` after the first ``skip`` (streamed past, not held) and the file's size."""
        located = self._results_file(job, name)
        if located is None:
            return None
        files, filename = located
        try:
            info = files.stat(filename)
        except NotFoundError:
            return None
        size = int(info.data["size"])
        if size <= skip:
            return b"", size
        chunks = []
        with files.get_file_stream(info) as src:
            position = 0
            while chunk := src.read(1024 * 1024):
                if position + len(chunk) > skip:
                    chunks.append(chunk[max(0, skip - position) :])
                position += len(chunk)
        return b"".join(chunks), skip + sum(len(c) for c in chunks)

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        return self._results(self.get_job(job_info))

    def _results(self, job: Mapping[str, Any]) -> dict[str, Any]:
        try:
            found = self._read_text(job, RESULTS_FILE)
        except StorageError as exc:
            raise ComputeError(self.id, f"job {job.get('id')}: cannot read {RESULTS_FILE}: {exc}") from None
        if found is None:
            raise ComputeError(self.id, f"job {job.get('id')} wrote no results.json in {job.get('resultsFolderURI')}")
        try:
            return parse_results(found[0])
        except ValueError as exc:
            raise ComputeError(self.id, f"job {job.get('id')}: {exc}") from None

    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        """``GET jobs/{id}``, then ``stdout.txt`` from the byte offset ``cursor`` once the job has started.

        A finished job is checked for ``results.json`` (a success without it is :data:`NO_RESULTS`) and its
        scratch folder is removed (idempotent).
        """
        offset = self.byte_offset(cursor)
        job = self.get_job(job_info)
        code = job.get("status")
        finished = self.status_table[code].status.finished
        data = b""
        if isinstance(code, int) and code >= STARTED:
            try:
                found = self._read_text(job, "stdout.txt", skip=offset)
            except (StorageError, ComputeError) as exc:
                if finished:
                    raise
                log.warning("%s: job %s: cannot read stdout yet (will retry): %s", self.id, job.get("id"), exc)
                found = None
            data = found[0] if found else b""
        if not finished:
            return Poll(code, data, offset + len(data))
        messages = [m.get("content", "") for m in job.get("messages") or [] if m.get("label") in ("ERROR", "TIMEOUT")]
        detail = "; ".join(m for m in messages if m) or None
        if self.status_table[code].status == JobStatus.SUCCESS:
            try:
                self._results(job)
            except ComputeError as exc:
                code, detail = NO_RESULTS, str(exc)
        self.purge_job(job_info)
        return Poll(code, data, offset + len(data), detail=detail)

    def describe_failure(self, code: Any, detail: str | None, output_tail: str) -> str:
        """SciServer's ERROR/TIMEOUT messages, then the last line of the job's output."""
        if code == NO_RESULTS and detail:
            return detail
        lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
        parts = ([detail] if detail else []) + lines[-1:]
        if not parts:
            return self.status_table[code].reason or f"SciServer job ended as {code!r}"
        return "SciServer job failed: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------------- bundles
def executor_argv(backend: str, root: Path) -> list[str]:
    """``cmd`` + ``args`` of the bundle's ``executor_config.json`` (the runner, for bundles we build)."""
    try:
        config = read_executor_config(root)
    except BundleError as exc:
        raise ComputeError(backend, f"cannot start bundle: {exc}") from None
    return config.argv
