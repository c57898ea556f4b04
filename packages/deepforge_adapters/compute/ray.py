"""``ray``: run each job bundle as one Ray job, through the Ray Jobs REST API of the cluster's dashboard.

The flow, readable top to bottom:

1. ``start_job`` derives the Ray ``submission_id`` from the job (``deepforge-<job hash>``): a job Ray already
   knows under it is returned as it is (queued, running or succeeded: a retried submit never starts it
   twice; a failed or stopped one is deleted and run again, as ``local`` compute does).  Otherwise the bundle
   (a directory, or a zip extracted safely) is zipped with a nonce and, for our runner, the job's opened
   credentials, uploaded as the job's ``working_dir`` package (``PUT /api/packages/gcs/...``) and submitted
   (``POST /api/jobs/``) with the runtime environment (``pip`` requirements or a named ``conda`` env, more
   ``runtimeEnv`` fields) and the resources (``entrypoint_num_cpus``/``_num_gpus``/``_memory``, custom
   resources from the config and the job's labels).
2. The entrypoint (:func:`entrypoint`) marks where the job's own output starts in Ray's driver log, runs the
   bundle's ``executor_config.json`` command (our runner, which fetches the inputs and uploads the outputs
   through the job's storage adapter), then writes ``results.json`` as the log's last line.
3. ``poll`` (which the base ``watch`` calls) reads the job's status (``GET /api/jobs/<id>``), then the
   driver log from its byte offset (the log's raw bytes, see :mod:`.ray_jobs`), without Ray's preamble and
   without the results line.  A job still PENDING whose request no node of the cluster can ever meet is
   stopped and reported ``failed`` with what it asked for and what the largest node has (Ray itself would
   leave it pending forever); ``waitForResources`` keeps it waiting (an autoscaling cluster adds nodes).
4. ``cancel_job`` stops the job (Ray sends SIGTERM to the entrypoint and everything it started, SIGKILL 3 s
   later); it ends ``canceled``.  ``purge_job`` deletes a finished job from Ray.

``job_info`` is ``{"hash", "submissionId", "dashboardUrl", "name"}``; only ``hash`` (40 lowercase hex) is
trusted: the submission id is always derived from it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import stat
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import secrets
from ..config import ConfigSchema, Field
from ..errors import BundleError, ComputeError, ConfigError, InvalidHashError, SecretsError
from ..hashing import CHUNK_SIZE, check_sha1_hex, file_digest
from ..jobs.archive import bundle_files, bundle_hash, staged_bundle
from ..jobs.credentials import CREDENTIALS_FD_ENV, is_runner_command, open_job_credentials
from ..jobs.layout import RESULTS_FILE, parse_results, read_executor_config
from .base import ComputeClient, ComputeJob, JobStatus, Poll, StatusMapping, StatusTable
from .ray_jobs import RayJobsAPI

log = logging.getLogger(__name__)

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
SUBMISSION_PREFIX = "deepforge-"
#: Written by the entrypoint before the job's command: what comes before it in the driver log is Ray's.
START_MARK = b"\x1edeepforge-ray: start\n"
#: Written by the entrypoint after the command, then ``results.json`` on one line: the log's last line.
RESULTS_MARK = b"\n\x1edeepforge-ray: results "
CREDENTIALS_FILE = ".deepforge-credentials.json"
NONCE_FILE = ".deepforge-ray-nonce"
#: The most output bytes one poll returns; a watcher that fell behind catches up over several polls.
READ_LIMIT = 8 * 1024 * 1024
#: The longest results line read back (results.json holds dataInfos, not data).
RESULTS_LIMIT = 16 * 1024 * 1024
#: How far into the job's output Ray's own "Running entrypoint" line is looked for.
RAY_LINE_SEARCH = 1024 * 1024
#: How many times one job is run again after failing or being stopped.
MAX_ATTEMPTS = 100
#: Seconds a client reuses what it read about the cluster's nodes (for the feasibility check).
NODES_TTL = 5.0
#: Not Ray's: what ``poll`` reports for a job no node of the cluster can ever run.
INFEASIBLE = "INFEASIBLE"
#: Ray's resource names that have their own entrypoint fields (not allowed among the custom resources).
BUILTIN_RESOURCES = ("CPU", "GPU", "memory")
#: runtime_env fields the backend sets itself.
RESERVED_RUNTIME_ENV = ("working_dir",)

#: Ray job statuses -> DeepForge statuses.
STATUS_TABLE = StatusTable(
    "ray",
    {
        "PENDING": StatusMapping(JobStatus.QUEUED),  # waiting for resources or its runtime env
        "RUNNING": StatusMapping(JobStatus.RUNNING),
        "SUCCEEDED": StatusMapping(JobStatus.SUCCESS),
        "FAILED": StatusMapping(JobStatus.FAILED, "the Ray job failed"),
        "STOPPED": StatusMapping(JobStatus.CANCELED),
        INFEASIBLE: StatusMapping(JobStatus.FAILED, "no node of the Ray cluster has the resources the job asks for"),
    },
)


def submission_id(job_hash: str, attempt: int = 0) -> str:
    """``deepforge-<hash>``, then ``deepforge-<hash>-<n>`` for the n-th run again of a failed or stopped job
    (Ray cannot take a submission id again: a deleted job's supervisor actor may still hold its name)."""
    return f"{SUBMISSION_PREFIX}{job_hash}" + (f"-{attempt}" if attempt else "")


def entrypoint(argv: list[str], with_credentials: bool) -> str:
    """The shell command Ray runs in the job's working directory (the bundle).

    It writes :data:`START_MARK`, runs ``argv`` (our runner reads its credentials from fd 3, a file removed
    before the runner starts), and, if the command left a ``results.json``, writes :data:`RESULTS_MARK` and
    the file on one line (JSON holds no raw line breaks outside whitespace), then exits with the command's
    status.  Ray already sends stderr to the same log as stdout, in the order written.
    """
    run = " ".join(shlex.quote(str(a)) for a in argv)
    if with_credentials:
        run = f"{{ rm -f {CREDENTIALS_FILE}; {CREDENTIALS_FD_ENV}=3 {run}; }} 3< {CREDENTIALS_FILE}"
    return (
        f"printf '\\036deepforge-ray: start\\n'; rm -f {RESULTS_FILE}; {run}; s=$?; "
        f"if [ -f {RESULTS_FILE} ]; then printf '\\n\\036deepforge-ray: results '; "
        f"tr -d '\\r\\n' < {RESULTS_FILE}; printf '\\n'; fi; exit $s"
    )


# ---------------------------------------------------------------------------------------------- the log
def ray_line(sid: str, entrypoint_text: str) -> bytes:
    """The line Ray's job supervisor writes into the driver log when it starts the entrypoint.

    It writes it through a buffered file it closes only after starting the entrypoint (and a watcher), so the
    line may land after :data:`START_MARK` and even after the job's first output; it is one ``write``, so it
    is contiguous, and it is inserted at the log's end at that moment (never inside bytes already written).
    """
    return f"Running entrypoint for job {sid}: {entrypoint_text}\n".encode()


def job_stream(chunks: Iterable[bytes], ray_says: bytes, finished: bool) -> Iterator[bytes]:
    """The job's own output in the driver log: after :data:`START_MARK`, without Ray's line (``ray_says``).

    Yields nothing while the job's command has not started, or while Ray's line has not been written yet and
    the job still runs (what comes first is not certain until then).
    """
    it = iter(chunks)
    pre = b""
    seen = False
    rest = b""
    for chunk in it:
        pre += chunk
        found = pre.find(START_MARK)
        if found >= 0:
            seen = seen or ray_says in pre[:found]
            rest = pre[found + len(START_MARK) :]
            break
        seen = seen or ray_says in pre
        pre = pre[-(len(ray_says) + len(START_MARK)) :]
    else:
        return
    if not seen:
        buf = bytearray(rest)
        while True:
            found = buf.find(ray_says)
            if found >= 0:
                del buf[found : found + len(ray_says)]
                break
            if len(buf) > RAY_LINE_SEARCH:
                break  # not Ray's words any more (another Ray version): the output as it is
            more = next(it, None)
            if more is None:
                if not finished:
                    return
                break
            buf += more
        rest = bytes(buf)
    if rest:
        yield rest
    yield from it


def _held_back(data: bytes) -> int:
    """How many bytes at the end of ``data`` could be the start of :data:`RESULTS_MARK`."""
    for size in range(min(len(RESULTS_MARK) - 1, len(data)), 0, -1):
        if RESULTS_MARK.startswith(data[-size:]):
            return size
    return 0


def read_output(stream: Iterable[bytes], offset: int, finished: bool) -> tuple[bytes, int, bool]:
    """The job's output (:func:`job_stream`) after byte ``offset``: ``(bytes, next offset, more waiting)``.

    At most :data:`READ_LIMIT` bytes; never the results line, and while the job runs never a tail that could
    be the start of it (it is returned once the job has ended, or once more output shows it was not).
    """
    skip = offset
    buf = bytearray()
    for chunk in stream:
        if skip >= len(chunk):
            skip -= len(chunk)
            continue
        buf += chunk[skip:]
        skip = 0
        if len(buf) > READ_LIMIT + len(RESULTS_MARK):
            break
    found = buf.find(RESULTS_MARK)
    if found >= 0:
        data = bytes(buf[:found])
        return data, offset + len(data), False
    more = len(buf) > READ_LIMIT
    data = bytes(buf[:READ_LIMIT])
    if more or not finished:
        data = data[: len(data) - _held_back(data)]
    return data, offset + len(data), more


def read_results(stream: Iterable[bytes]) -> bytes | None:
    """The results line at the end of the job's output (what follows the last :data:`RESULTS_MARK`)."""
    carry = b""
    line: bytearray | None = None
    for chunk in stream:
        if line is not None:
            line += chunk
            if len(line) > RESULTS_LIMIT:
                line = None  # too long to be ours; look for a later mark
                carry = chunk[-(len(RESULTS_MARK) - 1) :]
            continue
        data = carry + chunk
        found = data.rfind(RESULTS_MARK)
        if found >= 0:
            line = bytearray(data[found + len(RESULTS_MARK) :])
            carry = b""
        else:
            carry = data[-(len(RESULTS_MARK) - 1) :]
    if line is None:
        return None
    text = bytes(line)
    later = text.find(RESULTS_MARK)
    while later >= 0:  # the job printed a mark itself: the entrypoint's is the last one
        text = text[later + len(RESULTS_MARK) :]
        later = text.find(RESULTS_MARK)
    body, newline, rest = text.partition(b"\n")
    return body if newline and not rest.strip() else None


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


# ---------------------------------------------------------------------------------------------- config
def _json_object(backend: str, field: str, raw: Any) -> dict[str, Any]:
    if raw in (None, ""):
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(backend, field, f"is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ConfigError(backend, field, f"must be a JSON object, got {type(value).__name__}")
    return value


def _amount(backend: str, where: str, name: Any, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(backend, where, f"resource {name!r} needs a positive number, got {value!r}")
    return float(value)


def resources_from_labels(backend: str, labels: Iterable[str]) -> dict[str, float]:
    """Custom resources a job's labels ask for: ``name`` is one unit of ``name``, ``name=2`` two."""
    found: dict[str, float] = {}
    for label in labels:
        name, sep, amount = str(label).partition("=")
        name = name.strip()
        if not name:
            raise ComputeError(backend, f"job label {label!r} names no resource")
        if name in BUILTIN_RESOURCES:
            raise ComputeError(backend, f"job label {label!r}: set {name} with the config, not a label")
        try:
            value = float(amount) if sep else 1.0
        except ValueError:
            raise ComputeError(backend, f"job label {label!r}: {amount!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise ComputeError(backend, f"job label {label!r}: the amount must be a positive number")
        found[name] = value
    return found


class RayCompute(ComputeClient):
    """Jobs on a Ray cluster through its dashboard's Jobs API; see the module docstring."""

    id = "ray"
    name = "Ray Cluster"
    schema = ConfigSchema(
        "ray",
        (
            Field(
                "dashboardUrl",
                "Dashboard URL",
                "The Ray cluster's dashboard (Jobs API) address, e.g. http://head:8265 or https://ray.example.org",
                default=DEFAULT_DASHBOARD,
                env=("RAY_API_SERVER_ADDRESS",),
                binds_secrets=True,
            ),
            Field(
                "token",
                "Token",
                "Bearer token for every request (a proxy in front of the dashboard)",
                is_auth=True,
            ),
            Field(
                "headers",
                "Extra headers",
                'More HTTP headers for every request, a JSON object: {"X-Api-Key": "..."}',
                is_auth=True,
            ),
            Field("caBundle", "CA bundle", "CA certificates (PEM file) to verify the dashboard's TLS certificate with"),
            Field("numCpus", "CPUs", "entrypoint_num_cpus: CPUs reserved for the job", "float", default=1, minimum=0),
            Field("numGpus", "GPUs", "entrypoint_num_gpus: GPUs reserved for the job", "float", default=0, minimum=0),
            Field(
                "memoryMb",
                "Memory (MiB)",
                "entrypoint_memory: memory reserved",
                "integer",
                default=0,
                minimum=0,
            ),
            Field(
                "resources",
                "Custom resources",
                'entrypoint_resources, a JSON object {"name": amount}; a job label "name" or "name=2" adds one',
            ),
            Field("pip", "pip requirements", "Packages to install for the job (runtime_env pip), one per line"),
            Field("conda", "Conda environment", "The name of a conda environment on the nodes (runtime_env conda)"),
            Field(
                "runtimeEnv",
                "Runtime environment",
                'More runtime_env fields, a JSON object, e.g. {"env_vars": {"OMP_NUM_THREADS": "1"}}',
            ),
            Field(
                "waitForResources",
                "Wait for resources",
                "Keep a job no node has the resources for PENDING (an autoscaling cluster adds nodes), not failed",
                "boolean",
                default=False,
            ),
        ),
    )
    status_table = STATUS_TABLE
    poll_interval = 0.5
    max_poll_interval = 5.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        url = str(cfg["dashboardUrl"] or DEFAULT_DASHBOARD).strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(self.id, "dashboardUrl", f"must be an http:// or https:// URL, got {url!r}")
        headers = {str(k): v for k, v in _json_object(self.id, "headers", cfg["headers"]).items()}
        for name, value in headers.items():
            if not isinstance(value, str) or not name.strip() or any(c in name for c in ":\r\n ") or "\n" in value:
                raise ConfigError(self.id, "headers", f"header {name!r} needs a name and a one-line string value")
        if cfg["token"]:
            headers["Authorization"] = f"Bearer {cfg['token']}"
        for value in headers.values():
            secrets.register_secret(value)
        if cfg["token"]:
            secrets.register_secret(str(cfg["token"]))
        self.resources = {
            str(k): _amount(self.id, "resources", k, v)
            for k, v in _json_object(self.id, "resources", cfg["resources"]).items()
        }
        for name in self.resources:
            if name in BUILTIN_RESOURCES:
                raise ConfigError(self.id, "resources", f"set {name} with its own field (numCpus, numGpus, memoryMb)")
        self.runtime_env = self._runtime_env()
        self.url = url
        self.api = RayJobsAPI(self.id, url, headers, verify=cfg["caBundle"] or True)
        self._nodes_cache: tuple[float, list[dict[str, Any]]] | None = None

    def _runtime_env(self) -> dict[str, Any]:
        """The runtime_env fields from the config (without ``working_dir``, which each job gets)."""
        env = _json_object(self.id, "runtimeEnv", self.config["runtimeEnv"])
        for key in RESERVED_RUNTIME_ENV:
            if key in env:
                raise ConfigError(self.id, "runtimeEnv", f"{key!r} is set by the backend (the job's bundle)")
        pip = [line.strip() for line in str(self.config["pip"] or "").splitlines() if line.strip()]
        conda = str(self.config["conda"] or "").strip()
        if pip and conda:
            raise ConfigError(self.id, "pip", "pip and conda cannot both be set (Ray uses one or the other)")
        for key, value in (("pip", pip), ("conda", conda)):
            if value:
                if key in env:
                    raise ConfigError(self.id, "runtimeEnv", f"{key!r} is also set by the {key} field")
                env[key] = value
        if "pip" in env and "conda" in env:
            raise ConfigError(self.id, "runtimeEnv", "pip and conda cannot both be set (Ray uses one or the other)")
        env_vars = env.get("env_vars", {})
        if not isinstance(env_vars, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
        ):
            raise ConfigError(self.id, "runtimeEnv", "env_vars must be a JSON object of strings")
        env["env_vars"] = {"PYTHONUNBUFFERED": "1", **env_vars}
        return env

    # ------------------------------------------------------------------------------------ job ids
    def _job_hash(self, value: Any, what: str = "job_info hash") -> str:
        try:
            return check_sha1_hex(value, what)
        except InvalidHashError as exc:
            raise ComputeError(self.id, f"{exc}: not a job this backend started") from None

    def _sid(self, job_info: Mapping[str, Any]) -> str:
        self.require(job_info, "hash")
        attempt = job_info.get("attempt", 0)
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not 0 <= attempt < MAX_ATTEMPTS:
            raise ComputeError(self.id, f"job_info attempt {attempt!r:.40} is not a run number this backend made")
        return submission_id(self._job_hash(job_info["hash"]), attempt)

    def _info(self, job_hash: str, name: str, attempt: int) -> dict[str, Any]:
        return {
            "hash": job_hash,
            "attempt": attempt,
            "submissionId": submission_id(job_hash, attempt),
            "dashboardUrl": self.url,
            "name": name,
        }

    # ------------------------------------------------------------------------------------ submit
    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        if job.bundle is None:
            raise ComputeError(
                self.id,
                f"job {job.hash or job.name!r} has no bundle path; ray compute uploads bundles from this disk",
            )
        bundle = Path(job.bundle)
        if not bundle.exists():
            raise ComputeError(self.id, f"cannot start bundle: {bundle} does not exist")
        try:
            job_hash = self._job_hash(job.hash or bundle_hash(bundle), "job hash")
        except BundleError as exc:
            raise ComputeError(self.id, f"cannot start bundle: {exc}") from None
        custom = {**self.resources, **resources_from_labels(self.id, job.labels)}
        for attempt in range(MAX_ATTEMPTS):
            sid = submission_id(job_hash, attempt)
            existing = self.api.job(sid)
            if existing is None:
                break
            if existing.get("status") in ("PENDING", "RUNNING", "SUCCEEDED"):
                log.info("%s: job %s is already %s on %s", self.id, sid, existing.get("status"), self.url)
                return self._info(job_hash, job.name, attempt)  # the same job again: never started twice
        else:  # failed or stopped every time
            raise ComputeError(self.id, f"job {job_hash} was run {MAX_ATTEMPTS} times already; not again")
        info = self._info(job_hash, job.name, attempt)
        request = self._request(custom)
        unmet = None if self.config["waitForResources"] else self.unmet(request)
        if unmet is not None:
            raise ComputeError(self.id, f"cannot start job {job.name!r}: {unmet}")
        with staged_bundle(self.id, bundle) as root, tempfile.TemporaryDirectory(prefix="deepforge-ray-") as tmp:
            try:
                config = read_executor_config(root)
            except BundleError as exc:
                raise ComputeError(self.id, f"cannot start bundle: {exc}") from None
            credentials = None
            if is_runner_command(config.cmd, config.args):
                try:
                    credentials = open_job_credentials(root, None)
                except SecretsError as exc:
                    raise ComputeError(self.id, f"cannot start bundle: {exc}") from None
            package = _zip_package(root, Path(tmp) / "package.zip", credentials)
            name = f"_ray_pkg_{file_digest(package, 'sha1')}.zip"
            if not self.api.package_exists(name):
                self.api.upload_package(name, package)
            body = self._submission(sid, job, job_hash, config.argv, credentials is not None, name, custom, request)
            try:
                self.api.submit(body)
            except ComputeError:
                if self.api.job(sid) is not None:  # submitted after all (a lost answer, or a racing submit)
                    return info
                raise
        log.info("%s: submitted %s (%s) to %s", self.id, sid, job.name, self.url)
        return info

    def _submission(
        self,
        sid: str,
        job: ComputeJob,
        job_hash: str,
        argv: list[str],
        with_credentials: bool,
        package: str,
        custom: Mapping[str, float],
        request: Mapping[str, float],
    ) -> dict[str, Any]:
        cpus, gpus = float(self.config["numCpus"]), float(self.config["numGpus"])
        memory = int(self.config["memoryMb"]) * 1024 * 1024
        body: dict[str, Any] = {
            "entrypoint": entrypoint(argv, with_credentials),
            "submission_id": sid,
            "runtime_env": {**self.runtime_env, "working_dir": f"gcs://{package}"},
            "metadata": {
                "deepforge.hash": job_hash,
                "deepforge.name": job.name[:500],
                "deepforge.resources": json.dumps(request, sort_keys=True),
                **({"deepforge.job": json.dumps(dict(job.meta), sort_keys=True, default=str)} if job.meta else {}),
            },
            "entrypoint_num_cpus": cpus,
            "entrypoint_num_gpus": gpus,
        }
        if memory:
            body["entrypoint_memory"] = memory
        if custom:
            body["entrypoint_resources"] = dict(custom)
        return body

    # ------------------------------------------------------------------------------------ resources
    def _nodes(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._nodes_cache is None or now - self._nodes_cache[0] > NODES_TTL:
            self._nodes_cache = (now, self.api.nodes())
        return self._nodes_cache[1]

    def _request(self, custom: Mapping[str, float]) -> dict[str, float]:
        """What a job asks of a node: Ray's resource names and amounts."""
        cpus, gpus = float(self.config["numCpus"]), float(self.config["numGpus"])
        memory = float(int(self.config["memoryMb"]) * 1024 * 1024)
        return {
            **({"CPU": cpus} if cpus else {}),
            **({"GPU": gpus} if gpus else {}),
            **({"memory": memory} if memory else {}),
            **custom,
        }

    def unmet_request(self, job: Mapping[str, Any]) -> str | None:
        """Why no node of the cluster can ever run ``job`` (the request recorded with it), or None."""
        try:
            request = json.loads((job.get("metadata") or {}).get("deepforge.resources") or "{}")
        except (ValueError, AttributeError):
            return None
        return self.unmet(request) if isinstance(request, dict) else None

    def unmet(self, request: Mapping[str, Any]) -> str | None:
        """Why no node of the cluster can ever meet ``request``, or None if one can."""
        if not request:
            return None
        nodes = self._nodes()
        totals = [n.get("resources_total") or {} for n in nodes]
        if any(all(float(t.get(k, 0)) >= float(v) for k, v in request.items()) for t in totals):
            return None
        wanted = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(request.items()))
        largest = ", ".join(
            f"{k}={_fmt(max((float(t.get(k, 0)) for t in totals), default=0))}" for k in sorted(request)
        )
        return (
            f"no node of the Ray cluster at {self.url} can run it: it asks for {wanted}; the most any of its "
            f"{len(nodes)} node(s) has is {largest} (Ray would keep it PENDING forever; set waitForResources for "
            "an autoscaling cluster)"
        )

    # ------------------------------------------------------------------------------------ observe
    def _code(self, sid: str) -> tuple[Any, dict[str, Any] | None, str | None]:
        """``(status code, Ray's job details, detail)``; a pending job no node can run is stopped here."""
        job = self.api.job(sid)
        if job is None:
            return JobStatus.NOT_FOUND, None, f"ray compute: the Ray cluster at {self.url} has no job {sid}"
        code = job.get("status")
        never_ran = code in ("STOPPED", "FAILED") and not job.get("driver_node_id")
        if not self.config["waitForResources"] and (code == "PENDING" or never_ran):
            unmet = self.unmet_request(job)
            if unmet is not None:
                if code == "PENDING":  # Ray queues the stop until the job could start: it never will
                    log.warning("%s: stopping %s: %s", self.id, sid, unmet)
                    self.api.stop(sid)
                return INFEASIBLE, job, unmet
        detail = None
        if code == "FAILED":
            exit_code = job.get("driver_exit_code")
            message = str(job.get("message") or "").split(", last available logs", 1)[0].strip()
            detail = f"exit code {exit_code}" if isinstance(exit_code, int) else (message.splitlines() or [""])[0]
        return code, job, detail or None

    def get_status(self, job_info: Mapping[str, Any]) -> JobStatus:
        return self.status_table[self._code(self._sid(job_info))[0]].status

    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        """The job's status, then its output after byte ``cursor`` (see :func:`read_output`)."""
        sid = self._sid(job_info)
        offset = self.byte_offset(cursor)
        code, job, detail = self._code(sid)
        if job is None:
            return Poll(code, cursor=offset, detail=detail)
        finished = self.status_table[code].status.finished
        data, offset, more = b"", offset, False
        node = job.get("driver_node_id")
        if node:
            try:
                with self.api.driver_log(str(node), sid) as chunks:
                    stream = job_stream(chunks, ray_line(sid, str(job.get("entrypoint"))), finished)
                    data, offset, more = read_output(stream, offset, finished)
            except ComputeError as exc:  # the log file is not there yet, or the node went away
                level = logging.WARNING if finished else logging.DEBUG
                log.log(level, "%s: no output of %s this time: %s", self.id, sid, exc)
        return Poll(code, data, offset, more=more, detail=detail)

    def describe_failure(self, code: Any, detail: str | None, output_tail: str) -> str:
        """``Ray job failed (exit code 3): <the output's last line>``; an unmet request says what it asked for."""
        if code == INFEASIBLE and detail:
            return detail
        lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
        head = f"Ray job failed ({detail})" if detail else (self.status_table[code].reason or f"Ray job {code}")
        return ": ".join([head, *lines[-1:]])

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        sid = self._sid(job_info)
        job = self.api.job(sid)
        if job is None:
            raise ComputeError(self.id, f"no job {sid} on the Ray cluster at {self.url}")
        line = None
        if job.get("driver_node_id"):
            with self.api.driver_log(str(job["driver_node_id"]), sid) as chunks:
                line = read_results(job_stream(chunks, ray_line(sid, str(job.get("entrypoint"))), True))
        if line is None:
            raise ComputeError(self.id, f"job {sid} wrote no {RESULTS_FILE} (status: {job.get('status')})")
        try:
            return parse_results(line)
        except ValueError as exc:
            raise ComputeError(self.id, f"job {sid}: {exc}") from None

    # ------------------------------------------------------------------------------------ cancel, purge
    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        """Stop the job (Ray: SIGTERM to the entrypoint and its processes, SIGKILL after 3 s); returns at once."""
        sid = self._sid(job_info)
        job = self.api.job(sid)
        if job is None:
            raise ComputeError(self.id, f"cannot cancel: no job {sid} on the Ray cluster at {self.url}")
        if job.get("status") in ("PENDING", "RUNNING"):
            self.api.stop(sid)

    def purge_job(self, job_info: Mapping[str, Any]) -> None:
        """Delete a finished job (its status and log) from Ray."""
        sid = self._sid(job_info)
        job = self.api.job(sid)
        if job is None:
            return
        if job.get("status") in ("PENDING", "RUNNING"):
            raise ComputeError(self.id, f"job {sid} is {job['status']}; cancel it before purging")
        self.api.delete(sid)


def _fmt(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


# ---------------------------------------------------------------------------------------------- bundles
def _zip_package(root: Path, dest: Path, credentials: Mapping[str, Any] | None) -> Path:
    """The job's working directory as a zip: the bundle's files, a nonce (every submission gets a fresh
    directory on the node) and, for our runner, the job's credentials (removed before the runner starts)."""
    try:
        files = bundle_files(root)
    except BundleError as exc:
        raise ComputeError("ray", f"cannot start bundle: {exc}") from None
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel, path in files:
            info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
            mode = os.stat(path).st_mode
            info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, zf.open(info, "w") as out:
                while chunk := src.read(CHUNK_SIZE):
                    out.write(chunk)
        zf.writestr(NONCE_FILE, uuid.uuid4().hex)
        if credentials is not None:
            info = zipfile.ZipInfo(CREDENTIALS_FILE, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o600) << 16
            zf.writestr(info, json.dumps(credentials))
    return dest
