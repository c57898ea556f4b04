"""The one ``requests.Session`` factory: every HTTP call in this library goes through a session made here.

It gives each session a default timeout (requests has none, and a hung socket must never hang a worker),
retries with exponential backoff on connection errors and 5xx responses (never on 4xx: those are the
caller's mistake and retrying hides it), and the auth headers of the backend on *every* request (DeepForge
forgot them on downloads).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)


class _RetryToDebug(logging.Filter):
    """urllib3 warns on every retry ("Retrying (Retry(total=3...)) after connection broken by ..."), so a
    down server printed a screen of warnings before the one error that matters: they go to our debug log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and str(record.msg).startswith("Retrying"):
            log.debug("urllib3: %s", record.getMessage())
            return False
        return True


_RETRY_FILTER = _RetryToDebug()
if _RETRY_FILTER not in logging.getLogger("urllib3.connectionpool").filters:
    logging.getLogger("urllib3.connectionpool").addFilter(_RETRY_FILTER)

DEFAULT_TIMEOUT = (10.0, 120.0)  # (connect, read) seconds
DEFAULT_RETRIES = 4
DEFAULT_BACKOFF = 0.5
RETRY_STATUSES = (500, 502, 503, 504)
#: Methods whose retry cannot duplicate work.  POST is retried only where the server makes it idempotent
#: (blob createFile is content-addressed; executor create is keyed by hash) and the body is replayable.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


#: Bytes urllib3 reads from a file-like request body per send (its default, 16 KiB, made a 1 GiB upload
#: 65,536 Python-level reads and sends: a third of curl's speed against the SciServer contract server).
SEND_BLOCK = 1024 * 1024


class _BlockAdapter(HTTPAdapter):
    """An adapter whose connections send file-like bodies in :data:`SEND_BLOCK` blocks."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", SEND_BLOCK)
        super().init_poolmanager(*args, **kwargs)


class TimeoutSession(requests.Session):
    """A session whose requests get ``timeout`` unless the call names its own."""

    def __init__(self, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


def make_session(
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    retry_methods: Collection[str] = IDEMPOTENT_METHODS,
    pool_size: int = 10,
    retry_statuses: Collection[int] = RETRY_STATUSES,
) -> TimeoutSession:
    """Build a session with timeouts, retries and auth headers.

    ``retries`` counts attempts after the first; connect errors, read errors and ``RETRY_STATUSES`` are
    retried with exponential backoff (``backoff * 2**n`` seconds), honouring ``Retry-After``.
    ``retry_statuses`` narrows that list for services whose 500 is a definite answer (SciServer answers
    "not found" and "already exists" with 500s; retrying those only delays the error).
    """
    session = TimeoutSession(timeout)
    retry = Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff,
        status_forcelist=frozenset(retry_statuses),
        allowed_methods=frozenset(m.upper() for m in retry_methods),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    adapter = _BlockAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if headers:
        session.headers.update({k: v for k, v in headers.items() if v})
    return session


def describe_response(response: requests.Response, limit: int = 300) -> str:
    """``"HTTP 404 Not Found: <start of body>"`` for error messages; bodies are truncated, never secrets."""
    body = ""
    try:
        body = response.text[:limit].strip()
    except Exception:  # pragma: no cover - undecodable body
        body = "<undecodable body>"
    reason = response.reason or ""
    return f"HTTP {response.status_code} {reason}".rstrip() + (f": {body}" if body else "")


def describe_connection_error(exc: BaseException) -> str:
    """Why a connection failed, in words: ``"[Errno 111] Connection refused"`` rather than requests'
    ``HTTPConnectionPool(host=..., port=...): Max retries exceeded with url: ... (Caused by ...)``."""
    reason: Any = exc
    while True:
        inner = getattr(reason, "reason", None)  # MaxRetryError -> NewConnectionError / ProtocolError ...
        if inner is None and reason.args and isinstance(reason.args[0], BaseException):
            inner = reason.args[0]  # requests.ConnectionError(MaxRetryError(...))
        if not isinstance(inner, BaseException) or inner is reason:
            break
        reason = inner
    text = str(reason)
    # "<urllib3.connection.HTTPConnection object at 0x..>: Failed ..." or "HTTPConnection(host=..): Failed ..."
    text = re.sub(r"^(<[^>]*>|\w+\([^)]*\)): ", "", text)
    return text or type(reason).__name__
