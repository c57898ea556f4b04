"""The plugins run from the WebGME UI: headless Chromium executes the demo pipeline through the plugin menu.

The server is the one ``make dev`` starts (``python -m deepforge_dev.stack dev``, here on a free
port with its own run dir), so the demo project and its example pipeline come from the same seeding a
developer gets.  The browser (Debian's ``chromium``, installed by ``make browser``; Playwright only drives it)
opens the pipeline, picks ExecutePipeline from the toolbar's "Execute plug-in" menu, runs it with the dialog's
defaults (local storage, local compute) and waits for the success notification; the model is then read back
over REST to check that the new Execution and its jobs ended ``success``.  A screenshot of the final page
(or of the page at a failure) is left in the test's tmp dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.secrets import generate_key
from deepforge_dev.stack import free_port, interrupt_then_kill, repo_root

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]

CHROMIUM = os.environ.get("DEEPFORGE_CHROMIUM", "/usr/bin/chromium")
# Headless and offline: no sandbox (containers run as root), no GPU, and none of Chromium's own network
# traffic (QUIC probes, component updates, sync) that would wait on an internet this machine lacks.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_PROJECT = "UiDemo"
STARTUP_TIMEOUT = 240.0  # s: `dev` boots the database and the server, then seeds the demo project
UI_TIMEOUT_MS = 180_000  # the UI loads ~hundreds of AMD modules; slow on a loaded 2-core machine
RUN_TIMEOUT_MS = 600_000  # the whole pipeline, both jobs through local compute


#: The text of the plugin toolbar's result notification for a plugin, once one is shown (else null).
RESULT_NOTIFICATION = """plugin => {
    const note = [...document.querySelectorAll('[data-notify="container"]')].find(n => n.innerText.includes(plugin));
    return note ? note.innerText : null;
}"""


@dataclass
class DevServer:
    url: str
    log_path: Path


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[DevServer]:
    """``make dev``'s command on a free port, with the tests' DumpModel plugin; its state is under its run dir."""
    log_path = tmp_path / "dev.log"
    port = free_port()
    env = {
        **os.environ,
        "DEEPFORGE_PLUGIN_PATHS": str(TEST_PLUGINS),  # DumpModel, to read the model back
        "DEEPFORGE_PLUGIN_ZMQ_PORT": str(free_port()),  # not the shared default 5555
        "DEEPFORGE_SECRET_KEY": generate_key(),
    }
    argv = [sys.executable, "-m", "deepforge_dev.stack", "dev", "--run-dir", str(tmp_path / "run"),
            "--port", str(port), "--demo-project", DEMO_PROJECT]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, cwd=repo_root(), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_line(proc, log_path, "demo project:", STARTUP_TIMEOUT)
        yield DevServer(f"http://127.0.0.1:{port}", log_path)
    finally:
        interrupt_then_kill(proc)  # Ctrl-C, as a developer stops `make dev`


def _wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float) -> None:
    def printed() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"`stack dev` exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
        return text in log_path.read_text(errors="replace")

    wait_for(printed, timeout, f"`stack dev` to print {text!r} (log: {log_path})", interval=0.25)


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium page with a fresh profile; skipped only when no Chromium is installed."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM}: `make browser` installs Debian's chromium (needs apt)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: `make install`")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1600, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            yield page
        finally:
            context.close()


def _field(dialog: Any, label: str) -> Any:
    """The input/select of the config dialog row whose label reads ``label``."""
    row = dialog.locator(".form-group").filter(has=dialog.page.get_by_text(label, exact=True))
    return row.locator("input, select").first


def test_execute_pipeline_from_the_plugin_menu(browser_page: Any, dev_server: DevServer, tmp_path: Path) -> None:
    page = browser_page
    project = GmeProject(dev_server.url, DEMO_PROJECT)
    pipeline = project.tree("").find("", "MyPipelines", "Example")

    query = urllib.parse.urlencode({"project": project.project_id, "branch": "master", "node": pipeline})
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

    # What a person would look at next: the Execution, its jobs in the editor, its status in the property editor.
    query = urllib.parse.urlencode({"project": project.project_id, "branch": "master", "node": execution})
    page.goto(f"{dev_server.url}/?{query}", wait_until="load", timeout=UI_TIMEOUT_MS)
    page.get_by_text("SumNumbers", exact=True).first.wait_for(state="visible")
    page.screenshot(path=str(tmp_path / "ui-execution.png"))
