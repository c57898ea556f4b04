"""``deepforge secrets keygen|rotate``: the deployment keyring that seals secret config fields in job bundles."""

from __future__ import annotations

import os

import click

from .. import secrets
from ..errors import SecretsError


@click.group("secrets")
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
