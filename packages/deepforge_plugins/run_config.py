"""What the Execute dialog contributed to a run: default storage/compute choices and secrets per backend id.

ExecutePipeline, ExecuteJob, CancelExecution and UploadArtifact all start from it (:func:`plugin_run_config`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from deepforge_adapters.errors import UnknownBackendError
from deepforge_adapters.storage import DataInfo

from .base import DeepForgePlugin
from .targets import KINDS, Targets, choice_from_plugin_config, schema_for


@dataclass
class RunConfig:
    """What the Execute dialog contributed: default choices and secrets per backend id."""

    targets: Targets
    secrets: Mapping[str, Mapping[str, Mapping[str, Any]]]  # kind -> backend id -> {field: value}


def run_config(plugin_config: Mapping[str, Any], backend_of: Callable[[str], str | None] | None = None) -> RunConfig:
    """Default targets and per-backend secrets from the Execute dialog.

    ``backend_of`` maps an artifact's node path to its storage backend, for DeepForge's credentials group.
    """
    choices: dict[str, Any] = {}
    secrets: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for kind in KINDS:
        choice, given = choice_from_plugin_config(kind, plugin_config)
        choices[kind] = choice
        if choice is not None and given:
            secrets[kind][choice.backend] = given
    # Secrets typed for another backend than the chosen one (the target dialog asks for those of every backend
    # an operation's own targets use): flat keys ``<kind>.<id>.<secret field>``.
    for key, value in plugin_config.items():
        kind, _, rest = str(key).partition(".")
        backend_id, _, name = rest.partition(".")
        chosen = choices.get(kind)
        if kind in secrets and name and value not in (None, "") and (chosen is None or backend_id != chosen.backend):
            try:
                secret = name in schema_for(kind, backend_id).secret_names()
            except UnknownBackendError:  # a stale dialog field of a backend no longer installed
                continue
            if secret:
                secrets[kind].setdefault(backend_id, {})[name] = value
    # DeepForge's "Credentials for Pipeline Inputs": {artifact path: {field: value}}, per backend here.
    for path, creds in (plugin_config.get("inputs") or {}).items():
        if not isinstance(creds, Mapping):
            continue
        backend = creds.get("backend") or (backend_of(path) if backend_of else None)
        if backend:
            secrets["storage"].setdefault(backend, {}).update({k: v for k, v in creds.items() if k != "backend"})
    return RunConfig(Targets(choices["storage"], choices["compute"]), secrets)


def plugin_run_config(plugin: DeepForgePlugin) -> RunConfig:
    """:func:`run_config` of the plugin's config, artifact backends looked up in its model."""

    def backend_of(path: str) -> str | None:
        try:
            return DataInfo.from_json(plugin.model.attr(plugin.model.node(path), "data")).backend
        except Exception:  # not a Data node, or no data yet: its credentials cannot be placed
            return None

    return run_config(plugin.config(), backend_of)
