"""Credentials are bound to their endpoint: the one comparison of "is this the server they were configured for?".

**Why this module exists.**  A dataInfo is data, not configuration: it comes from a model, a job bundle or a
job's results, which other users (or a job's own code) write.  Before this check an ``s3`` dataInfo whose
``endpoint`` named an attacker's server made the reader sign requests for it with the reader's access key id
and session token (and ``copy`` stored the attacker's bytes in the real bucket); a ``sciserver-files``
dataInfo could walk out of the FileService with ``..`` segments and hand the user's token to other APIs.
The rule now: a backend sends its credentials **only** to the endpoint they were configured for.  Anything
a dataInfo (or a URL built from one) names is compared with the configured endpoint *before any request*, and
refused with :class:`EndpointMismatchError` naming both when it differs.

Every backend (``s3``, ``sciserver-files``, the SciServer session shared with ``sciserver-compute``) calls
these functions instead of comparing strings itself: URL comparison is easy to get subtly wrong (case,
default ports, trailing slashes, ``http://real-host@evil/``, ``%2e%2e`` and ``..`` segments that requests and
urllib3 collapse after we looked), and one careful copy is easier to keep right than three.

What counts as the same endpoint: the same scheme, host (lower-cased, IDNA) and port (default ports filled
in) and the same path (trailing slash ignored); with ``subdomain`` (S3 virtual-host addressing) also
``<subdomain>.<host>``.  A URL with user info, a query or fragment, a backslash, whitespace or control
characters, or ``.``/``..`` path segments is never an endpoint: it is refused outright, and its user info is
never echoed in the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import DeepForgeError

DEFAULT_PORTS = {"http": 80, "https": 443}
_FORBIDDEN = frozenset("\\ \t\r\n\x00") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
_DISPLAY_LIMIT = 200


class EndpointMismatchError(DeepForgeError, PermissionError):
    """Credentials were about to go to another endpoint than the one they are bound to; nothing was sent.

    ``backend`` is the adapter, ``named`` what the dataInfo (or URL) named, ``configured`` where this client's
    credentials may go (both as safe display strings: no user info).
    """

    def __init__(self, backend: str, message: str, named: str, configured: str) -> None:
        self.backend = backend
        self.named = named
        self.configured = configured
        super().__init__(f"{backend}: {message}")


class BadEndpointError(ValueError):
    """A string that is not an acceptable endpoint URL; ``reason`` says why, ``shown`` is safe to print."""

    def __init__(self, reason: str, shown: str) -> None:
        self.reason = reason
        self.shown = shown
        super().__init__(f"{shown}: {reason}")


@dataclass(frozen=True)
class Endpoint:
    """A normalised ``scheme://host:port/path`` (no user info, query or fragment)."""

    scheme: str
    host: str
    port: int
    path: str  # "" or "/a/b": no trailing slash

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        netloc = host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"

    def same_origin(self, other: Endpoint, subdomain: str | None = None) -> bool:
        """Same scheme and port, and the same host (or ``<subdomain>.<host>`` when ``subdomain`` is given)."""
        if (self.scheme, self.port) != (other.scheme, other.port):
            return False
        return other.host == self.host or (bool(subdomain) and other.host == f"{subdomain}.{self.host}".lower())

    def same(self, other: Endpoint, subdomain: str | None = None) -> bool:
        """The same endpoint: same origin (see :meth:`same_origin`) and the same path."""
        return self.same_origin(other, subdomain) and self.path == other.path

    def contains(self, other: Endpoint, any_subdomain: bool = False) -> bool:
        """``other`` is this endpoint or a path below it (on a subdomain of the host if ``any_subdomain``)."""
        if (self.scheme, self.port) != (other.scheme, other.port):
            return False
        if other.host != self.host and not (any_subdomain and other.host.endswith("." + self.host)):
            return False
        return other.path == self.path or other.path.startswith(self.path + "/") or not self.path


def display(url: object) -> str:
    """A URL as it may appear in a message: user info dropped, control characters escaped, length capped."""
    if not isinstance(url, str):
        return repr(url)[:_DISPLAY_LIMIT]
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        authority, slash, tail = rest.partition("/")
        if "@" in authority:
            authority = authority.rpartition("@")[2]
        text = f"{scheme}://{authority}{slash}{tail}"
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= _DISPLAY_LIMIT else shown[:_DISPLAY_LIMIT] + "..."


def _split(url: str, *, allow_query: bool) -> tuple[Endpoint, str]:
    """``(endpoint with the URL's full path, raw path)``; raises :class:`BadEndpointError`."""
    shown = display(url)
    if not isinstance(url, str) or not url.strip():
        raise BadEndpointError("is empty or not a string", shown)
    text = url.strip()
    if any(c in _FORBIDDEN for c in text):
        raise BadEndpointError("contains a backslash, whitespace or a control character", shown)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise BadEndpointError(f"is not a valid URL ({exc})", shown) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadEndpointError("is not an http(s) URL", shown)
    if "@" in parts.netloc:
        raise BadEndpointError("carries user info ('...@' before the host)", shown)
    if not allow_query and (parts.query or parts.fragment or text.endswith(("?", "#"))):
        raise BadEndpointError("has a query or fragment", shown)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise BadEndpointError("has no host", shown)
    try:
        host = host.encode("idna").decode("ascii").lower() if not host.isascii() else host.lower()
    except UnicodeError:
        raise BadEndpointError("has a host that is not a valid domain name", shown) from None
    segments = parts.path.split("/")
    if any(unquote(s) in (".", "..") for s in segments):
        raise BadEndpointError("has '.' or '..' path segments", shown)
    path = "/".join(segments).rstrip("/")
    return Endpoint(scheme, host, port if port is not None else DEFAULT_PORTS[scheme], path), parts.path


def parse_endpoint(url: str) -> Endpoint:
    """Parse and normalise an endpoint URL; :class:`BadEndpointError` if it is not a plain http(s) URL."""
    return _split(url, allow_query=False)[0]


def refusal(backend: str, what: str, named: object, configured: Endpoint, reason: str) -> EndpointMismatchError:
    """The :class:`EndpointMismatchError` for ``named`` (refused for ``reason``), naming ``configured`` too."""
    shown = display(named)
    return EndpointMismatchError(
        backend,
        f"{what} {shown} {reason}: this client's credentials are bound to {configured}; refused before any "
        "request (credentials only go to the endpoint they were configured for)",
        shown,
        str(configured),
    )


def require_endpoint(
    backend: str, what: str, named: object, allowed: Sequence[Endpoint], *, subdomain: str | None = None
) -> Endpoint:
    """The entry of ``allowed`` that ``named`` (a URL from a dataInfo) is; else :class:`EndpointMismatchError`.

    ``allowed[0]`` is the configured endpoint (named in the message); further entries are other spellings of
    the same server (AWS's global and regional S3 hosts).  ``subdomain`` accepts ``<subdomain>.<host>`` too
    (S3 virtual-host addressing, where the bucket is the first label).
    """
    try:
        endpoint = parse_endpoint(named)  # type: ignore[arg-type]  # non-strings are refused inside
    except BadEndpointError as exc:
        raise refusal(backend, what, named, allowed[0], exc.reason) from None
    for candidate in allowed:
        if candidate.same(endpoint, subdomain):
            return candidate
    raise refusal(backend, what, named, allowed[0], "is another endpoint")


def require_within(
    backend: str, what: str, url: str, roots: Sequence[Endpoint], *, any_subdomain: bool = False
) -> None:
    """Refuse to send credentials to ``url`` (a request URL) unless it lies under one of ``roots``.

    Used just before a request goes out, as the last line of defence: a URL built from a dataInfo that
    escaped its root (``..`` segments that requests would collapse, another host) never gets the token.
    """
    shown = url.partition("?")[0] if isinstance(url, str) else url  # a query may hold a signature: never shown
    try:
        endpoint = _split(url, allow_query=True)[0]
    except BadEndpointError as exc:
        raise refusal(backend, what, shown, roots[0], exc.reason) from None
    if not any(root.contains(endpoint, any_subdomain) for root in roots):
        raise refusal(backend, what, shown, roots[0], "is outside " + ", ".join(str(r) for r in roots))
