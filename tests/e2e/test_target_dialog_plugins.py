"""The target dialog's server side, on a real WebGME server running the plugins (issue 11 item 2).

- SetExecutionTargets applies to the plugin's active selection of operations (what the pipeline view
  registers as WebGME's active selection), else to the active node;
- ExecutePipeline lays the Executions out in MyExecutions as a grid in creation order;
- the server strips secret fields from user and project settings, whatever client sends them
  (webgme-config/routers/SettingsGuard).
The browser side is tests/e2e/test_ui_dialog.py.
"""

from __future__ import annotations

import itertools
import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_plugins_execute import PRODUCE, import_pipeline, pipeline_spec, targets

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]


def _targets(model: Any, path: str) -> dict[str, Any]:
    text = model.nodes[path]["registry"].get("executionTargets")
    return json.loads(text) if text else {}


def test_set_execution_targets_applies_to_the_selected_operations(gme: Any, tmp_path: Path) -> None:
    pipe = import_pipeline(gme, pipeline_spec())
    m = gme.tree(pipe)
    produce, transform, consume = (m.find(pipe, n) for n in ("Produce", "Transform", "Consume"))
    connection = next(c for c in m.children(pipe) if m.pointer(c, "src"))
    store = str(tmp_path / "ops-store")

    # Two operations selected in the pipeline view (and a connection, which is skipped), the pipeline active.
    result = gme.run(
        "SetExecutionTargets",
        pipe,
        {"storage": "local", "storage.local.root": store, "compute": ""},
        selection=[produce, consume, connection],
    )
    assert result["success"], result.get("error")
    m = gme.tree(pipe)
    for op in (produce, consume):
        assert _targets(m, op) == {"storage": {"id": "local", "config": {"root": store}}}
    assert _targets(m, transform) == {} and _targets(m, pipe) == {}  # not selected: untouched
    assert any("skipped" in msg["message"] for msg in result["messages"])

    # Nothing selected: the active node.  A kind left empty keeps each node's own choice.
    work = str(tmp_path / "work")
    assert gme.run("SetExecutionTargets", pipe, {"storage": "", "compute": "local", "compute.local.workDir": work})[
        "success"
    ]
    m = gme.tree(pipe)
    assert _targets(m, pipe) == {"compute": {"id": "local", "config": {"workDir": work}}}
    assert _targets(m, produce)["storage"]["id"] == "local"

    # The per-operation choice is what the run uses: Produce and Consume write into their own store.
    result = gme.run("ExecutePipeline", pipe, {"name": "per_op", **targets(tmp_path)})
    assert result["success"], result.get("error")
    assert list(Path(store).rglob("*")), "the selected operations' outputs are in their own storage"


def test_executions_are_laid_out_in_creation_order(gme: Any, tmp_path: Path) -> None:
    spec = {"name": "one", "operations": [{"name": "Produce", "code": PRODUCE, "outputs": ["x"]}], "connections": []}
    pipe = import_pipeline(gme, spec)
    for name in ("first", "second", "third"):
        result = gme.run("ExecutePipeline", pipe, {"name": name, **targets(tmp_path)})
        assert result["success"], result.get("error")
    m = gme.tree("")
    container = m.find("", "MyExecutions")
    runs = sorted(
        (m.attrs(e)["createdAt"], m.attrs(e)["name"], gme.raw(e).get("reg", {}).get("position"))
        for e in m.children(container)
    )
    names = [name for _, name, _ in runs]
    assert names == ["first", "second", "third"]
    assert all(p is not None for _, _, p in runs), f"no position of their own: {runs}"
    positions = [(p["x"], p["y"]) for _, _, p in runs]
    assert len(set(positions)) == 3, f"Executions pile on top of each other: {positions}"
    # A grid in creation order: each one right of the one before (same row) or on a row below.
    assert all((b[1], b[0]) > (a[1], a[0]) for a, b in itertools.pairwise(positions)), positions


def test_the_server_never_stores_a_secret_in_settings(gme: Any) -> None:
    secret = f"sk-{secrets.token_hex(12)}"
    token = f"tk-{secrets.token_hex(12)}"
    api, http = f"{gme.url}/api", gme.http
    component = "Plugin_ExecutePipeline__9_9_9"
    plain = {"storage": "s3", "storage.s3.endpoint": "http://127.0.0.1:9", "storage.s3.secretAccessKey": secret}
    nested = {"storage": {"id": "s3", "config": {"endpoint": "http://e", "secretAccessKey": secret, "token": token}}}

    # Every route WebGME offers for settings, as a client that bypasses the dialog would call them.
    calls = [
        ("patch", f"{api}/user", {"settings": {"Fourth": plain}}),  # first: it replaces all settings
        ("put", f"{api}/user/settings/{component}", plain),
        ("patch", f"{api}/v1/user/settings/{component}", {"storage.gme.apiToken": token}),
        ("patch", f"{api}/user/settings", {"Other": nested}),
        ("put", f"{api}/users/guest/settings/Third", plain),
    ]
    for method, url, body in calls:
        r = getattr(http, method)(url, json=body)
        assert r.status_code == 200, (url, r.status_code, r.text)
    r = http.patch(f"{api}/projects/{gme.owner}/{gme.name}", json={"description": "d", "targets": plain})
    assert r.status_code == 200, r.text

    stored = {
        "user": http.get(f"{api}/user").text,
        "settings": http.get(f"{api}/user/settings").text,
        "project": http.get(f"{api}/projects/{gme.owner}/{gme.name}").text,
    }
    for where, text in stored.items():
        assert secret not in text and token not in text, f"a secret is stored in the {where}: {text[:2000]}"
    settings = http.get(f"{api}/user/settings").json()
    assert settings[component] == {"storage": "s3", "storage.s3.endpoint": "http://127.0.0.1:9"}  # the rest kept
    assert settings["Other"] == {"storage": {"id": "s3", "config": {"endpoint": "http://e"}}}
    assert settings["Third"]["storage.s3.endpoint"] == "http://127.0.0.1:9"
    project = http.get(f"{api}/projects/{gme.owner}/{gme.name}").json()
    assert project["info"]["description"] == "d"
