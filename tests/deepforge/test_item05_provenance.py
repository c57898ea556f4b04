"""Issue 18 item 5: provenance as DeepForge writes it (ExecuteJob.recordProvenance, ExecutionHelpers).

On a project from DeepForge's ``project.webgmex``, after a run: every output port of an operation that ran has
``provOutput`` (its name), an ``ExecutedJob`` child whose ``operation`` points at a snapshot of the operation
(an Operation with its code and attribute values, its input ports copied, its output ports), and a
``provenance`` pointer to that ExecutedJob; the input ports the data went to, and the artifact an Output saved,
carry a copy of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.plugins import GmeProject, Model

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(600)]

PRODUCE = """
class Produce():
    def __init__(self, n=3):
        self.n = n

    def execute(self):
        x = list(range(self.n))
        return x
"""
DOUBLE = """
class Double():
    def execute(self, x):
        y = [2 * v for v in x]
        return y
"""


def dialog(tmp_path: Path) -> dict[str, Any]:
    return {
        "storage": "local",
        "storage.local.root": str(tmp_path / "store"),
        "compute": "local",
        "compute.local.workDir": str(tmp_path / "work"),
    }


def run_pipeline(project: GmeProject, tmp_path: Path) -> tuple[Model, str]:
    spec = {
        "name": "prov",
        "operations": [
            {"name": "Produce", "code": PRODUCE, "outputs": ["x"], "attributes": {"n": 4}},
            {"name": "Double", "code": DOUBLE, "inputs": ["x"], "outputs": ["y"]},
            {"name": "save", "output": True, "saveName": "doubled"},
        ],
        "connections": [["Produce.x", "Double.x"], ["Double.y", "save.saveData"]],
    }
    result = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert result["success"], result.get("error")
    pipe = str(result["messages"][0]["message"])
    result = project.run("ExecutePipeline", pipe, {"name": "prov_run", **dialog(tmp_path)})
    assert result["success"], result.get("error")
    m = project.tree("")
    return m, m.find("", "MyExecutions", "prov_run")


def provenance_of(m: Model, port: str) -> tuple[str, str]:
    """(the ExecutedJob, the operation snapshot) of a port, checked to be DeepForge's shape."""
    executed = m.pointer(port, "provenance")
    assert executed is not None, f"{port} has no provenance pointer"
    assert executed in m.children(port), "the ExecutedJob is a child of the port"
    assert m.meta(executed) == "pipeline.ExecutedJob"
    snapshot = m.pointer(executed, "operation")
    assert snapshot is not None and snapshot in m.children(executed)
    assert m.meta(snapshot) == "pipeline.Operation"
    return executed, snapshot


@pytest.mark.parametrize("which", ["deepforge_project", "deepforge_project_ns"])
def test_outputs_and_artifacts_record_their_provenance(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    project: GmeProject = request.getfixturevalue(which)
    m, ex = run_pipeline(project, tmp_path)
    double_job = m.find(ex, "Double")
    (double_op,) = m.children(double_job)

    y = m.find(double_op, "Outputs", "y")
    assert m.attrs(y)["provOutput"] == "y"
    _, snapshot = provenance_of(m, y)
    attrs = m.attrs(snapshot)
    assert attrs["name"] == "Double" and attrs["code"] == m.attrs(double_op)["code"]
    assert m.attrs(m.find(snapshot, "Inputs", "x"))["data"] == m.attrs(m.find(double_op, "Inputs", "x"))["data"]
    assert m.find(snapshot, "Outputs", "y")

    produce_x = m.find(m.children(m.find(ex, "Produce"))[0], "Outputs", "x")
    _, produce_snapshot = provenance_of(m, produce_x)
    assert m.attrs(produce_snapshot)["n"] == 4  # the attribute values the operation ran with
    # the port the data went to carries a copy of its provenance (ExecutePipeline's setDataContents)
    double_x = m.find(double_op, "Inputs", "x")
    assert m.attrs(double_x)["provOutput"] == "x"
    _, copied = provenance_of(m, double_x)
    assert m.attrs(copied)["name"] == "Produce"

    artifact = m.find("", "MyArtifacts", "doubled")
    assert m.attrs(artifact)["provOutput"] == "y"
    _, saved_snapshot = provenance_of(m, artifact)
    assert m.attrs(saved_snapshot)["name"] == "Double"
    assert m.attrs(saved_snapshot)["code"] == m.attrs(double_op)["code"]


def test_a_rerun_replaces_the_provenance(deepforge_project: GmeProject, tmp_path: Path) -> None:
    m, ex = run_pipeline(deepforge_project, tmp_path)
    (double_op,) = m.children(m.find(ex, "Double"))
    result = deepforge_project.run("ExecutePipeline", ex, dialog(tmp_path))
    assert result["success"], result.get("error")
    m = deepforge_project.tree("")
    for port in (m.find(double_op, "Outputs", "y"), m.find(double_op, "Inputs", "x")):
        executed = [c for c in m.children(port) if m.meta(c) == "pipeline.ExecutedJob"]
        assert executed == [m.pointer(port, "provenance")], port  # one, the new one
