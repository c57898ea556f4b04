"""Our WebGME visualizers in headless Chromium: the PipelineEditor and the ExecutionView (docs/ui.md).

One ``make dev`` server and one browser page serve both tests (the UI loads hundreds of AMD modules: each
page load is slow on a loaded machine).  What the SVG shows is checked against the model read over REST
(DumpModel): one port element per Data port of each operation, one arrow per Transporter, between the same
port paths.  The Execution test gates its slow operation on a file the test creates, so "running" lasts
exactly as long as the test needs it to: no sleeps, no timed assertions.  Screenshots land in each test's
tmp dir.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.browser import UI_TIMEOUT_MS, DevServer, chromium_page, running_dev_server
from tests.fixtures.plugins import GmeProject, Model
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(1200)]

RUN_TIMEOUT_MS = 600_000  # a job through local compute on a loaded machine

#: What the SVG of the shown graph holds: {name: {inputs, outputs}} with port names, and the arrows' ends.
READ_SVG = """() => {
    const nodes = {};
    for (const g of document.querySelectorAll('g.dag-node')) {
        const ports = kind => [...g.querySelectorAll(`g.dag-port[data-kind="${kind}"]`)]
            .map(p => [p.dataset.id, p.dataset.name]);
        nodes[g.dataset.name] = {id: g.dataset.id, status: g.dataset.status, inputs: ports('input'),
                                 outputs: ports('output'), top: g.getBoundingClientRect().top};
    }
    const edges = [...document.querySelectorAll('path.dag-edge')].map(e => [e.dataset.src, e.dataset.dst]);
    return {nodes, edges};
}"""

#: An operation that prints a tick every half second until the file named by its ``gate`` attribute exists.
GATED = """import os
import time


class Slow:
    def __init__(self, gate=""):
        self.gate = gate

    def execute(self, numbers):
        i = 0
        while not os.path.exists(self.gate) and i < 2400:
            print("tick", i, flush=True)
            i += 1
            time.sleep(0.5)
        print("gate open after", i, "ticks")
        return sum(numbers)
"""
PRODUCE = 'class Produce:\n    def execute(self):\n        print("producing")\n        return [1, 2, 3]\n'
TOTAL = "class Slow:\n    def execute(self, numbers):\n        return sum(numbers)\n"
DOUBLE = "class Double:\n    def execute(self, numbers):\n        return [2 * n for n in numbers]\n"
REPORT = (
    'class Report:\n    def execute(self, total, doubled):\n        print("report", total, doubled)\n        return 1\n'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with running_dev_server(tmp_path_factory.mktemp("ui-views-dev")) as dev:
        yield dev


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium_page(tmp_path_factory.mktemp("ui-views-chromium")) as p:
        yield p


@pytest.fixture(scope="module")
def project(server: DevServer) -> GmeProject:
    return GmeProject(server.url, "UiDemo")


def open_node(page: Any, server: DevServer, project: GmeProject, node: str, visualizer: str) -> None:
    query = {"project": project.project_id, "branch": "master", "node": node, "visualizer": visualizer}
    page.goto(f"{server.url}/?{urllib.parse.urlencode(query)}", wait_until="load", timeout=UI_TIMEOUT_MS)


def import_pipeline(project: GmeProject, spec: dict[str, Any]) -> str:
    result = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert result["success"], result.get("error")
    return str(result["messages"][0]["message"])


def model_graph(model: Model, container: str) -> tuple[dict[str, Any], list[list[str | None]]]:
    """What the view must draw for a Pipeline or Execution, from the model: ports per operation/job, and the
    (src, dst) port paths of each Transporter."""
    nodes, edges = {}, []
    for child in model.children(container):
        meta = model.meta(child) or ""
        if meta.endswith("Transporter"):
            edges.append([model.pointer(child, "src"), model.pointer(child, "dst")])
            continue
        operation = child
        if meta.endswith("Job"):
            operation = next(c for c in model.children(child) if (model.meta(c) or "").endswith("Operation"))
        boxes = {model.attrs(b)["name"]: b for b in model.children(operation)}
        ports = {kind: sorted([p, model.attrs(p)["name"]] for p in model.children(boxes[box]))
                 for kind, box in (("inputs", "Inputs"), ("outputs", "Outputs"))}  # fmt: skip
        nodes[model.attrs(child)["name"]] = ports
    return nodes, edges


def assert_view_matches(shown: dict[str, Any], model: Model, container: str) -> None:
    nodes, edges = model_graph(model, container)
    assert {name: {k: sorted(n[k]) for k in ("inputs", "outputs")} for name, n in shown["nodes"].items()} == nodes
    assert sorted(shown["edges"]) == sorted(edges)
    assert edges, "a pipeline with connections"


def console(page: Any) -> str:
    return str(page.locator(".execution-view-panel pre.execution-console").inner_text())


def test_pipeline_view_shows_ports_and_arrows(
    server: DevServer, page: Any, project: GmeProject, tmp_path: Path
) -> None:
    example = project.tree("").find("", "MyPipelines", "Example")
    demo = urllib.parse.parse_qs(urllib.parse.urlsplit(server.demo_url).query)
    assert demo["node"] == [example] and demo["visualizer"] == ["PipelineEditor"], server.demo_url
    try:
        # the URL `make dev` prints lands on the example pipeline, drawn by our PipelineEditor
        page.goto(server.demo_url, wait_until="load", timeout=UI_TIMEOUT_MS)
        page.locator('.pipeline-editor-panel g.dag-node[data-name="SumNumbers"]').wait_for()
        shown = page.evaluate(READ_SVG)
        assert_view_matches(shown, project.tree(example), example)
        assert shown["nodes"]["GenerateNumbers"]["top"] < shown["nodes"]["SumNumbers"]["top"]  # data flows down

        # clicking an operation makes it WebGME's active selection (what SetExecutionTargets applies to)
        page.locator('g.dag-node[data-name="SumNumbers"]').click()
        page.locator('g.dag-node.selected[data-name="SumNumbers"]').wait_for()
        state = page.evaluate("() => [WebGMEGlobal.State.getActiveObject(), WebGMEGlobal.State.getActiveSelection()]")
        assert state == [example, [shown["nodes"]["SumNumbers"]["id"]]]
        page.screenshot(path=str(tmp_path / "pipeline-example.png"))

        # what ImportPipeline creates is drawn with its arrows too: a diamond, laid out in three rows
        spec = {
            "name": "Diamond",
            "operations": [
                {"name": "Produce", "code": PRODUCE, "outputs": ["numbers"]},
                {"name": "Slow", "code": TOTAL, "inputs": ["numbers"], "outputs": ["total"]},
                {"name": "Double", "code": DOUBLE, "inputs": ["numbers"], "outputs": ["doubled"]},
                {"name": "Report", "code": REPORT, "inputs": ["total", "doubled"], "outputs": ["text"]},
            ],
            "connections": [["Produce.numbers", "Slow.numbers"], ["Produce.numbers", "Double.numbers"],
                            ["Slow.total", "Report.total"], ["Double.doubled", "Report.doubled"]],
        }  # fmt: skip
        diamond = import_pipeline(project, spec)
        open_node(page, server, project, diamond, "PipelineEditor")
        page.locator('.pipeline-editor-panel g.dag-node[data-name="Report"]').wait_for()
        shown = page.evaluate(READ_SVG)
        page.screenshot(path=str(tmp_path / "pipeline-imported.png"))
    except Exception:
        page.screenshot(path=str(tmp_path / "pipeline-failure.png"))
        raise
    assert_view_matches(shown, project.tree(diamond), diamond)
    rows = {name: node["top"] for name, node in shown["nodes"].items()}
    assert rows["Produce"] < rows["Slow"] == rows["Double"] < rows["Report"]
    # inputs in the order of execute()'s arguments
    assert [name for _, name in shown["nodes"]["Report"]["inputs"]] == ["total", "doubled"]


def start_execution(project: GmeProject, pipeline: str, name: str) -> str:
    """Start ExecutePipeline (local storage and compute, the dev policy's dirs); the new Execution's path."""
    project.start("ExecutePipeline", pipeline, {"name": name, "storage": "local", "compute": "local"})

    def created() -> str | None:
        try:
            return project.tree("").find("", "MyExecutions", name)
        except LookupError:
            return None

    return str(wait_for(created, 300, f"Execution {name} to be created", interval=1.0))


def test_execution_view_follows_a_run_and_cancels(
    server: DevServer, page: Any, project: GmeProject, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    spec = {
        "name": "Gated",
        "operations": [
            {"name": "Produce", "code": PRODUCE, "outputs": ["numbers"]},
            {"name": "Slow", "code": GATED, "inputs": ["numbers"], "outputs": ["total"],
             "attributes": {"gate": str(gate)}},
        ],
        "connections": [["Produce.numbers", "Slow.numbers"]],
    }  # fmt: skip
    pipeline = import_pipeline(project, spec)
    view = ".execution-view-panel"
    try:
        # run it: the new Execution shows up in the pipeline view; opened from there, the Execution view follows
        # the running job and its output streams in
        open_node(page, server, project, pipeline, "PipelineEditor")
        page.locator('.pipeline-editor-panel g.dag-node[data-name="Slow"]').wait_for()
        execution = start_execution(project, pipeline, "ui_follow")
        link = page.locator(f'.pipeline-editor-panel a.pipeline-editor-execution[data-id="{execution}"]')
        link.wait_for()
        page.screenshot(path=str(tmp_path / "pipeline-executions.png"))
        link.click()
        page.locator(f'{view} g.dag-node[data-name="Slow"][data-status="running"]').wait_for(timeout=RUN_TIMEOUT_MS)
        page.locator(f"{view} pre.execution-console", has_text="tick 0").wait_for(timeout=RUN_TIMEOUT_MS)
        ticks = len(re.findall(r"^tick \d+$", console(page), re.M))
        # more lines arrive while it runs, without a reload (the gate is still closed: it cannot have ended)
        page.locator(f"{view} pre.execution-console", has_text=f"tick {ticks + 2}").wait_for(timeout=RUN_TIMEOUT_MS)
        assert page.locator(f'{view} g.dag-node[data-name="Slow"]').get_attribute("data-status") == "running"
        assert page.locator(f"{view} .execution-status").inner_text() == "running"
        page.screenshot(path=str(tmp_path / "execution-running.png"))

        # the re-run button opens ExecuteJob's dialog, as the play menu does (closed again unrun)
        page.locator(f'{view} g.dag-node[data-name="Produce"]').click()
        assert "producing" in console(page)  # a click shows that job's output
        page.locator(f"{view} button.execution-rerun-job").click()
        dialog = page.locator(".modal.in", has_text="ExecuteJob")
        dialog.wait_for(state="visible")
        dialog.locator('[data-dismiss="modal"]').last.click()  # its Cancel
        dialog.wait_for(state="hidden")

        page.locator(f'{view} g.dag-node[data-name="Slow"]').click()
        gate.touch()  # let Slow finish
        page.locator(f'{view} g.dag-node[data-name="Slow"][data-status="success"]').wait_for(timeout=RUN_TIMEOUT_MS)
        page.locator(f'{view} .execution-status[data-status="success"]').wait_for(timeout=RUN_TIMEOUT_MS)
        page.locator(f"{view} pre.execution-console", has_text="gate open after").wait_for()
        times = page.locator(f"{view} .execution-times").inner_text()
        page.screenshot(path=str(tmp_path / "execution-success.png"))

        # a second run, canceled from the view while Slow runs
        gate.unlink()
        canceled = start_execution(project, pipeline, "ui_cancel")
        open_node(page, server, project, canceled, "ExecutionView")
        page.locator(f'{view} g.dag-node[data-name="Slow"][data-status="running"]').wait_for(timeout=RUN_TIMEOUT_MS)
        page.locator(f"{view} button.execution-cancel:not([disabled])").click()
        page.locator(f'{view} g.dag-node[data-name="Slow"][data-status="canceled"]').wait_for(timeout=RUN_TIMEOUT_MS)
        page.locator(f'{view} .execution-status[data-status="canceled"]').wait_for(timeout=RUN_TIMEOUT_MS)
        page.screenshot(path=str(tmp_path / "execution-canceled.png"))
    except Exception:
        page.screenshot(path=str(tmp_path / "execution-failure.png"))
        raise
    finally:
        gate.touch()  # whatever happened, no job is left ticking
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"started {stamp} \u00b7 ended {stamp} \u00b7 took \d.*", times), times

    model = project.tree("")
    jobs = {model.attrs(j)["name"]: model.attrs(j) for j in model.children(execution) if "status" in model.attrs(j)}
    assert model.attrs(execution)["status"] == "success"
    assert {n: j["status"] for n, j in jobs.items()} == {"Produce": "success", "Slow": "success"}
    assert "gate open after" in jobs["Slow"]["stdout"]
    assert model.attrs(canceled)["status"] == "canceled", server.log_tail()
