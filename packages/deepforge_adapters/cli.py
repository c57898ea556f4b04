"""``deepforge``: the command line over the adapters (backends, storage transfers, secrets).

Exit codes are part of the interface, so scripts can tell "you called it wrong" from "it broke":
``0`` success, ``2`` usage or configuration errors (bad flags, bad JSON, bad config, bad dataInfo, unknown
backend), ``1`` runtime failures (storage errors, integrity errors, I/O).  A failure prints one line naming
the cause on stderr; ``--debug`` adds the traceback and debug logs.  Secret values never reach the output:
config secrets are registered for redaction before anything can log or raise them.

``main`` is a click group; other parts of the package add their commands to it (see ``docs/storage.md``).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__, compute, secrets, storage
from ._registry import BackendRegistry
from .config import ConfigSchema, env_var_name
from .errors import ConfigError, DataInfoError, DeepForgeError, SecretsError, UnknownBackendError
from .storage import DataInfo, StorageClient
from .streams import ProgressCallback, copy_stream

log = logging.getLogger(__name__)

#: Transfers bigger than this get a progress bar (smaller ones finish before a bar is readable).
PROGRESS_THRESHOLD = 8 * 1024 * 1024
USAGE_EXIT = 2
FAILURE_EXIT = 1
#: Errors that mean the invocation is wrong, not that the work failed.
USAGE_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DataInfoError, UnknownBackendError)

F = TypeVar("F", bound=Callable[..., Any])


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


class DeepForgeGroup(click.Group):
    """Turns library errors raised by any subcommand into :class:`CliError` (tracebacks only with --debug)."""

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


# ---------------------------------------------------------------------------------------------- backends


@main.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {storage: {id: ...}, compute: {id: ...}}.")
def backends_command(as_json: bool) -> None:
    """List storage and compute backends with their config fields (and why a backend is unavailable)."""
    listing = {"storage": _describe(storage.registry), "compute": _describe(compute.registry)}
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for kind, entries in listing.items():
        click.echo(f"{kind} backends:")
        for backend_id, entry in entries.items():
            if not entry["available"]:
                click.echo(f"  {backend_id:<20} unavailable: {entry['reason']}")
                continue
            click.echo(f"  {backend_id:<20} {entry['name']}")
            for field in entry["configStructure"]:
                flags = [field["valueType"]]
                if field.get("isAuth"):
                    flags.append("secret")
                if field.get("required"):
                    flags.append("required")
                default = f" [default: {field['value']!r}]" if field["value"] not in ("", None) else ""
                click.echo(f"      {field['name']} ({', '.join(flags)}){default}: {field['description']}")
                click.echo(f"          env: {', '.join(field['env'])}")


def _describe(registry: BackendRegistry[Any]) -> dict[str, dict[str, Any]]:
    available, unavailable = registry.availability()
    out: dict[str, dict[str, Any]] = {}
    for backend_id in registry.ids():
        if backend_id in unavailable:
            out[backend_id] = {"available": False, "reason": unavailable[backend_id]}
            continue
        cls = available[backend_id]
        schema: ConfigSchema = cls.schema
        fields = schema.to_config_structure()
        for item, field in zip(fields, schema.fields, strict=True):
            item["env"] = [env_var_name(schema.backend, field.name), *field.env]
        out[backend_id] = {"available": True, "name": cls.name, "configStructure": fields}
    return out


# ---------------------------------------------------------------------------------------------- storage


@main.group("storage")
def storage_group() -> None:
    """Move artifacts in and out of a storage backend; dataInfo JSON on stdout."""


def _backend_options(default_backend: str | None) -> Callable[[F], F]:
    """``--backend``, ``--config`` and ``--quiet``, shared by every storage subcommand."""

    def decorate(fn: F) -> F:
        fn = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")(fn)
        fn = click.option(
            "--config",
            "config_arg",
            metavar="JSON|@FILE",
            help="Backend config as a JSON object, or @path to a JSON file. Secret fields may come from "
            "DEEPFORGE_<BACKEND>_<FIELD> environment variables instead.",
        )(fn)
        help_text = "Storage backend id (see `deepforge backends`)."
        if default_backend is None:
            help_text += " Default: the backend named in the dataInfo."
        return click.option(
            "--backend", "-b", "backend_id", default=default_backend, show_default=True, help=help_text
        )(fn)

    return decorate


@storage_group.command("put")
@_backend_options("local")
@click.argument("name")
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
def storage_put(backend_id: str, config_arg: str | None, quiet: bool, name: str, source: Path) -> None:
    """Store SOURCE (a file, or - for stdin) under NAME; prints its dataInfo."""
    client = _client(backend_id, config_arg)
    if str(source) == "-":
        with _progress(None, quiet, f"put {name}") as progress:
            info = client.put_file_stream(name, sys.stdin.buffer, progress=progress)
    else:
        if not source.is_file():
            raise click.BadParameter(f"{source} is not a readable file", param_hint="SOURCE")
        with _progress(source.stat().st_size, quiet, f"put {name}") as progress:
            info = client.put_file(name, source, progress=progress)
    click.echo(info.dumps())


@storage_group.command("get")
@_backend_options(None)
@click.argument("data_info_arg", metavar="DATAINFO")
@click.argument("dest", type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path))
def storage_get(backend_id: str | None, config_arg: str | None, quiet: bool, data_info_arg: str, dest: Path) -> None:
    """Download the artifact of DATAINFO (JSON or @file) to DEST (a path, or - for stdout).

    To a path, the bytes land in a temporary file that is renamed to DEST only once their size and hash
    match the dataInfo; on any failure nothing is left at DEST.  To stdout (-), bytes are written as they
    arrive and verified at the end: on a mismatch the command exits 1 and its last line (on stderr) says how
    many unverified bytes were already written, which the reader must discard.
    """
    data_info = _data_info(data_info_arg)
    client = _client(backend_id or data_info.backend, config_arg)
    client.check_data_info(data_info)
    total = _size_of(client, data_info)
    if str(dest) == "-":
        written = 0
        try:
            with _progress(total, quiet, "get") as progress, client.get_file_stream(data_info) as src:

                def counted(done: int, size: int | None) -> None:
                    nonlocal written
                    written = done
                    progress(done, size)

                copy_stream(src, sys.stdout.buffer, total=total, progress=counted)
            sys.stdout.buffer.flush()
        except Exception as exc:
            if not written:
                raise
            reason = str(exc) if isinstance(exc, DeepForgeError) else f"{type(exc).__name__}: {exc}"
            unverified = f"{written} byte(s) already written to stdout are NOT verified: discard them"
            raise CliError(f"{reason}; {unverified}") from None
        return
    with _progress(total, quiet, f"get {dest.name}") as progress:
        client.get_file(data_info, dest, progress=progress)


@storage_group.command("stat")
@_backend_options("local")
@click.argument("name")
def storage_stat(backend_id: str, config_arg: str | None, quiet: bool, name: str) -> None:
    """Print the dataInfo of the artifact stored under NAME."""
    click.echo(_client(backend_id, config_arg).stat(name).dumps())


@storage_group.command("rm")
@_backend_options(None)
@click.argument("data_info_arg", metavar="[DATAINFO]", required=False)
@click.option("--dir", "prefix", metavar="PREFIX", help="Delete every artifact under PREFIX/ instead.")
def storage_rm(
    backend_id: str | None, config_arg: str | None, quiet: bool, data_info_arg: str | None, prefix: str | None
) -> None:
    """Delete the artifact of DATAINFO, or everything under --dir PREFIX (needs --backend)."""
    if (data_info_arg is None) == (prefix is None):
        raise click.UsageError("give exactly one of DATAINFO or --dir PREFIX")
    if prefix is not None:
        if backend_id is None:
            raise click.UsageError("--dir needs --backend")
        _client(backend_id, config_arg).delete_dir(prefix)
        return
    assert data_info_arg is not None
    data_info = _data_info(data_info_arg)
    client = _client(backend_id or data_info.backend, config_arg)
    client.delete_file(data_info)


@storage_group.command("cp")
@_backend_options(None)
@click.argument("data_info_arg", metavar="DATAINFO")
@click.argument("name")
def storage_cp(backend_id: str | None, config_arg: str | None, quiet: bool, data_info_arg: str, name: str) -> None:
    """Copy the artifact of DATAINFO to NAME in the same backend; prints the copy's dataInfo."""
    data_info = _data_info(data_info_arg)
    client = _client(backend_id or data_info.backend, config_arg)
    client.check_data_info(data_info)
    with _progress(_size_of(client, data_info), quiet, f"cp {name}") as progress:
        info = client.copy(data_info, name, progress=progress)
    click.echo(info.dumps())


# ---------------------------------------------------------------------------------------------- secrets


@main.group("secrets")
def secrets_group() -> None:
    """Keys for sealing secret config fields in job bundles."""


@secrets_group.command("keygen")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the keyring to this file (mode 0600; never overwrites) instead of printing it.",
)
def secrets_keygen(out: str | None) -> None:
    """Make a keyring with one new AES-256 key.

    Give it to the server and the workers as DEEPFORGE_SECRET_KEY_FILE (or its text as DEEPFORGE_SECRET_KEY).
    """
    keyring = secrets.Keyring.generate()
    if out is None:
        click.echo(keyring.dumps(), nl=False)
        return
    try:
        secrets.write_keyring(out, keyring, overwrite=False)
    except (SecretsError, OSError) as exc:
        raise click.ClickException(f"cannot write {out}: {exc}") from None
    click.echo(f"wrote keyring {out} (sealing key {keyring.sealing_id})", err=True)


@secrets_group.command("rotate")
@click.argument("key_file", type=click.Path(dir_okay=False), required=False)
@click.option("--drop", "drop", multiple=True, metavar="KEY_ID", help="Also remove this old key (repeatable).")
def secrets_rotate(key_file: str | None, drop: tuple[str, ...]) -> None:
    """Put a new sealing key in front of the keyring in KEY_FILE (default: $DEEPFORGE_SECRET_KEY_FILE).

    The old keys stay for reading, so bundles sealed before keep opening; new seals use the new key.
    Drop an old key (--drop ID) once nothing sealed under it is still needed.  Restart (or re-read) the
    server and the workers afterwards: both read the keyring when they start.
    """
    path = key_file or os.environ.get(secrets.KEY_FILE_ENV, "")
    if not path:
        raise click.UsageError(f"give KEY_FILE or set {secrets.KEY_FILE_ENV}")
    try:
        keyring = secrets.load_keyring({secrets.KEY_FILE_ENV: path})
        rotated = keyring.rotated(drop)
        secrets.write_keyring(path, rotated, overwrite=True)
    except (SecretsError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{path}: sealing key {rotated.sealing_id}; keys for reading: {', '.join(rotated.ids)}", err=True)


# ---------------------------------------------------------------------------------------------- helpers


def _read_arg(value: str, what: str) -> str:
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


def _json_arg(value: str, what: str) -> Any:
    text = _read_arg(value, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=what) from None


def _data_info(value: str) -> DataInfo:
    return DataInfo.from_json(_json_arg(value, "DATAINFO"))


def _client(backend_id: str, config_arg: str | None) -> StorageClient:
    """The client, with every secret of its resolved config registered for redaction first."""
    config = _json_arg(config_arg, "--config") if config_arg else None
    if config is not None and not isinstance(config, dict):
        raise click.BadParameter(f"expected a JSON object, got {type(config).__name__}", param_hint="--config")
    cls = storage.registry.get_class(backend_id)
    resolved = cls.schema.resolve(config)
    for value in resolved.secret_values():
        secrets.register_secret(value)
    client = storage.get_client(backend_id, resolved.to_dict())
    log.debug("storage client %r", client)
    return client


def _size_of(client: StorageClient, data_info: DataInfo) -> int | None:
    """The artifact's size for the progress bar; a backend that cannot say without a request says None."""
    try:
        return int(client.get_metadata(data_info)["size"])
    except (KeyError, TypeError, ValueError):
        return None


@contextmanager
def _progress(total: int | None, quiet: bool, label: str) -> Iterator[ProgressCallback]:
    """A progress callback that shows a tqdm bar on stderr once a transfer is known to be big."""
    from tqdm import tqdm

    bar: Any = None

    def update(done: int, size: int | None) -> None:
        nonlocal bar
        if quiet:
            return
        if bar is None:
            big = (size if size is not None else done) > PROGRESS_THRESHOLD
            if not big:
                return
            bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr)
            bar.update(done)
        else:
            bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------------- run

from .jobs.cli import run_command  # noqa: E402 - after the helpers it uses, which it imports lazily

main.add_command(run_command, "run")


if __name__ == "__main__":  # pragma: no cover
    main()
