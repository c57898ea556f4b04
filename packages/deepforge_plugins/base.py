"""What every DeepForge Python plugin shares: the run_plugin entry, logging with secret redaction, and the
calls into the JS wrapper (abort flag, the invoking user's token) that the bindings do not provide.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

from deepforge_adapters.config import Config
from deepforge_adapters.errors import ConfigError
from deepforge_adapters.policy import Policy
from deepforge_adapters.policy import load as load_policy
from deepforge_adapters.sciserver.session import CREDENTIAL_FIELDS, SciServerAuthError, linked_token
from deepforge_adapters.secrets import install_redaction, redact, register_secret
from webgme_bindings import PluginBase, WebGME

from .model import ModelSession
from .targets import Choice, schema_for, secret_field_names

log = logging.getLogger(__name__)


def _secret_values(plugin_config: Mapping[str, Any]) -> Iterable[str]:
    """Every value in a plugin config that a backend schema marks secret (both dialog shapes, and ``inputs``)."""
    secret_names = set(secret_field_names())

    def walk(value: Any, key: str = "") -> Iterable[str]:
        if isinstance(value, Mapping):
            for k, v in value.items():
                yield from walk(v, str(k))
        elif isinstance(value, list):
            for v in value:
                yield from walk(v, key)
        elif isinstance(value, str) and value and key.rsplit(".", 1)[-1] in secret_names:
            yield value

    return walk(plugin_config)


#: The URL under which this server is reached by workers on other machines (a proxy, a public name); set it
#: in the server's environment only.  Default: the server's own listening address.
SERVER_URL_ENV = "DEEPFORGE_SERVER_URL"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")


def server_url(gme_config: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """The URL of the WebGME server whose config is ``gme_config``: ``$DEEPFORGE_SERVER_URL`` if the operator
    set it, else the address the server listens on (``server.handle``, else ``server.port``; loopback for a
    wildcard bind).

    Never ``$DEEPFORGE_HOST``: that is the default server of the ``deepforge`` and ``deepforge-worker``
    commands, which a shell may have exported for another server than the one this plugin runs in.
    """
    if environ.get(SERVER_URL_ENV):
        return environ[SERVER_URL_ENV].rstrip("/")
    server = gme_config.get("server") or {}
    handle: Mapping[str, Any] = server["handle"] if isinstance(server.get("handle"), Mapping) else {}
    port = handle.get("port") or server.get("port") or 8888
    host = str(handle.get("host") or "")
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{int(port)}"


class DeepForgePlugin(PluginBase):
    """Base of the plugins: a :class:`ModelSession`, the config with its secrets registered for redaction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = ModelSession(self)
        self._plugin_config: dict[str, Any] | None = None
        self._policy: Policy | None = None
        self._project_id: str | None = None
        self._server_url: str | None = None

    # ----------------------------------------------------------------------------- wrapper extras
    def config(self) -> dict[str, Any]:
        """The plugin config; every secret in it is registered so no log line can show it."""
        if self._plugin_config is None:
            self._plugin_config = dict(self.get_current_config() or {})
            for value in _secret_values(self._plugin_config):
                register_secret(value)
        return self._plugin_config

    def policy(self) -> Policy:
        """The operator policy in force (``$DEEPFORGE_POLICY``), read once per run; PolicyError if invalid."""
        if self._policy is None:
            self._policy = load_policy()
        return self._policy

    def aborted(self) -> bool:
        """True once the user aborted the plugin (the wrapper's ``onAbort``)."""
        return bool(self._send({"name": "isAborted", "args": []}))

    def webgme_token(self) -> str | None:
        """The invoking user's WebGME token (JWT), for blob/executor calls under the user's identity."""
        token = self._send({"name": "getWebgmeToken", "args": []})
        if token:
            register_secret(token)
        return token or None

    def server_url(self) -> str:
        """The URL of the WebGME server this plugin runs in (see :func:`server_url`); the server's config is
        asked for once per run (each ask is a round trip, and a run needs the URL several times per job)."""
        if self._server_url is None:
            self._server_url = server_url(self.gme_config, os.environ)
        return self._server_url

    def with_server_fields(self, kind: str, choice: Choice) -> Choice:
        """``choice`` with what only the server knows filled in for backends that declare it: ``host`` (this
        server's URL) and ``webgmeToken`` (the invoking user's token)."""
        names = set(schema_for(kind, choice.backend).field_names())
        extra: dict[str, Any] = {}
        if "host" in names and not choice.config.get("host"):
            extra["host"] = self.server_url()
        if "webgmeToken" in names:
            token = self.webgme_token()
            if token:
                extra["webgmeToken"] = token
        return Choice(choice.backend, {**choice.config, **extra}) if extra else choice

    def with_linked_account(self, config: Config) -> Config:
        """A SciServer config that names an account (``username``) but gives neither password nor token, with
        the token of that account as the invoking user linked it (webgme-config/routers/SciServerAuth, DeepForge's
        one-time link); any other config as it is.  :class:`ConfigError` naming ``username`` when there is none."""
        names = {f.name for f in CREDENTIAL_FIELDS}
        if not names <= set(config) or not config["username"] or config["password"] or config["token"]:
            return config
        try:
            token = linked_token(
                config.backend,
                self.server_url(),
                str(config["username"]),
                login_url=str(config["loginUrl"]),
                webgme_token=self.webgme_token(),
            )
        except SciServerAuthError as exc:
            raise ConfigError(config.backend, "username", str(exc)) from None
        return Config(config.backend, {**config.to_dict(), "token": token}, config.secret_names)

    def project_id(self) -> str:
        """The project's id, asked of the server once per run (it cannot change while the plugin runs; a
        pipeline run needs it several times per job)."""
        if self._project_id is None:
            info = self.project.get_project_info() or {}
            self._project_id = str(info.get("_id") or info.get("id") or "project")
        return self._project_id

    def notify(self, message: str, severity: str = "info", to_branch: bool = True) -> None:
        try:
            self.send_notification({"message": message, "severity": severity, "toBranch": to_branch})
        except Exception as exc:  # a notification is best effort; the run must not die of it
            log.debug("notification failed: %s", exc)

    def fail(self, message: str) -> None:
        """End the plugin as failed with ``message`` (secrets redacted) shown to the user."""
        message = redact(message)
        log.error("%s", message)
        self.result_set_error(message)
        self.result_set_success(False)

    def main(self) -> None:  # pragma: no cover - each plugin implements it
        raise NotImplementedError


def run(plugin_class: type[DeepForgePlugin], argv: list[str] | None = None) -> int:
    """The body of every ``run_plugin.py``: ``<port> <commit> <branch> <active node> <selection> <namespace>``.

    Logs go to stdout (the wrapper forwards them to the server log) at INFO with secrets redacted; the
    bindings' own DEBUG logging of every message (the plugin config included) stays off.
    """
    argv = sys.argv if argv is None else argv
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("DEEPFORGE_PLUGIN_LOG_LEVEL", "INFO"))
    install_redaction(root)
    bindings_log = logging.getLogger("deepforge_plugins.bindings")
    bindings_log.setLevel(logging.INFO)

    def arg(i: int) -> str:
        return argv[i].strip('"') if len(argv) > i else ""

    port, commit, branch, active, selection, namespace = (arg(i) for i in range(1, 7))
    webgme = WebGME(port, bindings_log)
    try:
        plugin = plugin_class(webgme, commit, branch or None, active, [p for p in selection.split(",") if p], namespace)
        try:
            plugin.main()
        except Exception as exc:
            log.error("%s", redact(traceback.format_exc()))
            plugin.fail(f"{plugin_class.__name__} failed: {type(exc).__name__}: {exc}")
    finally:
        webgme.disconnect()
    return 0
