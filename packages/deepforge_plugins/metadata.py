"""The plugins' ``metadata.json`` files, generated from the backend registries.

WebGME serves each plugin's ``metadata.json`` to the UI as is, so the Execute and SetExecutionTargets dialogs
can only list the installed backends if the file does.  This module writes those files from
:func:`deepforge_plugins.targets.dialog_fields`; ``make plugins-metadata`` (run by the stack's start) calls it,
so a backend installed from another package appears after a restart without editing a plugin.  The plugins
re-validate every choice against the live registry at run time regardless.

The dialogs offer only what the operator policy in force allows (``$DEEPFORGE_POLICY``, see
:mod:`deepforge_adapters.policy`): forbidden backends are not listed, fixed fields are not shown, fields
restricted to values are drop-downs.  The committed files are generated without a policy (no ``local``
storage or compute).  ``--deploy DIR`` writes a plugins dir for the policy in force without touching the
checkout: each plugin's files are links to this repository's, its ``metadata.json`` is generated; the WebGME
server loads it when ``$DEEPFORGE_PLUGINS_DIR`` names it (``make dev`` does this for its dev policy).  The
plugins enforce the policy at run time whatever a dialog sent.

    python -m deepforge_plugins.metadata [PLUGINS_DIR]      # write
    python -m deepforge_plugins.metadata --check [DIR]      # exit 1 if a file is stale
    python -m deepforge_plugins.metadata --deploy DIR       # a plugins dir for the policy in force
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from deepforge_adapters import __version__ as VERSION

from .targets import dialog_fields, secret_field_names

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "plugins"
#: The target dialog (``webgme-config/src/widgets/TargetConfig``; config.default.js serves that dir under
#: ``panel/``): WebGME's InterpreterManager loads a plugin's ``configWidget`` with requirejs instead of its own
#: PluginConfigDialog.  It shows only the chosen backends' fields, the node's own targets, and never saves a
#: secret into the user's settings.
CONFIG_WIDGET = "panel/TargetConfig/TargetConfig"
#: The plugins whose dialog is the target dialog.
TARGET_DIALOGS = ("ExecutePipeline", "ExecuteJob", "CancelExecution", "SetExecutionTargets", "UploadArtifact")


def _field(name: str, display: str, description: str, value: Any, value_type: str = "string") -> dict[str, Any]:
    return {
        "name": name,
        "displayName": display,
        "description": description,
        "value": value,
        "valueType": value_type,
        "readOnly": False,
    }


def _targets(include_secrets: bool, keep: bool = False) -> list[dict[str, Any]]:
    return dialog_fields("storage", include_secrets, keep=keep) + dialog_fields("compute", include_secrets, keep=keep)


def plugins() -> dict[str, dict[str, Any]]:
    """``{plugin id: (description, configStructure)}`` for every plugin of this repository."""
    return {
        "ExecutePipeline": {
            "description": "Run a pipeline (or resume/re-run an Execution): each operation as a job on the chosen "
            "compute, artifacts in the chosen storage. Targets set on nodes override these defaults.",
            "configStructure": [
                _field("name", "Execution name", "Name of the new Execution (default: <pipeline>_execution)", ""),
                *_targets(include_secrets=True),
            ],
        },
        "ExecuteJob": {
            "description": "Re-run one Job of an Execution with the inputs recorded on its ports.",
            "configStructure": _targets(include_secrets=True),
        },
        "CancelExecution": {
            "description": "Cancel a running Execution from any session: its running jobs are canceled.",
            "configStructure": _targets(include_secrets=True),
        },
        "SetExecutionTargets": {
            "description": "Store on a Pipeline or Operation where its artifacts live and where it runs "
            "(non-secret settings only; an Operation's choice overrides its Pipeline's).",
            "configStructure": [
                *_targets(include_secrets=False, keep=True),
                _field("clear", "Clear", "Remove this node's choices instead", False, "boolean"),
            ],
        },
        "UploadArtifact": {
            "description": "Put a file into the chosen storage and add it to MyArtifacts.",
            "configStructure": [
                _field("file", "File", "The file to upload", "", "asset"),
                _field("name", "Name", "Artifact name (default: the file name)", ""),
                _field("type", "Type", "Python class name of the value the file holds (optional)", ""),
                *dialog_fields("storage", include_secrets=True),
            ],
        },
        "ImportPipeline": {
            "description": "Create a Pipeline in MyPipelines from a JSON description (see docs/plugins.md).",
            "configStructure": [_field("pipeline", "Pipeline JSON", "The pipeline description", "")],
        },
    }


def metadata(plugin_id: str, spec: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": plugin_id,
        "name": plugin_id,
        "version": VERSION,
        "description": spec["description"],
        "icon": {"class": "glyphicon glyphicon-cog", "src": ""},
        "disableServerSideExecution": False,
        "disableBrowserSideExecution": True,
        "dependencies": [],
        "writeAccessRequired": True,
        "configStructure": spec["configStructure"],
    }
    if plugin_id in TARGET_DIALOGS:
        data["configWidget"] = CONFIG_WIDGET
        # Field names no user or project setting may hold (webgme-config/routers/SettingsGuard strips them).
        data["secretFields"] = secret_field_names()
    return data


def render(plugin_id: str, spec: dict[str, Any]) -> str:
    return json.dumps(metadata(plugin_id, spec), indent=2) + "\n"


def deploy(target: Path, source: Path = DEFAULT_DIR) -> None:
    """``target/<plugin>/``: links to every file of ``source/<plugin>/`` but ``metadata.json``, which is
    generated for the policy in force (the plugins' JS resolves the links to find its Python)."""
    specs = plugins()
    for plugin_id, spec in specs.items():
        out = target / plugin_id
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted((source / plugin_id).iterdir()):
            if src.name == "metadata.json" or not src.is_file():
                continue
            link = out / src.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(src.resolve())
        (out / "metadata.json").write_text(render(plugin_id, spec))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("plugins_dir", nargs="?", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--check", action="store_true", help="report stale files instead of writing")
    parser.add_argument("--deploy", type=Path, metavar="DIR", help="write a plugins dir for the policy in force")
    args = parser.parse_args(argv)
    if args.deploy is not None:
        deploy(args.deploy, args.plugins_dir)
        print(f"wrote {args.deploy}")
        return 0
    stale = []
    for plugin_id, spec in plugins().items():
        path = args.plugins_dir / plugin_id / "metadata.json"
        text = render(plugin_id, spec)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"stale: {path} (run `make plugins-metadata`)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
