"""What the blob and executor clients share: auth headers, the session, error translation, safe POST retries.

Retry policy (the reason this module exists):

* GET/HEAD are retried by the session itself (``http.make_session``): connect errors, read errors, 5xx.
* Every POST is retried by the session on *connect* errors only (urllib3 never retries a non-idempotent
  method once the request may have reached the server), so a streamed body is never replayed half-consumed.
* POSTs the server treats idempotently *and* whose body is bytes we still hold (``createMetadata``: content
  addressed; executor ``update``/``output``/``cancel``: overwrite by key) are additionally retried here on
  5xx and read errors via :func:`request_with_replay`.  ``POST /worker`` is not: it claims jobs, and a
  replay after a lost answer would orphan them.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import requests

from ..errors import WebGMEError
from ..http import DEFAULT_BACKOFF, DEFAULT_RETRIES, RETRY_STATUSES, describe_response, make_session

log = logging.getLogger(__name__)

#: Where a WebGME server is looked for when no host is configured: ``$DEEPFORGE_HOST``, else loopback:8888.
HOST_ENV = "DEEPFORGE_HOST"
DEFAULT_HOST = "http://127.0.0.1:8888"


def auth_headers(
    api_token: str | None = None, webgme_token: str | None = None, nonce: str | None = None
) -> dict[str, str]:
    """WebGME's auth headers: ``x-api-token`` (an access token), else ``Authorization: Bearer`` (a JWT).

    Like WebGME's own BlobClient, the API token wins when both are given; the executor nonce is independent.
    """
    headers: dict[str, str] = {}
    if api_token:
        headers["x-api-token"] = api_token
    elif webgme_token:
        headers["Authorization"] = f"Bearer {webgme_token}"
    if nonce:
        headers["x-executor-nonce"] = nonce
    return headers


def session_with(headers: Mapping[str, str], session: requests.Session | None) -> requests.Session:
    """The given session (auth headers added) or a new one from the project's session factory."""
    if session is None:
        return make_session(headers=headers)
    session.headers.update(headers)
    return session


def check(response: requests.Response, what: str) -> requests.Response:
    """Raise :class:`WebGMEError` naming the endpoint unless the answer is 2xx.

    Redirects are never followed (every call passes ``allow_redirects=False``): WebGME answers an
    unauthenticated REST call with a 302 to its login page, which must read as "not authenticated", not as
    an HTML page where JSON was expected.
    """
    if 300 <= response.status_code < 400:
        where = response.headers.get("Location", "?")
        raise WebGMEError(
            f"{what}: HTTP {response.status_code} redirect to {where}: not authenticated "
            "(configure an API token, or a WebGME token)",
            response.status_code,
        )
    if response.status_code >= 300:
        raise WebGMEError(f"{what}: {describe_response(response)}", response.status_code)
    return response


def request_with_replay(
    send: Callable[[], requests.Response],
    what: str,
    retries: int = DEFAULT_RETRIES,
    backoff: float = DEFAULT_BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """Call ``send`` (which must rebuild its body each time) again on 5xx or a broken connection."""
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            response = send()
        except (requests.ConnectionError, requests.Timeout) as exc:
            if last:
                raise WebGMEError(f"{what}: {type(exc).__name__}: {exc}") from None
            log.warning("%s: %s; retrying (%d/%d)", what, type(exc).__name__, attempt + 1, retries)
        else:
            if response.status_code not in RETRY_STATUSES or last:
                return response
            log.warning("%s: HTTP %d; retrying (%d/%d)", what, response.status_code, attempt + 1, retries)
        sleep(backoff * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def json_body(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise WebGMEError(f"{what}: answer is not JSON: {describe_response(response)}", response.status_code) from None


def quote_segment(part: str) -> str:
    """``part`` as ONE URL path segment: ``/`` and ``%`` are encoded, and ``.``/``..`` too (no dot segments)."""
    quoted = urllib.parse.quote(part, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted
