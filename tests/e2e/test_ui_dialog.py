"""The target dialog in the WebGME UI (issue 11 item 2): headless Chromium on the `make dev` server.

One walk through the dialog, as a person would use it (the UI loads hundreds of modules: one page, one run):
ExecutePipeline from the plugin menu shows only the chosen backends' fields (s3's, then SciServer's and the
gme executor's), secrets as password inputs, defaults true for this server; a run on S3 (SeaweedFS, which
checks signatures) with "save these settings" ticked leaves no secret in ``GET /api/user``; the saved
settings come back without the secrets; SetExecutionTargets applies to the operation selected in the editor,
then to the pipeline; ExecutePipeline then shows the pipeline's own targets preselected (and locked: the run
uses them) and asks for the secrets of the backend the operation uses on its own, and a run on those targets
writes each operation's outputs where its targets say; ExecuteJob on a Job shows the job's own targets;
UploadArtifact is the same dialog, storage only.  Settings WebGME's own dialog saved before (with secrets)
are saved again without them.  Screenshots are left in the test's tmp dir.  The fixtures and helpers are
test_ui_browser's.
"""

from __future__ import annotations

import json
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import __version__ as VERSION
from deepforge_adapters.storage import DataInfo

from tests.e2e import test_ui_browser as ui
from tests.fixtures.plugins import GmeProject
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]


#: The names of the dialog's backend fields that are shown (``storage.s3.endpoint``...).
VISIBLE_FIELDS = """() => [...document.querySelectorAll('.plugin-config-dialog.in .target-field')]
    .filter(el => el.offsetParent !== null).map(el => el.getAttribute('data-config-name'))"""
SHOWN = """() => { const d = document.querySelector('.plugin-config-dialog.in');
    return d !== null && getComputedStyle(d).opacity === '1'; }"""
ACTIVE_IS = (
    """id => Boolean(window.WebGMEGlobal && WebGMEGlobal.State) && WebGMEGlobal.State.getActiveObject() === id"""
)
CLEAR_NOTIFICATIONS = """() => document.querySelectorAll('[data-notify="container"]').forEach(n => n.remove())"""


def _row(dialog: Any, name: str) -> Any:
    return dialog.locator(f'.form-group[data-config-name="{name}"]')


def _open(page: Any, plugin: str) -> Any:
    page.evaluate(CLEAR_NOTIFICATIONS)
    page.locator('.dropdown-toggle[title="Execute plug-in"]:not(.disabled)').click()
    page.locator(".dropdown-menu.no-min-width a", has_text=plugin).click()
    dialog = page.locator(".plugin-config-dialog.in")
    dialog.wait_for(state="visible")
    page.wait_for_function(SHOWN)  # faded in: screenshots show it, not the page through it
    return dialog


def _run(page: Any, dialog: Any, plugin: str) -> str:
    dialog.get_by_text("Run...", exact=True).click()
    text: str = page.wait_for_function(ui.RESULT_NOTIFICATION, arg=plugin, timeout=ui.RUN_TIMEOUT_MS).json_value()
    return text


def _cancel(dialog: Any) -> None:
    dialog.locator(".modal-footer .btn-default").click()
    dialog.wait_for(state="hidden")


def _shown(page: Any, prefix: str) -> list[str]:
    return [n for n in page.evaluate(VISIBLE_FIELDS) if n.startswith(prefix)]


def _targets(project: GmeProject, path: str) -> dict[str, Any]:
    text = project.tree(path).nodes[path]["registry"].get("executionTargets")
    return json.loads(text) if text else {}


def _saved(project: GmeProject, component: str) -> Any:
    return project.http.get(f"{project.url}/api/user/settings").json().get(component)


def _output_backends(model: Any, job: str) -> set[str]:
    """The storage backends of the data on the job's output ports."""
    (op,) = model.children(job)
    outputs = model.find(op, "Outputs")
    return {DataInfo.from_json(model.attrs(p)["data"]).backend for p in model.children(outputs)}


def test_the_target_dialog(browser_page: Any, dev_server: Any, real_s3_config: dict[str, Any], tmp_path: Path) -> None:
    page = browser_page
    project = GmeProject(dev_server.url, ui.DEMO_PROJECT)
    model = project.tree("")
    pipeline = model.find("", "MyPipelines", "Example")
    generate = model.find(pipeline, "GenerateNumbers")
    s3 = real_s3_config
    query = urllib.parse.urlencode({"project": project.project_id, "branch": "master", "node": pipeline})
    shot = 0
    component = f"Plugin_ExecutePipeline__{VERSION.replace('.', '_')}"

    def screenshot(name: str) -> None:
        nonlocal shot
        shot += 1
        page.screenshot(path=str(tmp_path / f"dialog-{shot:02d}-{name}.png"))

    try:
        page.goto(f"{dev_server.url}/?{query}", wait_until="load", timeout=ui.UI_TIMEOUT_MS)
        page.get_by_text("GenerateNumbers", exact=True).first.wait_for(state="visible")

        # Settings saved by WebGME's own dialog before this one (nested under _dependencies, secrets included),
        # as the page loaded them from the user: the dialog saves them again without the secrets.
        legacy = f"legacy-{secrets.token_hex(8)}"
        nested = {"s3": {"pluginConfig": {"secretAccessKey": legacy, "endpoint": "http://old"}}}
        page.evaluate(
            "([id, value]) => { WebGMEGlobal.userInfo.settings[id] = value; }",
            [component, {"name": "old_run", "storage.s3.accessKeyId": legacy,
                         "_dependencies": {"storage": {"pluginConfig": {"_dependencies": nested}}}}],
        )  # fmt: skip

        # ---- only the chosen backends' fields, secrets as password inputs, defaults for this server
        dialog = _open(page, "ExecutePipeline")
        wait_for(lambda: _saved(project, component) == {"name": "old_run"}, 60, "the legacy settings saved again")
        assert ui._field(dialog, "Execution name").input_value() == "old_run"
        assert "No targets are set on pipeline \u201cExample\u201d" in dialog.locator(".target-origin").inner_text()
        assert ui._field(dialog, "Storage backend").input_value() == "local"
        assert all(n.startswith(("storage.local.", "compute.local.")) for n in page.evaluate(VISIBLE_FIELDS))
        storage_note = _row(dialog, "storage").locator(".target-backend-note")
        assert "nothing to set here" in storage_note.inner_text()  # the dev policy fixes local's root
        screenshot("defaults")

        ui._field(dialog, "Storage backend").select_option("s3")
        shown = _shown(page, "storage.")
        assert shown and all(n.startswith("storage.s3.") for n in shown), shown
        assert {"storage.s3.endpoint", "storage.s3.secretAccessKey", "storage.s3.bucketName"} <= set(shown)
        for secret in ("accessKeyId", "secretAccessKey", "sessionToken"):
            assert _row(dialog, f"storage.s3.{secret}").locator("input").get_attribute("type") == "password"
        assert _row(dialog, "storage.s3.endpoint").locator("input").get_attribute("type") == "text"
        assert _row(dialog, "storage.s3.addressingStyle").locator("select").input_value() == "auto"  # was blank
        assert _row(dialog, "storage.s3.bucketName").locator("input").get_attribute("placeholder") == "deepforge"
        screenshot("s3")

        ui._field(dialog, "Storage backend").select_option("sciserver-files")
        shown = _shown(page, "storage.")
        assert shown and all(n.startswith("storage.sciserver-files.") for n in shown), shown
        assert _row(dialog, "storage.sciserver-files.password").locator("input").get_attribute("type") == "password"
        ui._field(dialog, "Compute backend").select_option("gme")
        shown = _shown(page, "compute.")
        assert shown and all(n.startswith("compute.gme.") for n in shown), shown
        assert dev_server.url in _row(dialog, "compute").locator(".target-backend-note").inner_text()  # this server
        assert "8888" not in dialog.inner_text() or ":8888" in dev_server.url
        _row(dialog, "compute").scroll_into_view_if_needed()
        screenshot("sciserver-gme")

        # ---- a run on S3, settings saved: the secrets are not
        ui._field(dialog, "Storage backend").select_option("s3")
        ui._field(dialog, "Compute backend").select_option("local")
        ui._field(dialog, "Execution name").fill("ui_s3")
        for field in ("endpoint", "accessKeyId", "secretAccessKey", "bucketName"):
            _row(dialog, f"storage.s3.{field}").locator("input").fill(str(s3[field]))
        dialog.locator(".save-configuration input").check()
        screenshot("s3-filled")
        text = _run(page, dialog, "ExecutePipeline")
        assert "finished with success" in text, f"{text}\n{dev_server.log_path.read_text()[-4000:]}"
        execution = project.tree("").find("", "MyExecutions", "ui_s3")
        assert project.tree(execution).attrs(execution)["status"] == "success"

        user = project.http.get(f"{dev_server.url}/api/user")
        user.raise_for_status()
        settings_text = project.http.get(f"{dev_server.url}/api/user/settings").text
        for secret in (s3["secretAccessKey"], s3["accessKeyId"]):
            assert secret not in user.text and secret not in settings_text, "a secret is in the user's settings"
        saved = user.json()["settings"][component]
        assert saved["storage"] == "s3" and saved["storage.s3.endpoint"] == s3["endpoint"]
        assert not [k for k in saved if k.startswith("storage.sciserver-files.")]  # backends not chosen: not sent

        # The saved settings come back (a fresh page: nothing kept in memory), the secrets do not.
        page.goto(f"{dev_server.url}/?{query}", wait_until="load", timeout=ui.UI_TIMEOUT_MS)
        page.get_by_text("GenerateNumbers", exact=True).first.wait_for(state="visible")
        dialog = _open(page, "ExecutePipeline")
        assert ui._field(dialog, "Storage backend").input_value() == "s3"
        assert _row(dialog, "storage.s3.endpoint").locator("input").input_value() == s3["endpoint"]
        assert _row(dialog, "storage.s3.secretAccessKey").locator("input").input_value() == ""
        _cancel(dialog)

        # ---- per-operation targets: the operation selected in the editor
        page.get_by_text("GenerateNumbers", exact=True).first.click()
        page.wait_for_function("() => WebGMEGlobal.State.getActiveSelection().length === 1")
        dialog = _open(page, "SetExecutionTargets")
        assert "operation \u201cGenerateNumbers\u201d" in dialog.locator(".target-origin").inner_text()
        ui._field(dialog, "Storage backend").select_option("gme")
        assert not [n for n in _shown(page, "storage.") if "apiToken" in n]  # no secrets on a node
        screenshot("set-targets-selection")
        assert "finished with success" in _run(page, dialog, "SetExecutionTargets")
        assert _targets(project, generate) == {"storage": {"id": "gme", "config": {}}}
        assert _targets(project, pipeline) == {}

        # ---- the pipeline's own targets (nothing selected after a reload)
        page.goto(f"{dev_server.url}/?{query}", wait_until="load", timeout=ui.UI_TIMEOUT_MS)
        page.get_by_text("GenerateNumbers", exact=True).first.wait_for(state="visible")
        dialog = _open(page, "SetExecutionTargets")
        assert "pipeline \u201cExample\u201d" in dialog.locator(".target-origin").inner_text()
        ui._field(dialog, "Storage backend").select_option("s3")
        _row(dialog, "storage.s3.endpoint").locator("input").fill(s3["endpoint"])
        _row(dialog, "storage.s3.bucketName").locator("input").fill(s3["bucketName"])
        assert "finished with success" in _run(page, dialog, "SetExecutionTargets")
        own = _targets(project, pipeline)["storage"]
        assert own["id"] == "s3" and own["config"]["bucketName"] == s3["bucketName"]

        dialog = _open(page, "ExecutePipeline")
        origin = dialog.locator(".target-origin").inner_text()
        assert "set on pipeline \u201cExample\u201d by SetExecutionTargets" in origin and "s3" in origin
        assert f"bucketName: {s3['bucketName']}" in origin and "maxAttempts" not in origin  # defaults not listed
        assert "gme is the own choice of GenerateNumbers" in origin
        storage_row = _row(dialog, "storage")
        assert storage_row.locator("select").count() == 0 and "s3" in storage_row.inner_text()  # locked: the run's
        assert s3["bucketName"] in _row(dialog, "storage.s3.bucketName").inner_text()  # shown, read-only
        assert _row(dialog, "storage.s3.secretAccessKey").locator("input").get_attribute("type") == "password"
        assert _row(dialog, "storage.gme.apiToken").is_visible()  # GenerateNumbers' backend: its secret asked
        screenshot("node-targets")

        # ---- a run on the nodes' own targets: s3 (the pipeline's, its secrets typed here), gme (GenerateNumbers')
        ui._field(dialog, "Execution name").fill("ui_targets")
        for field in ("accessKeyId", "secretAccessKey"):
            _row(dialog, f"storage.s3.{field}").locator("input").fill(str(s3[field]))
        text = _run(page, dialog, "ExecutePipeline")
        assert "finished with success" in text, f"{text}\n{dev_server.log_path.read_text()[-4000:]}"
        m = project.tree("")
        execution = m.find("", "MyExecutions", "ui_targets")
        assert _output_backends(m, m.find(execution, "GenerateNumbers")) == {"gme"}
        assert _output_backends(m, m.find(execution, "SumNumbers")) == {"s3"}

        # ---- ExecuteJob on a Job (what the Execution view's re-run opens): the job's own targets preselected
        job = m.find(execution, "GenerateNumbers")
        job_query = urllib.parse.urlencode({"project": project.project_id, "branch": "master", "node": job})
        page.goto(f"{dev_server.url}/?{job_query}", wait_until="load", timeout=ui.UI_TIMEOUT_MS)
        page.wait_for_function(ACTIVE_IS, arg=job)
        dialog = _open(page, "ExecuteJob")
        origin = dialog.locator(".target-origin").inner_text()
        assert "Storage: gme, set on job \u201cGenerateNumbers\u201d" in origin, origin
        assert "s3" not in origin  # the execution's storage does not apply to this job
        assert "Compute" not in origin  # no compute set anywhere: the dialog's choice applies
        assert ui._field(dialog, "Compute backend").count() == 1
        screenshot("execute-job")
        _cancel(dialog)

        # ---- UploadArtifact (on MyArtifacts): the same dialog, storage only
        artifacts = m.find("", "MyArtifacts")
        artifacts_query = urllib.parse.urlencode({"project": project.project_id, "branch": "master", "node": artifacts})
        page.goto(f"{dev_server.url}/?{artifacts_query}", wait_until="load", timeout=ui.UI_TIMEOUT_MS)
        page.wait_for_function(ACTIVE_IS, arg=artifacts)
        dialog = _open(page, "UploadArtifact")
        ui._field(dialog, "Storage backend").select_option("s3")
        shown = _shown(page, "")
        assert shown and all(n.startswith("storage.s3.") for n in shown), shown
        assert _row(dialog, "storage.s3.secretAccessKey").locator("input").get_attribute("type") == "password"
        screenshot("upload-artifact")
        _cancel(dialog)
    except Exception:
        page.screenshot(path=str(tmp_path / "dialog-failure.png"))
        raise
