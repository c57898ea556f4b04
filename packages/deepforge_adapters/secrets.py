"""Sealing secret config fields for transport inside job bundles, and keeping them out of logs.

A bundle is a blob anyone with its hash can read, so secrets travel sealed with AES-256-GCM (an AEAD, from
``cryptography``) under the deployment keyring: the plugin seals, whoever holds the key on the worker side
(the worker daemon, or local compute's submitter) opens them and hands the runner only that job's plaintext.
The key never travels in a bundle.

**A sealed value is bound to its context.**  The associated data of each value is its backend id, its field
name, the values of the fields that decide where the secret is sent (declared once per backend with
``Field(binds_secrets=True)``: an S3 ``endpoint``, a gme ``host``, SciServer login/service URLs) and the
project it was entered for.  A sealed value pasted into another field, another backend, a bundle whose
endpoint was changed or a bundle of another project does not open; :func:`unseal` says which field.

**Keys have ids.**  The envelope is ``{"$sealed": "v2.<key id>.<base64url(nonce | ciphertext+tag)>"}``; the
keyring (the key file, or the value of ``DEEPFORGE_SECRET_KEY``) holds several keys, one ``<id>:<key>``
entry per line (or separated by whitespace or commas), the FIRST of which seals; every key opens what was
sealed under its id.  ``deepforge secrets keygen`` makes a keyring, ``deepforge secrets rotate`` puts a new
sealing key in front and keeps the old ones for reading (``--drop ID`` removes one).

Values sealed by earlier versions (Fernet tokens, ``gAAAA...``) are refused with a message saying so: they
were not bound to any context, so they are re-entered rather than trusted.

Key lookup, in order: ``DEEPFORGE_SECRET_KEY`` (the keyring text itself), then the file named by
``DEEPFORGE_SECRET_KEY_FILE``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets as _random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SecretsError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from .config import ConfigSchema

KEY_ENV = "DEEPFORGE_SECRET_KEY"
KEY_FILE_ENV = "DEEPFORGE_SECRET_KEY_FILE"
#: The key of the SciServer account link's token route (webgme-config/routers/SciServerAuth): the WebGME server
#: sets it, its plugin processes inherit it, no job process may carry it (jobs.credentials.KEY_VARIABLES).
LINK_KEY_ENV = "DEEPFORGE_SCISERVER_LINK_KEY"
SEALED = "$sealed"
REDACTED = "[REDACTED]"
#: Envelope version prefix of an AES-256-GCM sealed value.
VERSION = "v2"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_FERNET_PREFIX = "gAAAA"


def _aesgcm(key: bytes) -> AESGCM:
    """AES-256-GCM under ``key``, cryptography imported on first use: every job process (supervisor, runner)
    imports this module for its redaction alone, and cryptography's bindings were ~25 ms of CPU of each one's
    start (bench/scale_pipelines.py, ``python -X importtime``)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ------------------------------------------------------------------------------------------------ keyring


@dataclass(frozen=True)
class Keyring:
    """Named AES-256 keys; the first one seals, all of them open."""

    keys: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise SecretsError("the keyring holds no key")
        ids = [kid for kid, _ in self.keys]
        if len(set(ids)) != len(ids):
            raise SecretsError(f"the keyring has duplicate key ids: {', '.join(ids)}")
        for kid, raw in self.keys:
            if not _KEY_ID.match(kid):
                raise SecretsError(f"key id {kid!r} is not valid (1-32 of A-Z a-z 0-9 _ -)")
            if len(raw) != KEY_BYTES:
                raise SecretsError(f"key {kid!r} is {len(raw)} bytes; AES-256 keys are {KEY_BYTES}")

    @property
    def sealing_id(self) -> str:
        return self.keys[0][0]

    @property
    def ids(self) -> list[str]:
        return [kid for kid, _ in self.keys]

    def get(self, kid: str) -> bytes | None:
        return next((raw for k, raw in self.keys if k == kid), None)

    @staticmethod
    def new_id() -> str:
        return "k" + _random.token_hex(4)

    @classmethod
    def generate(cls) -> Keyring:
        return cls(((cls.new_id(), os.urandom(KEY_BYTES)),))

    def rotated(self, drop: Iterable[str] = ()) -> Keyring:
        """A new sealing key in front, the current keys kept for reading except those in ``drop``."""
        dropping = set(drop)
        unknown = dropping - set(self.ids)
        if unknown:
            raise SecretsError(
                f"cannot drop key(s) {', '.join(sorted(unknown))}: not in the keyring ({', '.join(self.ids)})"
            )
        fresh = (self.new_id(), os.urandom(KEY_BYTES))
        return Keyring((fresh, *((k, raw) for k, raw in self.keys if k not in dropping)))

    def dumps(self) -> str:
        lines = ["# deepforge secret keyring: the first key seals, every key opens values sealed under its id"]
        lines += [f"{kid}:{_b64e(raw)}" for kid, raw in self.keys]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        """Read ``<id>:<base64url key>`` entries (lines, whitespace or commas; ``#`` starts a comment)."""
        entries: list[tuple[str, bytes]] = []
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            for item in re.split(r"[\s,]+", line.strip()):
                if not item:
                    continue
                if ":" not in item:
                    if len(item) == 44 and item.endswith("="):
                        raise SecretsError(
                            f"{source} holds an old Fernet key; make a keyring with `deepforge secrets keygen` "
                            "(values sealed under the old key must be entered again)"
                        )
                    raise SecretsError(f"{source}: expected '<key id>:<base64url key>' entries")
                kid, _, encoded = item.partition(":")
                try:
                    raw = _b64d(encoded)
                except (binascii.Error, ValueError):
                    raise SecretsError(f"{source}: key {kid!r} is not valid base64url") from None
                entries.append((kid, raw))
        if not entries:
            raise SecretsError(f"{source} holds no key")
        try:
            return cls(tuple(entries))
        except SecretsError as exc:
            raise SecretsError(f"{source}: {exc}") from None


def generate_key() -> str:
    """A new keyring with one key, as text (what ``deepforge secrets keygen`` prints)."""
    return Keyring.generate().dumps()


def load_keyring(environ: Mapping[str, str] | None = None) -> Keyring:
    """The deployment keyring, or :class:`SecretsError` saying how to provide one."""
    environ = os.environ if environ is None else environ
    text = environ.get(KEY_ENV, "").strip()
    source = KEY_ENV
    if not text and environ.get(KEY_FILE_ENV):
        path = Path(environ[KEY_FILE_ENV])
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise SecretsError(f"cannot read secret key file {path} ({KEY_FILE_ENV}): {exc.strerror}") from None
        source = f"secret key file {path}"
    if not text:
        raise SecretsError(
            f"no secret key: set {KEY_ENV} or {KEY_FILE_ENV} (create one with `deepforge secrets keygen`)"
        )
    return Keyring.parse(text, source)


def as_keyring(key: Keyring | str | None, environ: Mapping[str, str] | None = None) -> Keyring:
    """``key`` itself, the keyring in the text ``key``, or (``None``) the deployment keyring."""
    if key is None:
        return load_keyring(environ)
    if isinstance(key, Keyring):
        return key
    return Keyring.parse(key, "the secret key")


def write_keyring(path: str | os.PathLike[str], keyring: Keyring, *, overwrite: bool) -> None:
    """Write ``keyring`` to ``path`` with mode 0600, atomically (rename over the old file)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise SecretsError(f"{path} exists; not overwriting it (use `deepforge secrets rotate {path}`)")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(keyring.dumps())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------ context


def binding(schema: ConfigSchema, config: Mapping[str, Any]) -> dict[str, str]:
    """The values of ``schema``'s ``binds_secrets`` fields in ``config`` (defaults applied, normalized)."""
    out: dict[str, str] = {}
    for f in schema.fields:
        if not f.binds_secrets:
            continue
        value = config.get(f.name)
        if is_sealed(value):
            raise SecretsError(
                f"config field {f.name!r} of {schema.backend} decides where secrets are sent; it cannot be sealed"
            )
        if value in (None, ""):
            value = f.default
        out[f.name] = "" if value is None else str(value).strip().rstrip("/")
    return out


def _aad(backend: str, name: str, project: str, bind: Mapping[str, str]) -> bytes:
    context = {"v": VERSION, "backend": backend, "field": name, "project": project, "bind": dict(bind)}
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _describe(schema: ConfigSchema, name: str, bind: Mapping[str, str], project: str) -> str:
    where = ", ".join(f"{k}={v!r}" for k, v in bind.items())
    return (
        "it was sealed for another field, backend"
        + (f", destination ({where})" if where else "")
        + f" or project (this bundle: field {name!r} of {schema.backend}, project {project!r}), "
        "or the bundle was tampered with"
    )


def seal(
    config: Mapping[str, Any], schema: ConfigSchema, key: Keyring | str | None = None, *, project: str = ""
) -> dict[str, Any]:
    """A copy of ``config`` where each present secret field of ``schema`` is ``{"$sealed": token}``.

    Each token is bound to ``schema.backend``, its field name, ``project`` and the ``binds_secrets`` fields
    of ``config``; ``key`` defaults to the deployment keyring.  Already sealed values are kept as they are.
    """
    names = schema.secret_names()
    todo = [n for n, v in config.items() if n in names and v not in (None, "") and not is_sealed(v)]
    if not todo:
        return dict(config)
    keyring = as_keyring(key)
    kid = keyring.sealing_id
    aes = _aesgcm(keyring.keys[0][1])
    bind = binding(schema, config)
    sealed = dict(config)
    for name in todo:
        nonce = os.urandom(NONCE_BYTES)
        ct = aes.encrypt(nonce, str(config[name]).encode("utf-8"), _aad(schema.backend, name, project, bind))
        sealed[name] = {SEALED: f"{VERSION}.{kid}.{_b64e(nonce + ct)}"}
    return sealed


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {SEALED}


def sealed_key_id(value: Any) -> str | None:
    """The key id of a sealed value (None for a value sealed in another format)."""
    if not is_sealed(value) or not isinstance(value[SEALED], str):
        return None
    parts = value[SEALED].split(".")
    return parts[1] if len(parts) == 3 and parts[0] == VERSION else None


def unseal(
    config: Mapping[str, Any], schema: ConfigSchema, key: Keyring | str | None = None, *, project: str = ""
) -> dict[str, Any]:
    """Open every sealed field of ``config`` in its context; plain fields pass through.

    Raises :class:`SecretsError` naming the field when a value does not open: sealed for another field,
    backend, destination or project, an unknown key id, a tampered value, or the old Fernet format.
    Opened values are registered for redaction.  Without sealed fields no key is needed.
    """
    if not any(is_sealed(v) for v in config.values()):
        return dict(config)
    from cryptography.exceptions import InvalidTag

    keyring = as_keyring(key)
    bind = binding(schema, config)
    opened: dict[str, Any] = {}
    for name, value in config.items():
        if not is_sealed(value):
            opened[name] = value
            continue
        what = f"cannot unseal config field {name!r} of {schema.backend}"
        token = value[SEALED]
        if not isinstance(token, str):
            raise SecretsError(f"{what}: the sealed value is not a string")
        if token.startswith(_FERNET_PREFIX):
            raise SecretsError(
                f"{what}: it was sealed in the old Fernet format, which is no longer accepted (it was not bound "
                "to a field, destination or project); enter the secret again and rebuild the job"
            )
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise SecretsError(f"{what}: not a {VERSION} sealed value (tampered bundle?)")
        raw = keyring.get(parts[1])
        if raw is None:
            raise SecretsError(
                f"{what}: it was sealed under key {parts[1]!r}, which is not in the keyring "
                f"(keys: {', '.join(keyring.ids)}): wrong secret key, or the key was dropped"
            )
        try:
            blob = _b64d(parts[2])
            plain = _aesgcm(raw).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(schema.backend, name, project, bind)
            )
            text = plain.decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError):
            raise SecretsError(f"{what}: {_describe(schema, name, bind, project)}") from None
        register_secret(text)
        opened[name] = text
    return opened


# --------------------------------------------------------------------------------------------- redaction

_known_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a secret value so :class:`RedactingFilter` scrubs it from every log record."""
    if value and len(value) >= 4:
        with _lock:
            _known_secrets.add(value)


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Replaces any registered secret in a log record's rendered message (installed by CLIs and daemons)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (the root logger by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
