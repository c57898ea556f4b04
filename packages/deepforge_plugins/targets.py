"""Where a pipeline node's artifacts live and where it runs: storage + compute choices and their config.

A choice (``Choice``) is a backend id plus its *public* config.  It is stored as JSON in the registry
``executionTargets`` of a Pipeline or Operation node by SetExecutionTargets, so secrets never reach the
model.  At run time ExecutePipeline resolves each job's choice (Operation, else its Pipeline, else the
Execute dialog) and completes the config with the secrets typed into the dialog for the same backend id,
then with the server's environment (``ConfigSchema.resolve``), and validates it against the backend's
schema *before any job starts*.

The dialog is described from the live backend registries (:func:`dialog_fields`), so a backend installed
later (an entry point) shows up without editing a plugin.  Two plugin-config shapes are accepted:
DeepForge's ``{"storage": {"id"|"name": ..., "config": {...}}}`` (its custom ``dict`` widget), and the flat
shape the plain WebGME dialog produces: ``{"storage": "<id>", "storage.<id>.<field>": value}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deepforge_adapters import compute, storage
from deepforge_adapters.config import Config, ConfigSchema
from deepforge_adapters.errors import ConfigError
from deepforge_adapters.policy import SERVER_URL, Policy
from deepforge_adapters.policy import load as load_policy

log = logging.getLogger(__name__)

REGISTRY_KEY = "executionTargets"
KINDS = ("storage", "compute")


def _availability(kind: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``({id: class}, {id: why not})`` from the public ``storage`` / ``compute`` registry."""
    if kind == "storage":
        return storage.registry.availability()
    if kind == "compute":
        return compute.registry.availability()
    raise ValueError(f"unknown target kind {kind!r}")


def available_backends(kind: str) -> dict[str, Any]:
    """``{id: class}`` of every backend of ``kind`` that imports here; a broken one is logged and skipped."""
    found, broken = _availability(kind)
    for backend_id, reason in broken.items():
        log.warning("%s backend %s is not available: %s", kind, backend_id, reason)
    return found


def schema_for(kind: str, backend_id: str) -> ConfigSchema:
    """The config schema of one backend (:class:`UnknownBackendError` if there is none of that id)."""
    if kind == "storage":
        return storage.registry.get_class(backend_id).schema
    if kind == "compute":
        return compute.registry.get_class(backend_id).schema
    raise ValueError(f"unknown target kind {kind!r}")


@dataclass(frozen=True)
class Choice:
    """A backend id and its public (non-secret) config."""

    backend: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.backend, "config": dict(self.config)}


@dataclass(frozen=True)
class Targets:
    storage: Choice | None = None
    compute: Choice | None = None

    def get(self, kind: str) -> Choice | None:
        value: Choice | None = getattr(self, kind)
        return value

    def to_json(self) -> dict[str, Any]:
        return {k: c.to_json() for k in KINDS if (c := self.get(k)) is not None}

    @classmethod
    def from_json(cls, text: str | Mapping[str, Any] | None) -> Targets:
        """Parse the registry value; ``None``/empty means "no choice here"."""
        if not text:
            return cls()
        value = json.loads(text) if isinstance(text, str) else text
        return cls(**{k: Choice(v["id"], dict(v.get("config") or {})) for k, v in value.items() if k in KINDS})

    def overridden_by(self, other: Targets) -> Targets:
        """``other``'s choices where it has one, ours elsewhere (an Operation overrides its Pipeline)."""
        return Targets(other.storage or self.storage, other.compute or self.compute)


def _public_schema(schema: ConfigSchema) -> ConfigSchema:
    """The schema with secrets optional: storing a choice must not demand the secrets it will not store."""
    return ConfigSchema(
        schema.backend, tuple(dataclasses.replace(f, required=False) if f.is_auth else f for f in schema.fields)
    )


def public_choice(kind: str, backend_id: str, config: Mapping[str, Any] | None) -> Choice:
    """Validate ``config`` for storing on a node and drop its secret fields (ConfigError/UnknownBackendError)."""
    schema = schema_for(kind, backend_id)
    given = {k: v for k, v in (config or {}).items() if v not in (None, "")}
    validated = _public_schema(schema).validate(given)
    return Choice(backend_id, {k: v for k, v in validated.public().items() if k in given})


def resolve(
    kind: str,
    choice: Choice,
    secrets: Mapping[str, Any] | None = None,
    *,
    policy: Policy | None = None,
    server_url: str | None = None,
) -> Config:
    """The full config for a run: public choice + secrets (dialog, then environment), validated.

    The operator policy (``policy``, default: the one in force, :func:`deepforge_adapters.policy.load`) is
    applied to what the user gave *and* to what the server filled in, so no caller can skip it:
    :class:`~deepforge_adapters.policy.PolicyError` for a backend or value outside it.  ``server_url`` is
    what a ``gme`` host is fixed to.
    """
    policy = load_policy() if policy is None else policy
    schema = schema_for(kind, choice.backend)
    secret_names = schema.secret_names()
    merged = dict(choice.config)
    merged.update({k: v for k, v in (secrets or {}).items() if k in secret_names and v not in (None, "")})
    merged = policy.apply(kind, choice.backend, merged, server_url)
    config = schema.resolve(merged)
    policy.check_resolved(kind, choice.backend, config)
    return config


# ------------------------------------------------------------------------------------- the plugin dialog


def _display_names(kind: str) -> dict[str, str]:
    return {cls.name: backend_id for backend_id, cls in available_backends(kind).items()}


def choice_from_plugin_config(kind: str, plugin_config: Mapping[str, Any]) -> tuple[Choice | None, dict[str, Any]]:
    """Read ``kind`` from a plugin config: ``(public choice or None, the secrets that came with it)``."""
    value = plugin_config.get(kind)
    if not value:
        return None, {}
    if isinstance(value, Mapping):  # DeepForge's dict widget: {"id"|"name", "config"}
        backend_id = value.get("id") or _display_names(kind).get(value.get("name", ""), value.get("name", ""))
        config = dict(value.get("config") or {})
    else:
        backend_id = str(value)
        prefix = f"{kind}.{backend_id}."
        config = {k[len(prefix) :]: v for k, v in plugin_config.items() if k.startswith(prefix)}
    if not backend_id:
        raise ConfigError(kind, None, "no backend chosen")
    schema = schema_for(kind, backend_id)
    secret_names = schema.secret_names()
    secrets = {k: v for k, v in config.items() if k in secret_names and v not in (None, "")}
    public = {k: v for k, v in config.items() if k not in secret_names}
    # Validate the public part now so a typo is reported before anything is written or started.
    return public_choice(kind, backend_id, public), secrets


def _on_this_server(policy: Policy, kind: str, backend_id: str) -> str:
    """``", this server"`` for a backend whose host is fixed to the server the plugin runs in (gme)."""
    rule = policy.rule(kind, backend_id, "host")
    return ", this server" if rule is not None and rule.fixed is SERVER_URL else ""


def dialog_fields(
    kind: str, include_secrets: bool, policy: Policy | None = None, keep: bool = False
) -> list[dict[str, Any]]:
    """WebGME ``configStructure`` entries for choosing a ``kind`` backend, generated from the registry.

    Only the backends the operator policy (default: the one in force) allows are offered; a field the policy
    fixes is not shown (the server sets it), one restricted to ``allowed`` values is a drop-down of them.
    ``keep``: the first choice (and the default) is ``""``, "keep what the node has" (SetExecutionTargets;
    WebGME fills every field a request leaves out with its default, so a default backend would be stored).

    Besides WebGME's keys, each entry carries what the target dialog (``webgme-config/src/widgets/TargetConfig``)
    needs and WebGME's own dialog ignores: the kind select lists ``backends`` (id -> display name, whether it is
    this server, the fields the operator fixes); a field names its ``backend`` and bare ``field``, its default
    as ``hint`` (a placeholder), ``serverUrl`` when this server's URL is what an empty value means, and a
    secret (``isAuth``) is a password input (``options.isPassword``, WebGME's StringWidget).
    """
    policy = load_policy() if policy is None else policy
    backends = available_backends(kind)
    ids = policy.allowed_backends(kind, backends)
    default = "" if keep else ("local" if "local" in ids else (ids[0] if ids else ""))
    fields: list[dict[str, Any]] = [
        {
            "name": kind,
            "displayName": f"{kind.capitalize()} backend",
            "description": f"Where the pipeline's {'artifacts are stored' if kind == 'storage' else 'jobs run'}: "
            + ", ".join(f"{i} ({backends[i].name}{_on_this_server(policy, kind, i)})" for i in ids)
            + ("; empty: keep this node's choice" if keep else ""),
            "value": default,
            "valueType": "string",
            "valueItems": ["", *ids] if keep else ids,
            "readOnly": False,
            "backends": {i: _backend_summary(policy, kind, i, backends[i]) for i in ids},
        }
    ]
    for backend_id in ids:
        for item in backends[backend_id].schema.to_config_structure():
            if item.get("isAuth") and not include_secrets:
                continue
            rule = policy.rule(kind, backend_id, item["name"])
            if rule is not None and rule.fixed is not None:
                continue  # the operator's value (or the server's own) applies; users cannot change it
            item = dict(item, backend=backend_id, field=item["name"])
            if rule is not None and rule.allowed is not None:
                item["valueItems"] = list(rule.allowed)
                item["value"] = rule.allowed[0]
            elif item.get("valueItems") and item.get("value") in item["valueItems"]:
                pass  # a drop-down shows its default (an empty value would leave it blank)
            elif item.get("valueType") == "string" and item.get("value"):
                # WebGME sends dialog defaults as if typed: an empty string lets the backend's own default
                # (or what the server fills in, like the gme host) apply at run time instead.
                item["hint"] = item["value"]
                item["description"] = f"{item.get('description', '')} (default: {item['value']})".strip()
                item["value"] = ""
            if item["field"] == "host":  # an empty host is this server's URL (DeepForgePlugin.with_server_fields)
                item["serverUrl"] = True
                item.pop("hint", None)
                item["description"] = re.sub(r" \(default: [^)]*\)$", "", item.get("description", ""))
                item["description"] = f"{item['description']} (default: this server)".strip()
            if item.get("isAuth") and item.get("valueType") == "string":
                item["options"] = {"isPassword": True}
            if rule is not None and rule.under is not None:
                under = ", ".join(map(str, rule.under))
                item["description"] = f"{item.get('description', '')} (must be under: {under})"
            item["displayName"] = f"{backends[backend_id].name}: {item['displayName']}"
            item["name"] = f"{kind}.{backend_id}.{item['name']}"
            item.pop("required", None)  # only required when that backend is the chosen one
            fields.append(item)
    return fields


def _backend_summary(policy: Policy, kind: str, backend_id: str, cls: Any) -> dict[str, Any]:
    """What the target dialog says about one backend: its name, whether it is this server, the fields the
    operator policy fixes (not shown; the dialog says so)."""
    fixed = []
    for f in cls.schema.fields:
        rule = policy.rule(kind, backend_id, f.name)
        if rule is not None and rule.fixed is not None:
            fixed.append(f.display_name or f.name)
    return {"name": cls.name, "thisServer": bool(_on_this_server(policy, kind, backend_id)), "fixed": fixed}


def secret_field_names() -> list[str]:
    """Every field name any installed storage or compute backend marks secret (``is_auth``), whatever the
    policy offers: the server strips keys of these names from user and project settings
    (``webgme-config/routers/SettingsGuard``), so no client can store a secret there."""
    return sorted(
        {f.name for kind in KINDS for cls in available_backends(kind).values() for f in cls.schema.fields if f.is_auth}
    )
