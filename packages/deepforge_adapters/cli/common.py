"""What every ``deepforge`` subcommand shares: the exit codes, the one-line errors, ``JSON|@FILE`` arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .. import secrets
from ..errors import ConfigError, DataInfoError, UnknownBackendError
from ..storage import DataInfo

USAGE_EXIT = 2
FAILURE_EXIT = 1
#: Errors that mean the invocation is wrong, not that the work failed.
USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataInfoError, UnknownBackendError)


class CliError(click.ClickException):
    """A runtime failure shown as one line ``deepforge: error: <message>`` (secrets redacted); exit 1."""

    exit_code = FAILURE_EXIT

    def __init__(self, message: str) -> None:
        super().__init__(secrets.redact(message))

    def show(self, file: Any = None) -> None:
        click.echo(f"deepforge: error: {self.format_message()}", err=True)


class CliUsageError(CliError):
    """A usage or configuration error (bad config, dataInfo, backend id); exit 2."""

    exit_code = USAGE_EXIT


def read_arg(value: str, what: str) -> str:
    """``value`` itself, or the contents of the file named by ``@path`` (``@-`` is stdin)."""
    if not value.startswith("@"):
        return value
    path = value[1:]
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=what) from None


def json_arg(value: str, what: str) -> Any:
    text = read_arg(value, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None


def parse_data_info(value: str) -> DataInfo:
    return DataInfo.from_json(json_arg(value, "DATAINFO"))


def json_object_arg(value: str | None, what: str) -> dict[str, Any] | None:
    """A ``JSON|@FILE`` option that must hold a JSON object (a backend config); ``None`` when not given."""
    if not value:
        return None
    parsed = json_arg(value, what)
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"expected a JSON object, got {type(parsed).__name__}", param_hint=what)
    return parsed
