"""The ``deepforge`` click group: logging, redaction, and library errors turned into one-line exits."""

from __future__ import annotations

import errno
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .. import __version__, secrets
from ..errors import DeepForgeError
from .backends import backends_command
from .common import FAILURE_EXIT, USAGE_ERRORS, CliError, CliUsageError
from .run import run_command
from .secrets import secrets_group
from .storage import storage_group


class DeepForgeGroup(click.Group):
    """Turns library errors raised by any subcommand into :class:`CliError` (tracebacks only with --debug),
    and shows click's own usage errors (bad JSON, missing file, unknown option) as the same one line."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> NoReturn:
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except CliError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            message = exc.format_message()
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                message += f" (see '{ctx.command_path} --help')"
            CliError(message).show()
            sys.exit(exc.exit_code)
        except click.Abort:
            CliError("aborted").show()
            sys.exit(FAILURE_EXIT)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the reader went away (`| head`): nothing left to tell it
                sys.exit(FAILURE_EXIT)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            debug = bool(ctx.params.get("debug"))
            if debug:
                click.echo(secrets.redact(traceback.format_exc()), err=True)
            if isinstance(exc, USAGE_ERRORS):
                raise CliUsageError(str(exc)) from None
            if isinstance(exc, DeepForgeError):
                raise CliError(str(exc)) from None
            if isinstance(exc, OSError):
                where = f" {exc.filename!r}" if exc.filename else ""
                raise CliError(f"{exc.strerror or exc}{where}") from None
            hint = "" if debug else " (run with --debug for the traceback)"
            raise CliError(f"unexpected {type(exc).__name__}: {exc}{hint}") from None


@click.group(cls=DeepForgeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show debug logs and tracebacks.")
@click.version_option(__version__, prog_name="deepforge")
def main(debug: bool) -> None:
    """DeepForge adapters: storage and compute backends from the command line."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )
    secrets.install_redaction()


main.add_command(backends_command, "backends")
main.add_command(storage_group, "storage")
main.add_command(secrets_group, "secrets")
main.add_command(run_command, "run")
