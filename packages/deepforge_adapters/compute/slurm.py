"""``slurm``: run each job bundle as one Slurm batch job, through the Slurm CLI (here or over SSH) or slurmrestd.

The flow, readable top to bottom:

1. ``start_job`` packs the bundle (a directory or zip) into the batch script itself, as the payload of
   :mod:`.slurm_job`, which the script ``exec``\\ s on the compute node: no shared filesystem is needed.  The
   script's ``#SBATCH`` lines come from the config and the job's labels (:func:`job_options`); extra lines
   only where the operator policy permits them.  The submitting side (which holds the deployment key) opens
   the job's sealed credentials and puts them in the payload for the runner.
2. The job streams its output, in numbered segments, to an **output channel**: ``local`` storage on
   ``sharedDir`` when the config names a directory this host shares with the nodes, else the job's own
   storage (from its ``job.json``).  ``job_info`` holds the Slurm job id, the cluster and the channel, so a
   watcher in another process resumes from it.
3. ``poll`` asks Slurm for the state (``scontrol show job``, ``sacct`` once the controller forgot the job;
   or ``GET /job/{id}``), maps it through :data:`STATUS_TABLE` with a readable reason, then reads the new
   output segments.
4. ``cancel_job``: a pending job is ``scancel``\\ ed; a running one gets ``scancel --batch --signal=INT``,
   which the job side forwards to the runner as SIGINT (then SIGKILL after the grace).  Slurm records that as
   FAILED (exit 130): the job's ``end.json`` and the cancel marker make it ``canceled``.

Errors name the cluster, the Slurm job id and Slurm's own message.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import shlex
import tarfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import ConfigSchema, Field
from ..errors import BundleError, ComputeError, DeepForgeError, NotFoundError, SecretsError
from ..jobs import slurm_job
from ..jobs.archive import bundle_files, bundle_hash, staged_bundle
from ..jobs.bundle import parse_job
from ..jobs.credentials import is_runner_command, open_job_credentials
from ..jobs.layout import JOB_FILE, RESULTS_FILE, parse_results, read_executor_config
from ..storage import StorageClient
from .base import ComputeClient, ComputeJob, JobStatus, Poll, StatusMapping, StatusTable
from .slurm_transport import CliTransport, JobOptions, RestTransport, SlurmError, SlurmJob, Transport, ssh_command

log = logging.getLogger(__name__)

#: Not Slurm's: a job we canceled (Slurm says FAILED for an exit after SIGINT, or COMPLETED).
CANCELED_BY_US = "DEEPFORGE_CANCELED"
#: Slurm's default ``max_script_size`` is 4 MB; the bundle (operation code, not data) rides in the script.
MAX_SCRIPT_BYTES = 4_000_000
#: Output segments one poll reads at most (a watcher that fell behind catches up over several polls).
SEGMENTS_PER_POLL = 8
CHANNEL_DIR = "deepforge-slurm"
#: What ``start_job`` makes: the job's storage dir (any relative path; ``..`` is refused apart), then our part.
_PREFIX_RE = re.compile(rf"(?:[^/\x00]+/)*{CHANNEL_DIR}/[0-9a-f]{{32}}")
CANCEL_FILE = "cancel"

_S = StatusMapping
#: Every Slurm job state (``squeue --help``, "JOB STATE CODES") -> DeepForge status and a readable reason.
STATUS_TABLE = StatusTable(
    "slurm",
    {
        "PENDING": _S(JobStatus.QUEUED),
        "REQUEUED": _S(JobStatus.QUEUED),
        "REQUEUE_HOLD": _S(JobStatus.QUEUED),
        "REQUEUE_FED": _S(JobStatus.QUEUED),
        "RESV_DEL_HOLD": _S(JobStatus.QUEUED),
        "CONFIGURING": _S(JobStatus.PENDING),  # resources allocated, nodes being readied
        "RUNNING": _S(JobStatus.RUNNING),
        "COMPLETING": _S(JobStatus.RUNNING),
        "SUSPENDED": _S(JobStatus.RUNNING),
        "STOPPED": _S(JobStatus.RUNNING),
        "RESIZING": _S(JobStatus.RUNNING),
        "SIGNALING": _S(JobStatus.RUNNING),
        "STAGE_OUT": _S(JobStatus.RUNNING),
        "COMPLETED": _S(JobStatus.SUCCESS),
        "CANCELLED": _S(JobStatus.CANCELED),
        CANCELED_BY_US: _S(JobStatus.CANCELED),
        "FAILED": _S(JobStatus.FAILED, "FAILED: the job exited with a non-zero code"),
        "TIMEOUT": _S(JobStatus.FAILED, "TIMEOUT: the job hit its time limit"),
        "NODE_FAIL": _S(JobStatus.FAILED, "NODE_FAIL: a node of the job failed"),
        "PREEMPTED": _S(JobStatus.FAILED, "PREEMPTED: the job was preempted by a higher-priority job"),
        "OUT_OF_MEMORY": _S(JobStatus.FAILED, "OUT_OF_MEMORY: the job used more memory than it asked for"),
        "BOOT_FAIL": _S(JobStatus.FAILED, "BOOT_FAIL: a node of the job failed to boot"),
        "DEADLINE": _S(JobStatus.FAILED, "DEADLINE: the job could not finish before its deadline"),
        "REVOKED": _S(JobStatus.FAILED, "REVOKED: a sibling cluster of the federation ran the job"),
        "SPECIAL_EXIT": _S(JobStatus.FAILED, "SPECIAL_EXIT: the job ended with a special exit code and is held"),
    },
)
#: States in which ``scancel`` (not a signal to the batch step) is the cancel.
_NOT_STARTED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "CONFIGURING"}

#: Label keys a job may set (``key=value``); ``gpu`` alone asks for one GPU.
LABEL_KEYS = {
    "partition": "partition",
    "account": "account",
    "qos": "qos",
    "time": "time_limit",
    "mem": "memory",
    "memory": "memory",
    "cpus": "cpus",
    "gpus": "gpus",
    "constraint": "constraint",
}


class SlurmCompute(ComputeClient):
    id = "slurm"
    name = "Slurm"
    schema = ConfigSchema(
        "slurm",
        (
            Field("cluster", "Cluster", "A name for the cluster (errors and job records show it)", default="slurm"),
            Field(
                "transport",
                "Transport",
                "cli: Slurm commands on this host; ssh: on a login node over SSH; rest: slurmrestd",
                default="cli",
                choices=("cli", "ssh", "rest"),
            ),
            Field("sshHost", "SSH login node", "user@host of the login node (ssh transport)", binds_secrets=True),
            Field("sshPort", "SSH port", "", "integer", default=22, minimum=1),
            Field("sshIdentityFile", "SSH key", "Private key file for the login node (key-based auth only)"),
            Field("sshKnownHosts", "SSH known hosts", "known_hosts file pinning the login node's host key"),
            Field(
                "restUrl", "slurmrestd URL", "e.g. http://slurm.example.org:6820 (rest transport)", binds_secrets=True
            ),
            Field("restUser", "Slurm user", "X-SLURM-USER-NAME (rest transport)"),
            Field("restToken", "Slurm JWT", "scontrol token lifespan=... (rest transport)", is_auth=True),
            Field("partition", "Partition", "Slurm partition (default: the cluster's default partition)"),
            Field("account", "Account", ""),
            Field("qos", "QoS", ""),
            Field("timeLimit", "Time limit", "e.g. 00:30:00 or 2-00:00:00"),
            Field("memory", "Memory", "per node, e.g. 8G"),
            Field("cpus", "CPUs", "CPUs per task (0: Slurm's default)", "integer", default=0, minimum=0),
            Field("gpus", "GPUs", "GPUs (--gres=gpu:N; 0: none)", "integer", default=0, minimum=0),
            Field("constraint", "Constraint", "node features (--constraint)"),
            Field(
                "extraDirectives",
                "Extra #SBATCH lines",
                "one option per line (e.g. --exclusive); only those the operator policy permits",
            ),
            Field("python", "Python", "the interpreter on the nodes that has deepforge-adapters", default="python3"),
            Field(
                "sharedDir",
                "Shared directory",
                "optional: a directory this host and the nodes both see; output goes there instead of storage",
            ),
            Field("nodeWorkDir", "Node work directory", "where the job unpacks on the node (default: $TMPDIR)"),
            Field("accounting", "Use sacct", "ask sacct about jobs scontrol forgot", "boolean", default=True),
        ),
    )
    status_table = STATUS_TABLE
    poll_interval = 1.0
    max_poll_interval = 10.0

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.cluster = str(self.config["cluster"] or "slurm")
        self.extra = self._extra_directives(self.config["extraDirectives"] or "")
        self.transport = self._transport()

    # ------------------------------------------------------------------------------------ plumbing
    def _error(self, message: str, job_id: str | None = None) -> ComputeError:
        where = f"cluster {self.cluster!r}" + (f", job {job_id}" if job_id else "")
        return ComputeError(self.id, f"{where}: {message}")

    def _transport(self) -> Transport:
        kind = self.config["transport"]
        if kind == "rest":
            missing = [f for f in ("restUrl", "restUser", "restToken") if not self.config[f]]
            if missing:
                raise self._error(f"the rest transport needs {', '.join(missing)}")
            if self.extra:
                raise self._error("extraDirectives are not supported by the rest transport; use cli or ssh")
            return RestTransport(
                self.cluster, self.config["restUrl"], self.config["restUser"], self.config["restToken"]
            )
        ssh = None
        if kind == "ssh":
            if not self.config["sshHost"]:
                raise self._error("the ssh transport needs sshHost (user@login-node)")
            ssh = ssh_command(
                self.config["sshHost"],
                int(self.config["sshPort"]),
                self.config["sshIdentityFile"] or "",
                self.config["sshKnownHosts"] or "",
            )
        return CliTransport(self.cluster, ssh, accounting=bool(self.config["accounting"]))

    def _extra_directives(self, text: str) -> tuple[str, ...]:
        """The extra ``#SBATCH`` options, one per line.  Who may set them is the operator policy's to say: from
        the plugins only where ``[compute.slurm] extraDirectives`` permits (a built-in rule refuses them)."""
        lines = tuple(line.strip() for line in text.splitlines() if line.strip())
        for line in lines:
            if not re.fullmatch(r"--?[A-Za-z][A-Za-z0-9-]*(?:[= ].*)?", line):
                raise self._error(f"extraDirectives: {line!r} is not an sbatch option (--name=value)")
        return lines

    def _call(self, what: Any, job_id: str | None = None) -> Any:
        try:
            return what()
        except SlurmError as exc:
            raise self._error(str(exc), job_id) from None

    # ------------------------------------------------------------------------------------ submit
    def job_options(self, job: ComputeJob, chdir: str, output: str) -> JobOptions:
        """Resources from the config, then from the job's labels (``partition=gpu``, ``gpus=2``, ``gpu``...)."""
        options = JobOptions(
            name=re.sub(r"[^A-Za-z0-9_.-]", "_", job.name)[:64] or "deepforge",
            partition=self.config["partition"] or "",
            account=self.config["account"] or "",
            qos=self.config["qos"] or "",
            time_limit=self.config["timeLimit"] or "",
            memory=self.config["memory"] or "",
            cpus=int(self.config["cpus"] or 0),
            gpus=int(self.config["gpus"] or 0),
            constraint=self.config["constraint"] or "",
            chdir=chdir,
            output=output,
            extra=self.extra,
        )
        changes: dict[str, Any] = {}
        for label in job.labels:
            key, sep, value = label.partition("=")
            key, value = key.strip().lower(), value.strip()
            if key == "gpu" and not sep:
                changes["gpus"] = max(1, changes.get("gpus", 1))
                continue
            if key not in LABEL_KEYS or not sep:
                continue
            attr = LABEL_KEYS[key]
            if attr in ("cpus", "gpus"):
                if not value.isdecimal():
                    raise self._error(f"job label {label!r}: {key} must be a whole number")
                changes[attr] = int(value)
            elif re.fullmatch(r"[A-Za-z0-9_.:,@|&!*\[\]-]+", value):
                changes[attr] = value
            else:
                raise self._error(f"job label {label!r}: not a valid {key}")
        return replace(options, **changes)

    def start_job(self, job: ComputeJob) -> dict[str, Any]:
        if job.bundle is None:
            raise self._error(
                f"job {job.hash or job.name!r} has no bundle path; slurm compute submits bundles from this "
                "machine's disk"
            )
        with staged_bundle(self.id, Path(job.bundle)) as root:
            try:
                job_hash = job.hash or bundle_hash(job.bundle)
                config = read_executor_config(root)
            except BundleError as exc:
                raise self._error(f"cannot start bundle: {exc}") from None
            nonce = uuid.uuid4().hex
            channel = self._channel(root, nonce)
            credentials = None
            if is_runner_command(config.cmd, config.args):
                try:
                    credentials = open_job_credentials(root, None)
                except SecretsError as exc:
                    raise self._error(f"cannot start bundle: {exc}") from None
            try:
                packed = _pack(root)
            except (BundleError, OSError) as exc:
                raise self._error(f"cannot start bundle: {exc}") from None
            payload = {
                "bundle": packed,
                "channel": channel,
                "credentials": credentials,
                "workDir": self.config["nodeWorkDir"] or "",
            }
        output = "/dev/null"
        if self.config["sharedDir"]:
            log_dir = Path(channel["config"]["root"], channel["prefix"])
            log_dir.mkdir(parents=True, exist_ok=True)
            output = str(log_dir / "slurm-%j.out")
        options = self.job_options(job, self.config["nodeWorkDir"] or "/tmp", output)
        script = self.batch_script(options, payload)
        if len(script) > MAX_SCRIPT_BYTES:
            raise self._error(
                f"the job bundle is too large for a batch script ({len(script)} bytes > {MAX_SCRIPT_BYTES}); "
                "data belongs in storage (inputs), not in the bundle"
            )
        job_id = self._call(lambda: self.transport.submit(script, options))
        log.info("slurm: cluster %r: submitted %s as job %s", self.cluster, job.name, job_id)
        return {"hash": job_hash, "jobId": job_id, "cluster": self.cluster, "channel": channel, "name": job.name}

    def _channel(self, root: Path, nonce: str) -> dict[str, Any]:
        """Where the job's output and results go (see the module docstring)."""
        if self.config["sharedDir"]:
            root_dir = str(Path(self.config["sharedDir"]).expanduser().resolve())
            prefix = f"{CHANNEL_DIR}/{nonce}"
            return {"kind": "shared", "backend": "local", "config": {"root": root_dir}, "project": "", "prefix": prefix}
        if not (root / JOB_FILE).is_file():
            raise self._error("this bundle has no job.json (no storage of its own): set sharedDir for its output")
        try:
            spec = parse_job(root)
        except BundleError as exc:
            raise self._error(f"cannot start bundle: {exc}") from None
        if spec.storage_id == "gme":
            raise self._error(
                "gme storage has no file names for the job's output stream; set sharedDir, or use another storage"
            )
        prefix = "/".join(p for p in (spec.storage_dir.strip("/"), CHANNEL_DIR, nonce) if p)
        return {
            "kind": "storage",
            "backend": spec.storage_id,
            "config": spec.storage_config,  # its secrets still sealed: job_info is stored in the model
            "project": spec.project,
            "prefix": prefix,
        }

    def batch_script(self, options: JobOptions, payload: Mapping[str, Any]) -> str:
        """The batch script: ``#SBATCH`` lines, then ``exec`` of the job side with the payload on fd 3."""
        marker = f"DEEPFORGE_PAYLOAD_{uuid.uuid4().hex}"
        grace = os.environ.get(slurm_job.GRACE_ENV, "").strip()
        lines = [
            "#!/bin/bash",
            *options.directives(),
            "# deepforge job: python -m deepforge_adapters.jobs.slurm_job (payload below)",
            *([f"export {slurm_job.GRACE_ENV}={shlex.quote(grace)}"] if grace else []),
            f"exec {shlex.quote(self.config['python'])} -m {slurm_job.__name__} --payload-fd 3 3<<'{marker}'",
            json.dumps(payload, separators=(",", ":")),
            marker,
            "",
        ]
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------ job_info
    def _job_id(self, job_info: Mapping[str, Any]) -> str:
        self.require(job_info, "jobId", "channel")
        job_id = job_info["jobId"]
        if isinstance(job_id, int) and not isinstance(job_id, bool):
            job_id = str(job_id)
        if not isinstance(job_id, str) or not job_id.isdecimal() or len(job_id) > 20:
            raise self._error(f"job_info jobId {job_id!r:.40} is not a Slurm job id")
        return job_id

    def _channel_of(self, job_info: Mapping[str, Any]) -> tuple[StorageClient, str]:
        """The channel's storage client and prefix, refused unless it is one this backend could have made."""
        channel = job_info["channel"]
        if not isinstance(channel, Mapping) or not isinstance(channel.get("prefix"), str):
            raise self._error(f"job_info channel {channel!r:.120} is not an output channel")
        prefix = channel["prefix"]
        if not _PREFIX_RE.fullmatch(prefix) or ".." in prefix.split("/"):
            raise self._error(f"job_info channel prefix {prefix!r:.120} is not one this backend makes")
        if channel.get("kind") not in ("shared", "storage"):
            raise self._error(f"job_info channel kind {channel.get('kind')!r:.40} is not one this backend makes")
        if channel["kind"] == "shared":
            shared = self.config["sharedDir"]
            root = (channel.get("config") or {}).get("root")
            if channel.get("backend") != "local" or not shared or str(Path(shared).expanduser().resolve()) != root:
                raise self._error(f"job_info channel root {root!r:.120} is not this backend's sharedDir")
        try:
            return slurm_job.channel_client(channel), prefix
        except DeepForgeError as exc:
            raise self._error(f"cannot open the job's output channel: {exc}") from None

    # ------------------------------------------------------------------------------------ observe
    def poll(self, job_info: Mapping[str, Any], cursor: Any) -> Poll:
        """The Slurm state, then the output segments from index ``cursor``."""
        job_id = self._job_id(job_info)
        index = self.byte_offset(cursor)
        client, prefix = self._channel_of(job_info)
        job: SlurmJob | None = self._call(lambda: self.transport.query(job_id), job_id)
        code: Any = job.state if job is not None else JobStatus.NOT_FOUND
        data, read = self._read_segments(client, prefix, index)
        finished = self.status_table[code].status.finished
        more = read == SEGMENTS_PER_POLL
        if not finished and code != JobStatus.NOT_FOUND:
            return Poll(code, data, index + read, more=False)
        end = self._call(lambda: slurm_job.read_end(client, prefix), job_id)
        if job is None and end is not None:  # Slurm forgot the job (MinJobAge, no accounting): end.json says
            code = "COMPLETED" if end.get("exitCode") == 0 else "FAILED"
        code = self._canceled(client, prefix, code, end)
        detail = self._detail(job, code, end) if self.status_table[code].status == JobStatus.FAILED else None
        if code == JobStatus.NOT_FOUND:
            detail = f"cluster {self.cluster!r}: Slurm does not know job {job_id} (any more)"
        return Poll(code, data, index + read, more=more, detail=detail)

    def _read_segments(self, client: StorageClient, prefix: str, index: int) -> tuple[bytes, int]:
        chunks = []
        for n in range(index, index + SEGMENTS_PER_POLL):
            try:
                info = client.stat(slurm_job.segment_name(prefix, n))
            except NotFoundError:
                break
            with client.get_file_stream(info) as f:
                chunks.append(f.read())
        return b"".join(chunks), len(chunks)

    def _canceled(self, client: StorageClient, prefix: str, code: Any, end: Mapping[str, Any] | None) -> Any:
        """A finished job we canceled is ``canceled`` whatever Slurm recorded (FAILED after SIGINT)."""
        if code in ("CANCELLED", JobStatus.NOT_FOUND) or code not in ("FAILED", "COMPLETED"):
            return code
        if end is not None and end.get("canceled"):
            return CANCELED_BY_US
        if end is not None and end.get("exitCode") == 0:
            return code  # it finished before the cancel reached it
        try:
            client.stat(f"{prefix}/{CANCEL_FILE}")
        except NotFoundError:
            return code
        return CANCELED_BY_US

    def _detail(self, job: SlurmJob | None, code: Any, end: Mapping[str, Any] | None) -> str:
        reason = self.status_table[code].reason or str(code)
        if code == "TIMEOUT" and job is not None and job.time_limit:
            return f"TIMEOUT: the job hit its {job.time_limit} limit"
        if code == "FAILED":
            exit_code = (end or {}).get("exitCode", job.exit_code if job else None)
            if isinstance(exit_code, int):
                return f"FAILED: exit code {exit_code}"
            if job is not None and job.signal:
                return f"FAILED: killed by signal {job.signal}"
        if job is not None and job.reason and job.reason not in ("NonZeroExitCode",):
            return f"{reason} (Slurm: {job.reason})"
        return reason

    def describe_failure(self, code: Any, detail: str | None, output_tail: str) -> str:
        """Slurm's verdict, then (for a plain failure) the last line of the job's output."""
        lines = [line.strip() for line in output_tail.splitlines() if line.strip()]
        head = detail or self.status_table[code].reason or f"Slurm job ended as {code!r}"
        if code == "FAILED" and lines:
            return f"{head}: {lines[-1]}"
        return head

    def get_results_info(self, job_info: Mapping[str, Any]) -> dict[str, Any]:
        job_id = self._job_id(job_info)
        client, prefix = self._channel_of(job_info)
        try:
            info = client.stat(f"{prefix}/{RESULTS_FILE}")
            with client.get_file_stream(info) as f:
                return parse_results(f.read(16 * 1024 * 1024))
        except NotFoundError:
            raise self._error(f"the job wrote no {RESULTS_FILE}", job_id) from None
        except (ValueError, DeepForgeError) as exc:
            raise self._error(f"cannot read {RESULTS_FILE}: {exc}", job_id) from None

    # ------------------------------------------------------------------------------------ cancel, purge
    def cancel_job(self, job_info: Mapping[str, Any]) -> None:
        """``scancel`` a job that has not started; SIGINT to a running one's batch step (see the module doc)."""
        job_id = self._job_id(job_info)
        client, prefix = self._channel_of(job_info)
        job = self._call(lambda: self.transport.query(job_id), job_id)
        if job is None:
            raise self._error("cannot cancel: Slurm does not know this job", job_id)
        if self.status_table[job.state].status.finished:
            return
        try:  # so that the end reads canceled even if the job dies of the signal before it can say so
            client.put_file_stream(f"{prefix}/{CANCEL_FILE}", io.BytesIO(b"canceled\n"), size=9)
        except DeepForgeError as exc:
            log.warning("slurm: cluster %r: job %s: cannot write the cancel marker: %s", self.cluster, job_id, exc)
        if job.state in _NOT_STARTED:
            self._call(lambda: self.transport.signal(job_id, None, False), job_id)
        else:
            self._call(lambda: self.transport.signal(job_id, "INT", True), job_id)

    def purge_job(self, job_info: Mapping[str, Any]) -> None:
        """Remove the job's output channel (its segments, results.json, end.json)."""
        self._job_id(job_info)
        client, prefix = self._channel_of(job_info)
        try:
            client.delete_dir(prefix)
        except NotFoundError:
            return
        except DeepForgeError as exc:
            log.warning("slurm: cluster %r: cannot remove %s: %s", self.cluster, prefix, exc)


def _pack(root: Path) -> str:
    """The bundle's files as a base64 tar.gz (bounded: see :data:`MAX_SCRIPT_BYTES`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, path in bundle_files(root):
            tar.add(path, arcname=rel, recursive=False)
            if buffer.tell() > MAX_SCRIPT_BYTES:
                raise BundleError(f"{root}: the bundle is larger than a batch script may be ({MAX_SCRIPT_BYTES} bytes)")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


__all__: Sequence[str] = ("STATUS_TABLE", "SlurmCompute")
