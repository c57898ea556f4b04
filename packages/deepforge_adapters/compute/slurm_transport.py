"""How the ``slurm`` compute backend talks to a cluster: the Slurm CLI (here or over SSH) or ``slurmrestd``.

Each transport does three things, and nothing else (the backend owns the batch script, the status table and
the output channel):

* ``submit(script, options)``: submit a batch job; returns Slurm's job id.  ``options`` are the resource
  requests (:class:`JobOptions`); the CLI writes them as ``#SBATCH`` lines, REST as the job's fields.
* ``query(job_id)``: the job's :class:`SlurmJob` (state, reason, exit code, time limit), or None when Slurm
  does not know it (any more).
* ``signal(job_id, sig, batch_only)``: ``scancel`` (``sig`` None: cancel the job).

Every failure is a :class:`SlurmError` carrying the cluster, the job id (when there is one) and Slurm's own
message; the backend turns it into a :class:`~deepforge_adapters.errors.ComputeError`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests

from ..http import describe_connection_error, make_session
from ..jobs.credentials import job_environment

log = logging.getLogger(__name__)

#: Seconds one Slurm command (or SSH round trip) may take before it is a failure.
COMMAND_TIMEOUT = 60.0
#: The slurmrestd API version of Slurm 22.05 (Debian 12); later versions keep serving it.
REST_VERSION = "v0.0.38"


class SlurmError(Exception):
    """A Slurm command or request failed; the message names the cluster, the job and Slurm's words."""


@dataclass(frozen=True)
class JobOptions:
    """The resources and naming of one batch job (each None/empty: Slurm's default)."""

    name: str = "deepforge"
    partition: str = ""
    account: str = ""
    qos: str = ""
    time_limit: str = ""  # Slurm's formats: minutes, MM:SS, HH:MM:SS, D-HH:MM:SS
    memory: str = ""  # e.g. 4G, 500M (per node)
    cpus: int = 0
    gpus: int = 0
    constraint: str = ""
    chdir: str = "/tmp"
    output: str = "/dev/null"
    #: Extra ``#SBATCH`` lines, already checked against the operator policy (CLI only).
    extra: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)

    def directives(self) -> list[str]:
        """The ``#SBATCH`` lines for these options."""
        pairs = [
            ("job-name", self.name),
            ("partition", self.partition),
            ("account", self.account),
            ("qos", self.qos),
            ("time", self.time_limit),
            ("mem", self.memory),
            ("cpus-per-task", str(self.cpus) if self.cpus else ""),
            ("gres", f"gpu:{self.gpus}" if self.gpus else ""),
            ("constraint", self.constraint),
            ("chdir", self.chdir),
            ("output", self.output),
        ]
        lines = [f"#SBATCH --{key}={value}" for key, value in pairs if value]
        return lines + [f"#SBATCH {line}" for line in self.extra]


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says about one job."""

    job_id: str
    #: The base state (``RUNNING``, ``TIMEOUT``...), without flags such as ``CANCELLED by 0``.
    state: str
    reason: str = ""
    #: The job's exit code (the batch script's), None while it runs or when a signal ended it.
    exit_code: int | None = None
    #: The signal that ended the job, if any.
    signal: int | None = None
    time_limit: str = ""


class Transport(Protocol):
    cluster: str

    def submit(self, script: str, options: JobOptions) -> str: ...

    def query(self, job_id: str) -> SlurmJob | None: ...

    def signal(self, job_id: str, sig: str | None, batch_only: bool) -> None: ...


def base_state(raw: str) -> str:
    """``CANCELLED`` of ``CANCELLED by 0``; Slurm also appends flags (``RUNNING+...``) in some outputs."""
    return re.split(r"[\s+]", raw.strip(), maxsplit=1)[0].upper() if raw.strip() else ""


# ------------------------------------------------------------------------------------------------ CLI
_SCONTROL_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:]*)=")


def parse_scontrol(line: str) -> dict[str, str]:
    """``scontrol show job -o`` output (``Key=value Key=value ...``) as a dict; values may hold spaces."""
    fields: dict[str, str] = {}
    matches = list(_SCONTROL_KEY.finditer(line))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
        fields.setdefault(match.group(1), line[match.end() : end].strip())
    return fields


def _exit_pair(value: str) -> tuple[int | None, int | None]:
    """``3:0`` -> (3, None); ``0:15`` -> (None, 15) (a signal ended it)."""
    match = re.fullmatch(r"(\d+):(\d+)", value.strip())
    if not match:
        return None, None
    code, sig = int(match.group(1)), int(match.group(2))
    return (None, sig) if sig else (code, None)


class CliTransport:
    """``sbatch``/``scontrol``/``scancel``/``sacct`` on this host, or on a login node over SSH.

    ``ssh``: the system OpenSSH client's argv prefix (key-based, ``BatchMode=yes``: it never prompts), or
    None to run the commands here.  ``accounting``: ask ``sacct`` about jobs ``scontrol`` no longer knows.
    """

    def __init__(self, cluster: str, ssh: Sequence[str] | None = None, accounting: bool = True) -> None:
        self.cluster = cluster
        self.ssh = list(ssh) if ssh else None
        self.accounting = accounting
        self.where = f"login node {self.ssh[-1]}" if self.ssh else "this host"

    def _run(self, argv: Sequence[str], what: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [*self.ssh, "--", shlex.join(argv)] if self.ssh else list(argv)
        try:
            done = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
                env=job_environment(os.environ),  # sbatch exports our environment to the job: never the key
            )
        except FileNotFoundError:
            raise SlurmError(
                f"{what}: {command[0]!r} is not installed on {'this host' if self.ssh else self.where}"
            ) from None
        except subprocess.TimeoutExpired:
            raise SlurmError(f"{what}: no answer from {self.where} within {COMMAND_TIMEOUT:.0f} s") from None
        if self.ssh and done.returncode == 255:  # ssh's own failure: the command never ran
            raise SlurmError(f"{what}: cannot reach {self.where} over SSH: {_last_line(done.stderr)}")
        return done

    def submit(self, script: str, options: JobOptions) -> str:
        done = self._run(["sbatch", "--parsable"], "sbatch", stdin=script)
        if done.returncode != 0:
            raise SlurmError(f"sbatch refused the job: {_slurm_message(done.stderr)}")
        job_id = done.stdout.strip().split(";")[0]
        if not job_id.isdecimal():
            raise SlurmError(f"sbatch printed no job id: {done.stdout.strip()[:200]!r}")
        return job_id

    def query(self, job_id: str) -> SlurmJob | None:
        done = self._run(["scontrol", "show", "job", "-o", job_id], f"scontrol show job {job_id}")
        if done.returncode == 0 and done.stdout.strip():
            fields = parse_scontrol(done.stdout.strip().splitlines()[0])
            code, sig = _exit_pair(fields.get("ExitCode", ""))
            reason = fields.get("Reason", "")
            return SlurmJob(
                job_id,
                base_state(fields.get("JobState", "")),
                "" if reason in ("None", "(null)") else reason,
                code,
                sig,
                fields.get("TimeLimit", ""),
            )
        message = _slurm_message(done.stderr)
        if "Invalid job id" not in message:
            raise SlurmError(f"scontrol show job {job_id}: {message}")
        return self._sacct(job_id) if self.accounting else None

    def _sacct(self, job_id: str) -> SlurmJob | None:
        """The job from accounting (slurmdbd), else from the job completion log (``sacct -c``)."""
        for flags in ([], ["-c"]):
            argv = ["sacct", *flags, "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode,Timelimit"]
            done = self._run(argv, f"sacct {job_id}")
            rows = [r.split("|") for r in done.stdout.splitlines() if r.startswith(f"{job_id}|")]
            if done.returncode == 0 and rows and len(rows[-1]) >= 4:
                _, state, exit_code, limit = rows[-1][:4]
                code, sig = _exit_pair(exit_code)
                return SlurmJob(job_id, base_state(state), "", code, sig, limit)
        return None

    def signal(self, job_id: str, sig: str | None, batch_only: bool) -> None:
        argv = ["scancel", *(["--signal", sig] if sig else []), *(["--batch"] if batch_only else []), job_id]
        done = self._run(argv, f"scancel {job_id}")
        if done.returncode != 0:
            raise SlurmError(f"scancel {job_id}: {_slurm_message(done.stderr)}")


def ssh_command(
    host: str, port: int = 22, identity_file: str = "", known_hosts: str = "", connect_timeout: int = 10
) -> list[str]:
    """The OpenSSH client argv (without the remote command) for key-based, non-interactive use."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR"]
    argv += ["-p", str(port)]
    if identity_file:
        argv += ["-i", identity_file, "-o", "IdentitiesOnly=yes"]
    if known_hosts:
        argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    return [*argv, host]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _slurm_message(stderr: str) -> str:
    """Slurm's own words: the ``error:`` lines of a command's stderr, joined."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [re.sub(r"^\S+: error: ", "", line) for line in lines if "error" in line.lower()]
    return "; ".join(errors or lines) or "(no message)"


# ------------------------------------------------------------------------------------------------ REST
def _minutes(limit: str) -> int | None:
    """Slurm's time formats as minutes (REST wants a number): ``10``, ``MM:SS``, ``H:MM:SS``, ``D-H[:M[:S]]``."""
    if not limit:
        return None
    days = 0
    if "-" in limit:
        head, _, limit = limit.partition("-")
        days = int(head)
        parts = [int(p) for p in limit.split(":")] + [0, 0]
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(p) for p in limit.split(":")]
        if len(parts) == 1:
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[:3]
    total = days * 1440 + hours * 60 + minutes + (1 if seconds else 0)
    return max(1, total)


def _memory_mb(memory: str) -> int | None:
    match = re.fullmatch(r"(\d+)([KMGT]?)B?", memory.strip().upper())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2) or "M"
    return max(1, int(number * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]))


def _format_minutes(value: Any) -> str:
    if isinstance(value, dict):  # newer APIs: {"set": true, "number": N}
        value = value.get("number") if value.get("set", True) else None
    if not isinstance(value, int) or value <= 0 or value >= 0xFFFFFFFE:
        return "UNLIMITED"
    return (
        f"{value // 1440}-{value % 1440 // 60:02d}:{value % 60:02d}:00"
        if value >= 1440
        else (f"{value // 60:02d}:{value % 60:02d}:00")
    )


class RestTransport:
    """``slurmrestd`` (API :data:`REST_VERSION`) with a JWT (``X-SLURM-USER-NAME``/``X-SLURM-USER-TOKEN``)."""

    def __init__(self, cluster: str, url: str, user: str, token: str) -> None:
        self.cluster = cluster
        self.url = url.rstrip("/")
        self.session = make_session(
            headers={"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token},
            timeout=(10.0, COMMAND_TIMEOUT),
            retries=2,
            retry_statuses=(502, 503, 504),  # 22.05 answers a bad token with 500: not worth retrying
        )

    def _request(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, f"{self.url}/slurm/{REST_VERSION}{path}", **kwargs)
        except requests.RequestException as exc:
            raise SlurmError(
                f"{what}: cannot reach slurmrestd at {self.url}: {describe_connection_error(exc)}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        errors = _rest_errors(body)
        if response.status_code >= 400 or (errors and method != "GET"):
            hint = (
                " (is the token valid and unexpired?)" if response.status_code in (401, 403, 500) and not errors else ""
            )
            shown = "; ".join(errors) or response.text[:300].strip() or response.reason
            raise SlurmError(f"{what}: slurmrestd answered HTTP {response.status_code}: {shown}{hint}")
        return body if isinstance(body, dict) else {}

    def submit(self, script: str, options: JobOptions) -> str:
        if options.extra:
            raise SlurmError("extra #SBATCH lines are not supported by the REST transport; use the CLI transport")
        job: dict[str, Any] = {
            "name": options.name,
            "current_working_directory": options.chdir,
            "standard_output": options.output,
            "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin", **dict(options.environment)},
        }
        optional: dict[str, Any] = {
            "partition": options.partition,
            "account": options.account,
            "qos": options.qos,
            "time_limit": _minutes(options.time_limit),
            "memory_per_node": _memory_mb(options.memory) if options.memory else None,
            "cpus_per_task": options.cpus or None,
            "gres": f"gpu:{options.gpus}" if options.gpus else None,
            "constraints": options.constraint,
        }
        job.update({k: v for k, v in optional.items() if v})
        body = self._request("POST", "/job/submit", "submit", json={"script": script, "job": job})
        job_id = body.get("job_id")
        if not isinstance(job_id, int):
            raise SlurmError(f"submit: slurmrestd returned no job id: {body!r:.200}")
        return str(job_id)

    def query(self, job_id: str) -> SlurmJob | None:
        try:
            body = self._request("GET", f"/job/{job_id}", f"get job {job_id}")
        except SlurmError as exc:
            if "Invalid job id" in str(exc) or "Unable to query JobId" in str(exc):
                return None
            raise
        jobs = body.get("jobs") or []
        if not jobs:
            errors = _rest_errors(body)
            if not errors or any("Invalid job id" in e for e in errors):
                return None
            raise SlurmError(f"get job {job_id}: {'; '.join(errors)}")
        job = jobs[0]
        status = job.get("exit_code")
        code: int | None = None
        sig: int | None = None
        if isinstance(status, int):  # the raw wait status: 768 is exit 3, 9 is SIGKILL
            code, sig = (status >> 8, None) if status & 0x7F == 0 else (None, status & 0x7F)
        reason = str(job.get("state_reason") or "")
        return SlurmJob(
            job_id,
            base_state(str(job.get("job_state") or "")),
            "" if reason == "None" else reason,
            code,
            sig,
            _format_minutes(job.get("time_limit")),
        )

    def signal(self, job_id: str, sig: str | None, batch_only: bool) -> None:
        params = {"signal": f"SIG{sig}"} if sig else None
        self._request("DELETE", f"/job/{job_id}", f"cancel job {job_id}", params=params)


def _rest_errors(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    out = []
    for item in body.get("errors") or []:
        if isinstance(item, dict):
            text = item.get("error") or item.get("description") or ""
            number = item.get("error_number") or item.get("errno")
            out.append(f"{text} (error {number})" if number else str(text))
    return [e for e in out if e]
