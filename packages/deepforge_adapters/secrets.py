"""Sealing secret config fields for transport inside job bundles, and keeping them out of logs.

A bundle is a blob anyone with its hash can read, so secrets travel sealed with Fernet (AES-128-CBC +
HMAC-SHA256, from ``cryptography``): the plugin seals with the deployment key, the runner on a worker
unseals with the same key from its own environment or config file.  The key never travels in a bundle.

Key lookup, in order: ``DEEPFORGE_SECRET_KEY`` (the urlsafe-base64 Fernet key itself), then the file named
by ``DEEPFORGE_SECRET_KEY_FILE``.  ``deepforge secrets keygen`` makes one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from .errors import SecretsError

KEY_ENV = "DEEPFORGE_SECRET_KEY"
KEY_FILE_ENV = "DEEPFORGE_SECRET_KEY_FILE"
SEALED = "$sealed"
REDACTED = "[REDACTED]"


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def load_key(environ: Mapping[str, str] | None = None) -> str:
    """The deployment key, or :class:`SecretsError` saying how to provide one."""
    environ = os.environ if environ is None else environ
    key = environ.get(KEY_ENV, "").strip()
    if not key and environ.get(KEY_FILE_ENV):
        path = Path(environ[KEY_FILE_ENV])
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise SecretsError(f"cannot read secret key file {path} ({KEY_FILE_ENV}): {exc.strerror}") from None
    if not key:
        raise SecretsError(
            f"no secret key: set {KEY_ENV} or {KEY_FILE_ENV} (create one with `deepforge secrets keygen`)"
        )
    return key


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode("ascii") if isinstance(key, str) else key)
    except (ValueError, TypeError):
        raise SecretsError("the secret key is not a valid Fernet key (32 url-safe base64 bytes)") from None


def seal(config: Mapping[str, Any], secret_names: Iterable[str], key: str) -> dict[str, Any]:
    """A copy of ``config`` where each present secret field is replaced by ``{"$sealed": token}``."""
    f = _fernet(key)
    names = set(secret_names)
    sealed: dict[str, Any] = {}
    for name, value in config.items():
        if name in names and value not in (None, ""):
            sealed[name] = {SEALED: f.encrypt(str(value).encode("utf-8")).decode("ascii")}
        else:
            sealed[name] = value
    return sealed


def is_sealed(value: Any) -> bool:
    return isinstance(value, Mapping) and set(value) == {SEALED}


def unseal(config: Mapping[str, Any], key: str | None = None) -> dict[str, Any]:
    """Open every sealed field of ``config``; plain fields pass through.  Registers values for redaction."""
    if not any(is_sealed(v) for v in config.values()):
        return dict(config)
    f = _fernet(key if key is not None else load_key())
    opened: dict[str, Any] = {}
    for name, value in config.items():
        if is_sealed(value):
            try:
                plain = f.decrypt(value[SEALED].encode("ascii")).decode("utf-8")
            except InvalidToken:
                raise SecretsError(
                    f"cannot unseal config field {name!r}: wrong secret key or tampered bundle"
                ) from None
            register_secret(plain)
            opened[name] = plain
        else:
            opened[name] = value
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
