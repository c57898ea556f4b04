"""The plugins run from the WebGME UI: headless Chromium executes the demo pipeline through the plugin menu.

The server is the one ``make dev`` starts (``python -m deepforge_dev.stack dev``, here on a free
port with its own run dir), so the demo project and its example pipeline come from the same seeding a
developer gets.  The browser (Debian's ``chromium``, installed by ``make browser``; Playwright only drives it)
opens the pipeline, picks ExecutePipeline from the toolbar's "Execute plug-in" menu, runs it with the dialog's
defaults (local storage, local compute) and waits for the success notification; the model is then read back
over REST to check that the new Execution and its jobs ended ``success``.  A screenshot of the final page
(or of the page at a failure) is left in the test's tmp dir.  The server and browser fixtures are in
tests/fixtures/browser.py.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import DEMO_PROJECT, UI_TIMEOUT_MS, DevServer
from tests.fixtures.plugins import GmeProject

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

RUN_TIMEOUT_MS = 600_000  # the whole pipeline, both jobs through local compute


#: The text of the plugin toolbar's result notification for a plugin, once one is shown (else null).
RESULT_NOTIFICATION = """plugin => {
    const note = [...document.querySelectorAll('[data-notify="container"]')].find(n => n.innerText.includes(plugin));
    return note ? note.innerText : null;
}"""


def _field(dialog: Any, label: str) -> Any:
    """The input/select of the config dialog row whose label reads ``label``."""
    row = dialog.locator(".form-group").filter(has=dialog.page.get_by_text(label, exact=True))
    return row.locator("input, select").first


def test_execute_pipeline_from_the_plugin_menu(browser_page: Any, dev_server: DevServer, tmp_path: Path) -> None:
    page = browser_page
    project = GmeProject(dev_server.url, DEMO_PROJECT)
    pipeline = project.tree("").find("", "MyPipelines", "Example")

    view = {"project": project.project_id, "branch": "master", "visualizer": "PipelineEditor"}  # docs/ui.md
    query = urllib.parse.urlencode({**view, "node": pipeline})
    try:
        page.goto(f"{dev_server.url}/?{query}", wait_until="load", timeout=UI_TIMEOUT_MS)
        # The pipeline is the active node once the editor shows its operations.
        page.get_by_text("GenerateNumbers", exact=True).first.wait_for(state="visible")

        # The play button is enabled once the active node offers plugins (its validPlugins registry).
        page.locator('.dropdown-toggle[title="Execute plug-in"]:not(.disabled)').click()
        page.locator(".dropdown-menu.no-min-width a", has_text="ExecutePipeline").click()

        dialog = page.locator(".plugin-config-dialog.in")
        dialog.wait_for(state="visible")
        _field(dialog, "Execution name").fill("ui_run")
        _field(dialog, "Storage backend").select_option("local")
        _field(dialog, "Compute backend").select_option("local")
        dialog.get_by_text("Run...", exact=True).click()

        # The result pops up as a notification that closes itself after 10 s: read its text in one step.
        text = page.wait_for_function(RESULT_NOTIFICATION, arg="ExecutePipeline", timeout=RUN_TIMEOUT_MS).json_value()
        page.screenshot(path=str(tmp_path / "ui-after-run.png"))
    except Exception:
        page.screenshot(path=str(tmp_path / "ui-failure.png"))
        raise
    assert "finished with success" in text, f"{text}\n--- dev log ---\n{dev_server.log_path.read_text()[-4000:]}"

    model = project.tree("")
    execution = model.find("", "MyExecutions", "ui_run")
    assert model.attrs(execution)["status"] == "success"
    jobs = {model.attrs(job)["name"]: model.attrs(job) for job in model.children(execution)
            if "status" in model.attrs(job)}  # fmt: skip
    assert {name: job["status"] for name, job in jobs.items()} == {
        "GenerateNumbers": "success",
        "SumNumbers": "success",
    }
    assert "sum: 55" in jobs["SumNumbers"]["stdout"]

    # What a person would look at next: the Execution in the ExecutionView, its jobs coloured by their status.
    query = urllib.parse.urlencode({**view, "node": execution, "visualizer": "ExecutionView"})
    page.goto(f"{dev_server.url}/?{query}", wait_until="load", timeout=UI_TIMEOUT_MS)
    page.get_by_text("SumNumbers", exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(tmp_path / "ui-execution.png"))
