"""A job bundle's fixed file names and its ``executor_config.json``, parsed and validated here only.

Every part of the system that writes or reads a bundle (the bundle builder, the job runner, the compute
backends, the ``deepforge-worker``) imports the names below, so a bundle means the same thing everywhere::

    job.json              what to run and where the data lives (see :mod:`.bundle`)
    executor_config.json  WebGME executor format: the command to run and the result artifacts to archive
    nonce                 only when job caching is off
    results.json          written by the job: ``{output: {"type", "dataInfo"}}``
    job_stdout.txt        the job's stdout, archived as ``stdout`` (our runner merges its operation's stderr
                          into it)
    job_stderr.txt        the job's stderr, kept apart by the worker as the Node worker keeps it

This module depends on :mod:`deepforge_adapters.errors` only, so the worker and the compute backends can use
it without the storage layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BundleError

JOB_FILE = "job.json"
EXECUTOR_CONFIG_FILE = "executor_config.json"
NONCE_FILE = "nonce"
RESULTS_FILE = "results.json"
STDOUT_FILE = "job_stdout.txt"
#: Where a worker keeps a job's stderr (the Node worker's name; it is never posted as live output).
STDERR_FILE = "job_stderr.txt"
#: What starts every line the runner itself writes into the job's output (not the operation's lines).
RUNNER_PREFIX = "deepforge: "


#: What starts a metadata line of an operation's output (DeepForge's ``CONSTANTS.START_CMD``): the line is
#: ``deepforge-cmd <COMMAND> <id> <json>``, e.g. ``PLOT`` for a figure (:mod:`.plotting`); the plugins turn it
#: into model nodes (``deepforge_plugins.job_metadata``) and keep it out of ``Job.stdout``.
METADATA_PREFIX = "deepforge-cmd"
#: The matplotlib backend the runner gives an operation (``MPLBACKEND``), unless the job's environment names one.
PLOT_BACKEND = "module://deepforge_adapters.jobs.plotting"


def without_runner_prefix(line: str) -> str:
    """A runner line without the runner's prefix, for messages that carry their own ``deepforge:`` prefix."""
    return line[len(RUNNER_PREFIX) :] if line.startswith(RUNNER_PREFIX) else line


#: The result artifacts of the bundles we build (the executor archives ``STDOUT_FILE`` and ``RESULTS_FILE``).
STDOUT_ARTIFACT = "stdout"
RESULTS_ARTIFACT = "results"


def load_json(path: Path, where: str | None = None) -> Any:
    """The JSON in ``path``; :class:`BundleError` naming the file (as ``where``, default the path) when it is
    missing or not JSON."""
    where = where or str(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BundleError(f"{where}: missing (not a job bundle?)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where}: not valid JSON: {exc}") from None


def parse_results(raw: str | bytes, where: str = RESULTS_FILE) -> dict[str, Any]:
    """A job's ``results.json`` (``{output name: {"type": ..., "dataInfo": ...}}``) as every compute backend
    reads it; :class:`ValueError` naming ``where`` when it is not JSON or not an object, for the backend to wrap
    in its own error with the job it came from."""
    try:
        results = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(results, dict):
        raise ValueError(f"{where} is not a JSON object")
    return results


@dataclass(frozen=True)
class ResultArtifact:
    """One entry of ``resultArtifacts``: a name and the glob patterns (minimatch) of the files it holds."""

    name: str
    #: Empty: every file of the job's directory.
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class ExecutorConfig:
    """A validated ``executor_config.json``."""

    cmd: str
    args: tuple[str, ...]
    result_artifacts: tuple[ResultArtifact, ...]
    output_interval: float | None  # seconds (the file has milliseconds); None: off
    output_segment_size: int | None
    #: The JSON object as written (what :func:`deepforge_adapters.jobs.bundle.executor_config` builds).
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def argv(self) -> list[str]:
        return [self.cmd, *self.args]

    @classmethod
    def parse(cls, data: Any, where: str = EXECUTOR_CONFIG_FILE, *, require_artifacts: bool = False) -> ExecutorConfig:
        """Validate ``data``; :class:`BundleError` ``"{where}: field 'x': ..."`` names the offending field.

        ``require_artifacts``: ``resultArtifacts`` must be present (the executor worker archives them; local
        and SciServer compute run the command only).
        """

        def bad(key: str, message: str) -> BundleError:
            return BundleError(f"{where}: field {key!r}: {message}")

        if not isinstance(data, dict):
            raise BundleError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "cmd" not in data:
            raise bad("cmd", "is missing")
        cmd = data["cmd"]
        if not isinstance(cmd, str) or not cmd.strip():
            raise bad("cmd", "must be a non-empty string")
        args = data.get("args") or []
        if not isinstance(args, list) or not all(
            isinstance(a, str | int | float) and not isinstance(a, bool) for a in args
        ):
            raise bad("args", "must be a list of strings")
        raw_artifacts = data.get("resultArtifacts")
        if raw_artifacts is None and not require_artifacts:
            raw_artifacts = []
        if not isinstance(raw_artifacts, list):
            raise bad("resultArtifacts", "must be a list of {name, resultPatterns}")
        artifacts = []
        for i, item in enumerate(raw_artifacts):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise bad(f"resultArtifacts[{i}]", "needs a non-empty string 'name'")
            patterns = item.get("resultPatterns", [])
            if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
                raise bad(f"resultArtifacts[{i}].resultPatterns", "must be a list of strings")
            artifacts.append(ResultArtifact(item["name"], tuple(patterns)))
        numbers = {}
        for key in ("outputInterval", "outputSegmentSize"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise bad(key, "must be a number")
            numbers[key] = value
        interval, segment = numbers["outputInterval"], numbers["outputSegmentSize"]
        return cls(
            cmd=cmd,
            args=tuple(str(a) for a in args),
            result_artifacts=tuple(artifacts),
            output_interval=interval / 1000.0 if interval and interval > 0 else None,
            output_segment_size=int(segment) if segment and segment > 0 else None,
            raw=data,
        )


def read_executor_config(root: Path, *, where: str | None = None, require_artifacts: bool = False) -> ExecutorConfig:
    """``root/executor_config.json``, parsed by :meth:`ExecutorConfig.parse` (:class:`BundleError` if bad).

    Errors name the file as ``where`` (default: its path; the worker shows the bundle-relative name)."""
    path = root / EXECUTOR_CONFIG_FILE
    where = where or str(path)
    return ExecutorConfig.parse(load_json(path, where), where, require_artifacts=require_artifacts)
