"""Talking to SciServer: login, token reuse, one re-login on 401, and the server's error messages.

Shared by the ``sciserver-files`` storage and the ``sciserver-compute`` compute backends (like ``webgme/`` is
shared by the two ``gme`` backends), so a process logs in once however many clients it makes.

What SciServer's REST contract (docs/sciserver.md; the local server in ``tests/sciserver_contract/``) makes
a client handle:

* Login is ``POST {loginUrl}`` with a Keystone-shaped body; the token comes back in ``X-Subject-Token`` with
  **200**; a wrong password is a **500** whose JSON body carries the reason.
* Tokens live 24 h and cannot be refreshed: a 401 from the FileService or RACM means "log in again".  We
  reuse a token until a 401, log in once more (when a password is known), retry that request once, and fail
  clearly if it is refused again.
* The FileService and RACM report not-found, already-exists and permission problems as **500** with
  ``{"status":"error","error":"..."}``; those are answers, not outages, so only 502/503/504 and connection
  errors are retried.
* Inside a SciServer Compute container the user's token is in ``/home/idies/keystone.token``; a config
  with neither token nor password uses it (``SCISERVER_KEYSTONE_TOKEN_PATH`` overrides the path).
* On a WebGME server, a user links a SciServer account once (``webgme-config/routers/SciServerAuth``, as
  DeepForge's ``/routers/SciServerAuth``); the plugins then fetch that user's token with
  :func:`linked_token` for a config that names the account (``username``) without password or token.

The token is bound to the configured service URLs (:mod:`deepforge_adapters.endpoints`): :meth:`request`
sends it only to URLs under ``loginUrl``, ``fileServiceUrl`` or ``racmUrl`` (no ``..`` segments, which
requests would collapse into another service's path), and never follows a redirect with it (requests
keeps custom headers like ``X-Auth-Token`` across hosts).  Anything else is refused before it is sent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from ..config import Field
from ..endpoints import BadEndpointError, Endpoint, parse_endpoint, require_within
from ..errors import ConfigError, DeepForgeError
from ..http import make_session
from ..secrets import LINK_KEY_ENV as LINK_KEY_ENV
from ..secrets import register_secret

log = logging.getLogger(__name__)

DEFAULT_LOGIN_URL = "https://apps.sciserver.org/login-portal/keystone/v3/tokens"
DEFAULT_FILE_SERVICE_URL = "https://apps.sciserver.org/fileservice/api/"
DEFAULT_RACM_URL = "https://apps.sciserver.org/racm"
KEYSTONE_TOKEN_PATH = "/home/idies/keystone.token"
KEYSTONE_TOKEN_ENV = "SCISERVER_KEYSTONE_TOKEN_PATH"
#: SciServer's 500 is an application answer ("File already exists", "Volume does not exist"); retry only
#: what a proxy or a restarting service produces.
TRANSIENT_STATUSES = (502, 503, 504)
TASK_NAME = "DeepForge.Adapters"
#: Config fields naming SciServer services the token may be sent to (besides ``loginUrl``).
SERVICE_URL_FIELDS = ("fileServiceUrl", "racmUrl")


#: The WebGME route of the one-time account link, under the server URL (webgme-config/routers/SciServerAuth).
LINK_ROUTE = "routers/SciServerAuth"
# The key the link's token route demands is secrets.LINK_KEY_ENV (defined there so that job processes, which
# must never carry it, need not import requests to know its name).
LINK_KEY_HEADER = "X-DeepForge-Link-Key"

#: The config fields both SciServer backends share (DeepForge's names where it had them).  ``username`` is an
#: auth field as in DeepForge: a dialog's choice of account is never stored in the model.
CREDENTIAL_FIELDS = (
    Field(
        "username",
        "Username",
        "SciServer account: one linked to your WebGME account (routers/SciServerAuth), or give its password",
        is_auth=True,
    ),
    Field("password", "Password", "SciServer password; used to get a token when none is given", is_auth=True),
    Field("token", "Token", "SciServer token (X-Auth-Token); valid for 24 h", is_auth=True),
    Field(
        "loginUrl",
        "Login URL",
        "SciServer login portal (Keystone v3 tokens)",
        default=DEFAULT_LOGIN_URL,
        binds_secrets=True,
    ),
    Field(
        "fileServiceUrl",
        "Files API URL",
        "SciServer FileService API root",
        default=DEFAULT_FILE_SERVICE_URL,
        binds_secrets=True,
    ),
)


class SciServerAuthError(DeepForgeError):
    """Login failed, or a token was refused even after logging in again (the adapter adds its name)."""


# One token per (login URL, username, password) for the whole process: every client made from the same
# credentials reuses it, and a re-login by one is seen by all.
_tokens: dict[tuple[str, str, str], str] = {}
_tokens_lock = threading.Lock()


def server_message(response: requests.Response, limit: int = 500) -> str:
    """The reason SciServer gave: ``error`` of the FileService/JOBM body, ``error.message`` of the login
    portal, Spring's ``error: message``, else the start of the body; never more than ``limit`` chars."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    message = ""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping):
            message = str(error.get("message") or "")
        elif isinstance(error, str):
            message = error
            if body.get("message") and "status" in body and body.get("status") != "error":
                message = f"{error}: {body['message']}"  # Spring Boot's default error JSON
    if not message:
        try:
            message = response.text.strip()
        except Exception:  # pragma: no cover - undecodable body
            message = ""
    message = message or (response.reason or "")
    return f"HTTP {response.status_code}: {message[:limit]}" if message else f"HTTP {response.status_code}"


def keystone_token_file() -> Path:
    return Path(os.environ.get(KEYSTONE_TOKEN_ENV) or KEYSTONE_TOKEN_PATH)


class SciServerSession:
    """Authenticated requests to SciServer for one backend instance.

    ``backend`` names the adapter in error messages.  Give ``token``, or ``username`` + ``password`` (a token
    is then obtained on first use), or neither inside a SciServer container (the keystone token file).
    """

    def __init__(
        self,
        backend: str,
        *,
        login_url: str = DEFAULT_LOGIN_URL,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        service_urls: Mapping[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.login_url = login_url.rstrip("/")
        #: Where the token may go: the login portal and the services this backend talks to (``service_urls``
        #: maps config field -> URL); :meth:`request` refuses any other URL (see the module docstring).
        self.bound: tuple[Endpoint, ...] = tuple(
            _bound(backend, name, url) for name, url in {"loginUrl": self.login_url, **(service_urls or {})}.items()
        )
        self.username = username or None
        self._password = password or None
        self._given_token = token or None
        for secret in (password, token):
            register_secret(secret)
        self.http = make_session(retry_statuses=TRANSIENT_STATUSES)
        # Streaming uploads are never replayed by urllib3 (a half-read body cannot be rewound); the caller
        # decides whether a retry is possible.
        self.upload_http = make_session(retries=0)
        self._lock = threading.Lock()
        self._token: str | None = None
        if not (self._given_token or self.can_login or keystone_token_file().is_file()):
            raise SciServerAuthError(
                "no credentials: give 'token', or 'username' and 'password' "
                f"(or run inside SciServer Compute, where {KEYSTONE_TOKEN_PATH} holds one)"
            )

    @classmethod
    def from_config(cls, backend: str, config: Mapping[str, Any]) -> SciServerSession:
        """A session from a backend config holding :data:`CREDENTIAL_FIELDS`."""
        services = {name: config[name] for name in SERVICE_URL_FIELDS if config.get(name)}
        return cls(
            backend,
            login_url=config["loginUrl"],
            username=config["username"],
            password=config["password"],
            token=config["token"],
            service_urls=services,
        )

    def __repr__(self) -> str:
        return f"SciServerSession({self.backend!r}, username={self.username!r}, login_url={self.login_url!r})"

    @property
    def can_login(self) -> bool:
        return bool(self.username and self._password)

    @property
    def _cache_key(self) -> tuple[str, str, str]:
        digest = hashlib.sha256((self._password or "").encode()).hexdigest()
        return (self.login_url, self.username or "", digest)

    # ------------------------------------------------------------------------------------------ tokens
    def token(self) -> str:
        """The current token: the configured one, the process-wide one for these credentials, or a login."""
        with self._lock:
            if self._token is None:
                self._token = self._initial_token()
            return self._token

    def _initial_token(self) -> str:
        if self._given_token:
            return self._given_token
        if self.can_login:
            with _tokens_lock:
                cached = _tokens.get(self._cache_key)
            return cached or self._login()
        return self._read_token_file()

    def _read_token_file(self) -> str:
        path = keystone_token_file()
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise SciServerAuthError(f"cannot read the SciServer token file {path}: {exc}") from None
        if not token:
            raise SciServerAuthError(f"the SciServer token file {path} is empty")
        register_secret(token)
        return token

    def _login(self) -> str:
        """``POST {loginUrl}``: 200 + ``X-Subject-Token``; anything else is a failure with the portal's reason."""
        body = {"auth": {"identity": {"password": {"user": {"name": self.username, "password": self._password}}}}}
        log.info("%s: logging in to SciServer as %s", self.backend, self.username)
        try:
            response = self.http.post(self.login_url, params={"TaskName": f"{TASK_NAME}.Login"}, json=body)
        except requests.RequestException as exc:
            raise SciServerAuthError(
                f"cannot reach the SciServer login portal {self.login_url}: {type(exc).__name__}"
            ) from None
        token = response.headers.get("X-Subject-Token")
        if response.status_code != 200 or not token:
            raise SciServerAuthError(f"SciServer login failed for user {self.username!r}: {server_message(response)}")
        register_secret(token)
        with _tokens_lock:
            _tokens[self._cache_key] = token
        return token

    def _relogin(self, rejected: str) -> bool:
        """After a 401: log in again (or re-read the token file).  False when there is no way to."""
        with self._lock:
            if self._token != rejected:  # another thread already replaced it
                return True
            if self.can_login:
                with _tokens_lock:
                    if _tokens.get(self._cache_key) not in (None, rejected):
                        self._token = _tokens[self._cache_key]
                        return True
                log.info("%s: SciServer rejected the token (expired?); logging in again", self.backend)
                self._token = self._login()
                return True
            if not self._given_token and keystone_token_file().is_file():
                self._token = self._read_token_file()
                return self._token != rejected
            return False

    def whoami(self) -> str:
        """The username the token belongs to (``GET {loginUrl}/{token}``), for token-only configs."""
        if self.username:
            return self.username
        token = self.token()
        try:
            response = self.http.get(f"{self.login_url}/{quote(token, safe='')}", params={"TaskName": TASK_NAME})
        except requests.RequestException as exc:  # the URL holds the token: never let it into a message
            raise SciServerAuthError(
                f"cannot reach the SciServer login portal to validate the token: {type(exc).__name__}"
            ) from None
        if response.status_code != 200:
            raise SciServerAuthError(f"SciServer rejected the token: {server_message(response)}")
        try:
            self.username = str(response.json()["token"]["user"]["name"])
        except (ValueError, KeyError, TypeError):
            raise SciServerAuthError(f"unexpected token document from {self.login_url}") from None
        return self.username

    # ---------------------------------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        rewind: Any = None,
        upload: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """One authenticated request, retried once after a re-login if SciServer answers 401.

        ``what`` describes the call for error messages ("upload 'a/b'").  For an upload, ``rewind`` is a
        callable that resets the body for the retry, or ``None`` when the body cannot be replayed (then a 401
        is reported, asking for a new attempt).  Connection failures raise :class:`requests.RequestException`
        with the URL stripped from the message.
        """
        require_within(self.backend, f"{what}: the URL", url, self.bound)
        kwargs.setdefault("allow_redirects", False)  # requests would carry X-Auth-Token to the redirect's host
        session = self.upload_http if upload else self.http
        query = {"TaskName": TASK_NAME, **(params or {})}
        for attempt in (1, 2):
            token = self.token()
            headers = {**kwargs.pop("headers", {}), "X-Auth-Token": token}
            try:
                response = session.request(method, url, params=query, headers=headers, **kwargs)
            except requests.RequestException as exc:
                raise requests.ConnectionError(
                    f"{what}: cannot reach SciServer at {_origin(url)}: {type(exc).__name__}"
                ) from None
            if response.status_code != 401:
                return response
            response.close()
            if attempt == 2:
                break
            relogged = self._relogin(token)
            if upload and rewind is None:
                # The next call gets the fresh token; this body is gone.
                raise SciServerAuthError(
                    f"{what}: SciServer rejected the token (HTTP 401) after the upload started; "
                    "the stream cannot be replayed, retry the upload"
                )
            if not relogged:
                raise SciServerAuthError(
                    f"{what}: SciServer rejected the token (HTTP 401: expired or invalid) and "
                    "no password is configured to log in again"
                )
            if rewind is not None:
                kwargs["data"] = rewind()
            kwargs["headers"] = headers
        raise SciServerAuthError(f"{what}: SciServer rejected the token (HTTP 401) even after logging in again")


def linked_token(
    backend: str,
    server_url: str,
    username: str,
    *,
    login_url: str,
    webgme_token: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The token of the SciServer account ``username`` linked to the WebGME user of ``webgme_token`` (the
    guest account without one) on the WebGME server at ``server_url``.

    Only the server's own processes can ask (they hold ``$DEEPFORGE_SCISERVER_LINK_KEY``).  The token is
    registered for redaction at once.  :class:`SciServerAuthError` when no such account is linked (or the
    link expired), when it was linked on another SciServer than ``login_url``, or when the server refuses.
    """
    environ = os.environ if environ is None else environ
    key = environ.get(LINK_KEY_ENV)
    if not key:
        raise SciServerAuthError(
            f"SciServer account {username!r}: no password or token given, and no account link to ask "
            f"(${LINK_KEY_ENV} is not set: this does not run inside a WebGME server with routers/SciServerAuth)"
        )
    headers = {LINK_KEY_HEADER: key}
    if webgme_token:
        headers["Authorization"] = f"Bearer {webgme_token}"
    url = f"{server_url.rstrip('/')}/{LINK_ROUTE}/{quote(username, safe='')}/token"
    try:
        response = make_session(retries=2).get(url, headers=headers, allow_redirects=False)
    except requests.RequestException as exc:
        raise SciServerAuthError(
            f"cannot reach the SciServer account link at {_origin(url)}: {type(exc).__name__}"
        ) from None
    if response.status_code != 200:
        reason = server_message(response)
        if response.status_code == 404:
            raise SciServerAuthError(
                f"no SciServer account {username!r} is linked to your WebGME account (or its 24 h link expired): "
                f"link it once (POST {server_url.rstrip('/')}/{LINK_ROUTE}/login, docs/sciserver.md), "
                "or give its password"
            )
        raise SciServerAuthError(f"the SciServer account link refused to hand over {username!r}'s token: {reason}")
    try:
        body = response.json()
        token, linked_at = str(body["token"]), str(body["loginUrl"])
    except (ValueError, KeyError, TypeError):
        raise SciServerAuthError(f"unexpected answer from the SciServer account link at {_origin(url)}") from None
    register_secret(token)
    if linked_at.rstrip("/") != login_url.rstrip("/"):
        raise SciServerAuthError(
            f"SciServer account {username!r} was linked on {linked_at}, but {backend} logs in at {login_url}: "
            "its token is not sent elsewhere"
        )
    return token


def _bound(backend: str, field: str, url: str) -> Endpoint:
    """A configured service URL as an :class:`Endpoint`; a malformed one is a :class:`ConfigError` naming ``field``."""
    try:
        endpoint = parse_endpoint(url)
    except BadEndpointError as exc:
        raise ConfigError(backend, field, f"must be a plain http(s) URL: {exc}") from None
    return endpoint


def _origin(url: str) -> str:
    """Scheme, host and port of ``url``: enough to say where, without paths that might hold a token."""
    parts = url.split("/")
    return "/".join(parts[:3]) if len(parts) >= 3 else url
