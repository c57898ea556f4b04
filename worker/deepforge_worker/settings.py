"""Worker settings: one schema, three sources, one precedence rule.

Every option can come from the command line, from an environment variable ``DEEPFORGE_WORKER_<OPTION>``
(``DEEPFORGE_WORKER_WORK_DIR`` for ``workDir``), or from a config file (TOML or JSON; keys are the field
names below, or their snake_case/kebab-case spellings).  Precedence: command line > environment > file >
default.  The schema is the core :class:`~deepforge_adapters.config.ConfigSchema`, so values are validated
with errors that name the field, and ``token``/``nonce`` are secrets that never show in ``repr`` or logs.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepforge_adapters.config import Config, ConfigSchema, Field, env_var_name
from deepforge_adapters.errors import ConfigError
from deepforge_adapters.webgme import DEFAULT_HOST, HOST_ENV

BACKEND = "worker"
CONFIG_ENV = "DEEPFORGE_WORKER_CONFIG"

SCHEMA = ConfigSchema(
    BACKEND,
    (
        Field("host", "WebGME server URL", "Base URL of the WebGME server", default=DEFAULT_HOST),
        Field("token", "API token", "x-api-token of the user whose jobs this worker runs", is_auth=True),
        Field("nonce", "Executor nonce", "x-executor-nonce, when the server sets executor.nonce", is_auth=True),
        Field("labels", "Labels", "Comma-separated labels this worker offers (jobs need a subset)", default=""),
        Field("processes", "Processes", "Concurrent jobs (default: 1, or one per GPU group)", "integer", minimum=1),
        Field("gpus", "GPUs", "Comma-separated GPU ids; each slot is pinned to its own GPUs", default=""),
        Field("workDir", "Work dir", "Where job directories are created", default="deepforge-worker-jobs"),
        Field("cacheDir", "Cache dir", "Input cache shared by all jobs", default="deepforge-worker-cache"),
        Field("cancelGrace", "Cancel grace", "Seconds between SIGINT and SIGKILL", "float", 10.0, minimum=0),
        Field(
            "drainTimeout", "Drain timeout", "Seconds running jobs may finish after SIGTERM", "float", 300.0, minimum=0
        ),
        Field(
            "maxBundleBytes",
            "Max bundle bytes",
            "Unzipped size limit of one job bundle",
            "integer",
            10 * 1024**3,
            minimum=1,
        ),
        Field(
            "maxBackoff",
            "Max backoff",
            "Longest wait between polls while the server is failing",
            "float",
            30.0,
            minimum=0.1,
        ),
        Field(
            "maxRefresh",
            "Max refresh",
            "Longest wait between polls, whatever refreshPeriod the server asks for (the shortest is 0.2 s)",
            "float",
            60.0,
            minimum=0.2,
        ),
    ),
)

_CAMEL = {re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", f.name).lower(): f.name for f in SCHEMA.fields}


@dataclass(frozen=True)
class WorkerSettings:
    """Resolved settings; ``config`` keeps the masked :class:`Config` for printing."""

    config: Config

    @property
    def host(self) -> str:
        return str(self.config["host"]).rstrip("/")

    @property
    def token(self) -> str | None:
        return self.config["token"] or None

    @property
    def nonce(self) -> str | None:
        return self.config["nonce"] or None

    @property
    def labels(self) -> list[str]:
        return split_list(self.config["labels"])

    @property
    def gpus(self) -> list[str]:
        return split_list(self.config["gpus"])

    @property
    def processes(self) -> int:
        if self.config["processes"]:
            return int(self.config["processes"])
        return len(self.gpus) or 1

    @property
    def work_dir(self) -> Path:
        return Path(self.config["workDir"]).expanduser().absolute()

    @property
    def cache_dir(self) -> Path:
        return Path(self.config["cacheDir"]).expanduser().absolute()

    @property
    def cancel_grace(self) -> float:
        return float(self.config["cancelGrace"])

    @property
    def drain_timeout(self) -> float:
        return float(self.config["drainTimeout"])

    @property
    def max_bundle_bytes(self) -> int:
        return int(self.config["maxBundleBytes"])

    @property
    def max_backoff(self) -> float:
        return float(self.config["maxBackoff"])

    @property
    def max_refresh(self) -> float:
        return float(self.config["maxRefresh"])


def split_list(value: Any) -> list[str]:
    """``"a, b"`` or ``["a", "b"]`` -> ``["a", "b"]`` (order kept, blanks and duplicates dropped)."""
    items = value if isinstance(value, list | tuple) else str(value or "").split(",")
    out: list[str] = []
    for item in items:
        text = str(item).strip()
        if text and text not in out:
            out.append(text)
    return out


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML (or ``.json``) worker config; a ``[worker]`` table is used when present."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(BACKEND, None, f"cannot read config file {p}: {exc.strerror}") from None
    try:
        data: Any = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(BACKEND, None, f"config file {p} is not valid {p.suffix or 'TOML'}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("worker"), dict):
        data = data["worker"]
    if not isinstance(data, dict):
        raise ConfigError(BACKEND, None, f"config file {p}: expected a table of options")
    return {_canonical(k): v for k, v in data.items()}


def _canonical(key: str) -> str:
    """``work_dir`` / ``work-dir`` / ``workDir`` -> ``workDir``; unknown keys pass through (and fail later)."""
    return _CAMEL.get(key.replace("-", "_").lower(), key)


def load_settings(
    cli: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> WorkerSettings:
    """Merge command line > environment > config file > defaults, then validate."""
    environ = os.environ if environ is None else environ
    cli = {_canonical(k): v for k, v in (cli or {}).items() if v not in (None, "", ())}
    config_file = config_file or cli.pop("config", None) or environ.get(CONFIG_ENV)
    merged: dict[str, Any] = read_config_file(config_file) if config_file else {}
    for f in SCHEMA.fields:
        var = env_var_name(BACKEND, f.name)
        if environ.get(var):
            merged[f.name] = environ[var]
        elif f.name == "host" and "host" not in merged and environ.get(HOST_ENV):
            merged["host"] = environ[HOST_ENV]
    merged.update(cli)
    for key in ("labels", "gpus"):
        if isinstance(merged.get(key), list | tuple):
            merged[key] = ",".join(split_list(merged[key]))
    settings = WorkerSettings(SCHEMA.validate(merged))
    gpus, processes = settings.gpus, settings.processes
    if gpus and processes > len(gpus):
        raise ConfigError(
            BACKEND, "processes", f"{processes} slots but only {len(gpus)} GPU(s): a job never shares a GPU"
        )
    return settings
