"""``deepforge backends``: the storage and compute backends, their config fields, and why one is unavailable."""

from __future__ import annotations

import json
from typing import Any

import click

from .. import compute, storage
from .._registry import BackendRegistry
from ..config import ConfigSchema, env_var_name


@click.command("backends")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {storage: {id: ...}, compute: {id: ...}}.")
def backends_command(as_json: bool) -> None:
    """List storage and compute backends with their config fields (and why a backend is unavailable)."""
    listing = {"storage": _describe(storage.registry), "compute": _describe(compute.registry)}
    if as_json:
        click.echo(json.dumps(listing, indent=2))
        return
    for kind, entries in listing.items():
        click.echo(f"{kind} backends:")
        for backend_id, entry in entries.items():
            if not entry["available"]:
                click.echo(f"  {backend_id:<20} unavailable: {entry['reason']}")
                continue
            click.echo(f"  {backend_id:<20} {entry['name']}")
            for field in entry["configStructure"]:
                flags = [field["valueType"]]
                if field.get("isAuth"):
                    flags.append("secret")
                if field.get("required"):
                    flags.append("required")
                default = f" [default: {field['value']!r}]" if field["value"] not in ("", None) else ""
                click.echo(f"      {field['name']} ({', '.join(flags)}){default}: {field['description']}")
                click.echo(f"          env: {', '.join(field['env'])}")


def _describe(registry: BackendRegistry[Any]) -> dict[str, dict[str, Any]]:
    available, unavailable = registry.availability()
    out: dict[str, dict[str, Any]] = {}
    for backend_id in registry.ids():
        if backend_id in unavailable:
            out[backend_id] = {"available": False, "reason": unavailable[backend_id]}
            continue
        cls = available[backend_id]
        schema: ConfigSchema = cls.schema
        fields = schema.to_config_structure()
        for item, field in zip(fields, schema.fields, strict=True):
            item["env"] = [env_var_name(schema.backend, field.name), *field.env]
        out[backend_id] = {"available": True, "name": cls.name, "configStructure": fields}
    return out
