"""``deepforge storage put|get|stat|rm|cp``: artifacts in and out of a storage backend, dataInfo JSON on stdout."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import storage
from ..errors import DeepForgeError
from ..storage import DataInfo, StorageClient
from ..streams import ProgressCallback, copy_stream
from .common import CliError, json_object_arg, parse_data_info

log = logging.getLogger(__name__)

#: Transfers bigger than this show a progress bar on stderr (unless --quiet).
PROGRESS_THRESHOLD = 8 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])


@click.group("storage")
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
@click.argument("source", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.argument("name")
def storage_put(backend_id: str, config_arg: str | None, quiet: bool, source: Path, name: str) -> None:
    """Store SOURCE (a file, or - for stdin) under NAME; prints its dataInfo.

    Source first, as in ``cp``, ``aws s3 cp`` and ``deepforge storage get DATAINFO DEST``.
    """
    if str(source) != "-" and not source.is_file():
        hint = ""
        if Path(name).is_file():
            hint = f" (the order is SOURCE NAME: did you mean `deepforge storage put {name} {source}`?)"
        raise click.BadParameter(f"{source} is not a readable file{hint}", param_hint="SOURCE")
    client = _client(backend_id, config_arg)
    if str(source) == "-":
        with _progress(None, quiet, f"put {name}") as progress:
            info = client.put_file_stream(name, sys.stdin.buffer, progress=progress)
    else:
        with _progress(source.stat().st_size, quiet, f"put {name}") as progress:
            info = client.put_file(name, source, progress=progress)
    click.echo(info.dumps())


@storage_group.command("get")
@_backend_options(None)
@click.argument("data_info_arg", metavar="DATAINFO")
@click.argument("dest", type=click.Path(writable=True, allow_dash=True, path_type=Path))
def storage_get(backend_id: str | None, config_arg: str | None, quiet: bool, data_info_arg: str, dest: Path) -> None:
    """Download the artifact of DATAINFO (JSON or @file) to DEST (a path, a directory, or - for stdout).

    Into an existing directory, the file is written inside it under the artifact's base name, as ``cp`` does.

    To a path, the bytes land in a temporary file that is renamed to DEST only once their size and hash
    match the dataInfo; on any failure nothing is left at DEST.  To stdout (-), bytes are written as they
    arrive and verified at the end: on a mismatch the command exits 1 and its last line (on stderr) says how
    many unverified bytes were already written, which the reader must discard.
    """
    data_info = parse_data_info(data_info_arg)
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
    if dest.is_dir():
        dest = dest / _base_name(client, data_info)
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
    data_info = parse_data_info(data_info_arg)
    client = _client(backend_id or data_info.backend, config_arg)
    client.delete_file(data_info)


@storage_group.command("cp")
@_backend_options(None)
@click.argument("data_info_arg", metavar="DATAINFO")
@click.argument("name")
def storage_cp(backend_id: str | None, config_arg: str | None, quiet: bool, data_info_arg: str, name: str) -> None:
    """Copy the artifact of DATAINFO to NAME in the same backend; prints the copy's dataInfo."""
    data_info = parse_data_info(data_info_arg)
    client = _client(backend_id or data_info.backend, config_arg)
    client.check_data_info(data_info)
    with _progress(_size_of(client, data_info), quiet, f"cp {name}") as progress:
        info = client.copy(data_info, name, progress=progress)
    click.echo(info.dumps())


def _client(backend_id: str, config_arg: str | None) -> StorageClient:
    """The client (its constructor registers every secret of its resolved config for redaction)."""
    config = json_object_arg(config_arg, "--config")
    client = storage.get_client(backend_id, config)
    log.debug("storage client %r", client)
    return client


def _base_name(client: StorageClient, data_info: DataInfo) -> str:
    """The last part of the artifact's name (``filename``, or the backend's ``name`` metadata), for ``get DIR``."""
    data = data_info.data
    name = data.get("filename") if isinstance(data, dict) else None
    if not name:
        name = client.get_metadata(data_info).get("name")
    base = Path(str(name or "")).name
    if not base or base in (".", ".."):
        raise click.BadParameter(
            "the dataInfo names no file to write inside a directory: give a file path", param_hint="DEST"
        )
    return base


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
