"""The plugins from the WebGME UI: headless Chromium (Debian's) driven by Playwright runs ExecutePipeline
from the plugin menu of a pipeline and the Execution succeeds.

Skipped when Playwright or /usr/bin/chromium is missing (Playwright's own browser download cannot work
offline; the system browser is used).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]

SPEC = {
    "name": "ui_demo",
    "operations": [
        {"name": "Make", "code": "class Make:\n    def execute(self):\n        return [1, 2, 3]\n", "outputs": ["x"]},
        {
            "name": "Total",
            "code": "class Total:\n    def execute(self, x):\n        print('ui total', sum(x))\n"
            "        return sum(x)\n",
            "inputs": ["x"],
            "outputs": ["t"],
        },
    ],
    "connections": [["Make.x", "Total.x"]],
}


@pytest.fixture
def ui_stack(webgme_stack_factory: Any, tmp_path: Path, secret_key: str) -> Any:
    """A server whose backend defaults (local storage root, local compute dir) point into this test's dir,
    so the dialog can be run with its defaults, as a user would."""
    return webgme_stack_factory(
        plugin_paths=(str(TEST_PLUGINS),),
        env={
            "DEEPFORGE_SECRET_KEY": secret_key,
            "DEEPFORGE_STORAGE_ROOT": str(tmp_path / "store"),
            "DEEPFORGE_LOCAL_COMPUTE_DIR": str(tmp_path / "work"),
        },
    )


def test_execute_pipeline_from_the_plugin_menu(ui_stack: Any) -> None:
    gme = GmeProject(ui_stack.url, f"ui_{uuid.uuid4().hex[:8]}").create()
    result = gme.run("ImportPipeline", "", {"pipeline": json.dumps(SPEC)})
    assert result["success"], result.get("error")
    pipe = result["messages"][0]["message"]

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{ui_stack.url}/?project={gme.owner}%2B{gme.name}&branch=master&node={pipe}")
            page.wait_for_selector("text=Total", timeout=60_000)
            page.locator('a[title="Execute plug-in"]:not(.disabled)').click(timeout=60_000)
            page.locator('a[title="Execute plug-in"] + ul.dropdown-menu').get_by_text("ExecutePipeline").click()
            dialog = page.locator(".modal-dialog:visible")
            dialog.wait_for(timeout=30_000)
            dialog.locator("a.btn-save").click()
            deadline = time.monotonic() + 180
            status = None
            while time.monotonic() < deadline:
                model = gme.tree("")
                executions = model.children(model.find("", "MyExecutions"))
                if executions:
                    status = model.attrs(executions[0]).get("status")
                    if status in ("success", "failed", "canceled"):
                        break
                time.sleep(1)
            page.screenshot(path=str(Path(ui_stack.run_dir) / "ui.png"))
        finally:
            browser.close()
    assert status == "success"
    total = model.find(executions[0], "Total")
    assert "ui total 6" in model.attrs(total)["stdout"]
