"""The contract server's WSGI app: login portal routes, the FileService and RACM blueprints, test controls.

Layout follows the helm chart (sciserver-api.md 0.1): everything under one base URL,
``login-portal/keystone/v3/tokens``, ``fileservice/api/``, ``racm/``.  ``/_contract/*`` is not part of
SciServer: it lets tests create users, flip settings (token lifetime, missing-download mode, ...), expire
tokens and read the request log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, jsonify, request

from . import fileservice, jobm
from .errors import login_error
from .state import State

LOGIN = "/login-portal/keystone/v3/tokens"


class CollapseSlashes:
    """The FileService and RACM collapse repeated slashes (DeepForge really calls ``racm//jobm/rest``)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["PATH_INFO"] = re.sub(r"/{2,}", "/", environ.get("PATH_INFO", ""))
        return self.app(environ, start_response)


def state() -> State:
    return current_app.config["STATE"]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def create_app(root: Path, base_url: str = "") -> Flask:
    app = Flask("sciserver_contract")
    st = State(root, base_url)
    app.config.update(STATE=st, JOBS=jobm.JobManager(st))
    app.register_blueprint(fileservice.bp, url_prefix="/fileservice/api")
    app.register_blueprint(jobm.bp, url_prefix="/racm")
    app.url_map.strict_slashes = False

    # ------------------------------------------------------------------------------ login portal (v1)
    @app.post(LOGIN)
    def login() -> Any:
        """200 + ``X-Subject-Token`` + the token as plain text; every failure is a 500 with a JSON body."""
        body = request.get_json(silent=True)
        try:
            user_part = body["auth"]["identity"]["password"]["user"]
            name, password = user_part["name"], user_part["password"]
            if not isinstance(name, str) or not isinstance(password, str):
                raise TypeError
        except (KeyError, TypeError):
            return login_error("Incorrect request body format. User's name and/or password could not be parsed.")
        state().log_request("POST", request.path, request.query_string.decode(), name)
        with st.lock:
            user = st.users.get(name)
            if user is not None and user.failed_logins >= st.settings.max_login_attempts:
                return login_error("Maximum number of login attempts reached. Please try again in 15 minutes.")
            if user is None or user.password != password:
                if user is not None:
                    user.failed_logins += 1
                return login_error("HTTP/1.1 401 Unauthorized")
            user.failed_logins = 0
        token = st.issue_token(name)
        response = Response(token.value, status=200, mimetype="text/plain")
        response.headers["X-Subject-Token"] = token.value
        response.headers["Access-Control-Expose-Headers"] = "X-Subject-Token"
        return response

    @app.route(f"{LOGIN}/<token>", methods=["GET", "HEAD"])
    def keystone_token(token: str) -> Any:
        """The raw Keystone v3 token document, or (v1 handler) 500 "HTTP/1.1 401 Unauthorized"."""
        user = st.user_for_token(token)
        if user is None:
            return login_error("HTTP/1.1 401 Unauthorized")
        issued = st.tokens[token]
        domain = {"id": "default", "name": "Default"}
        return jsonify(
            {
                "token": {
                    "methods": ["password"],
                    "user": {"domain": domain, "id": user.keystone_id, "name": user.name, "password_expires_at": None},
                    "audit_ids": [token[:22]],
                    "expires_at": iso(issued.expires_at),
                    "issued_at": iso(issued.issued_at),
                    "project": {"domain": domain, "id": user.keystone_id[::-1], "name": user.name},
                    "is_domain": False,
                    "roles": [{"id": "9fe2ff9ee4384b1894a90878d3e92bab", "name": "user"}],
                    "catalog": [],
                }
            }
        )

    # ------------------------------------------------------------------------------ login portal (v2)
    @app.get("/login-portal/api/validate/<token>")
    def validate(token: str) -> Any:
        user = st.user_for_token(token)
        if user is None:
            return Response(b"", status=401)
        return jsonify({"user_id": user.keystone_id, "username": user.name, "email": user.email})

    @app.post("/login-portal/api/auth")
    def login_v2() -> Any:
        body = request.get_json(silent=True) or {}
        user = st.users.get(str(body.get("username")))
        if user is None or user.password != body.get("password"):
            return Response(b"", status=401)
        return Response(st.issue_token(user.name).value, mimetype="text/plain")

    # ------------------------------------------------------------------------------ test controls
    @app.post("/_contract/users")
    def add_user() -> Any:
        body = request.get_json(force=True)
        user = st.add_user(body["username"], body["password"])
        return jsonify({"username": user.name, "keystoneId": user.keystone_id})

    @app.post("/_contract/settings")
    def settings() -> Any:
        st.settings.update(request.get_json(force=True))
        return jsonify(vars(st.settings))

    @app.post("/_contract/expire-tokens")
    def expire_tokens() -> Any:
        return jsonify({"expired": st.expire_tokens(request.get_json(force=True)["username"])})

    @app.get("/_contract/requests")
    def requests_log() -> Any:
        with st.lock:
            return jsonify(list(st.request_log))

    @app.get("/_contract/volume-path")
    def volume_path() -> Any:
        """Where a user volume lives on disk, so tests can check bytes without going through the API."""
        volume = st.find_volume(request.args["root"], request.args["owner"], request.args["name"])
        if volume is None:
            return jsonify({"error": "no such volume"}), 404
        return jsonify({"path": str(st.volume_dir(volume))})

    app.wsgi_app = CollapseSlashes(app.wsgi_app)  # type: ignore[method-assign]
    return app
