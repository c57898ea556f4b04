"""The three error shapes of the contract (sciserver-api.md 1, 2.1, 2.5, 3.5, 4.1), and the booleans parser."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Response, jsonify, request


class ServiceError(Exception):
    """A handler failure the server answers as ``{"status":"error","error":<message>}`` with ``status``."""

    def __init__(self, message: str, status: int = 500) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def service_error(exc: ServiceError) -> tuple[Response, int]:
    """FileService and JOBM: 500 (or the mapped status) with ``{"status":"error","error":...}``."""
    return jsonify({"status": "error", "error": exc.message}), exc.status


def spring_error(status: int, error: str, message: str = "") -> tuple[Response, int]:
    """Spring Boot's default error body: 401 on the FileService, 400 on a bad path/query type."""
    body = {
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "status": status,
        "error": error,
        "message": message,
        "path": request.path,
    }
    return jsonify(body), status


def racm_unauthenticated() -> Response:
    """RACM's 401: a body with ``status:"error"`` and a ``WWW-Authenticate: X-Auth-Token`` header."""
    response = jsonify({"status": "error", "error": "Not authenticated. Add valid token as X-Auth-Token header"})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = "X-Auth-Token"
    return response


def login_error(message: str) -> tuple[Response, int]:
    """The login portal's v1 controller maps every exception to 500 with this body."""
    body = {
        "error": {
            "message": message,
            "stackTrace": "org.sciserver.loginportal.LoginPortalException: " + message + "\n\tat ...",
            "time": int(time.time() * 1000),
        }
    }
    return jsonify(body), 500


def query_bool(name: str, default: bool = False) -> bool:
    """Spring parses booleans case-insensitively; SciScript sends ``True``/``False``."""
    raw = request.args.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes", "on", ""):
        return lowered != "" or default
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BadQuery(f"Failed to convert value of type 'java.lang.String' to required type 'boolean'; {raw!r}")


class BadQuery(Exception):
    """A query parameter of the wrong type: Spring answers 400 with its default body."""
