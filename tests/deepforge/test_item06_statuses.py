"""Issue 18 item 6: statuses as DeepForge's, on a project from DeepForge's ``project.webgmex``.

A failed Job is ``fail`` (what DeepForge's ExecuteJob/ExecutePipeline write and its JobDecorator colours by), a
failed Execution ``failed``.  A cancel request is ``canceled`` written on the running Execution, a value of
DeepForge's Execution enum (what its property editor offers): the runner cancels the jobs and ends the
Execution ``canceled`` with an ``endTime``; CancelExecution writes the same.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.deepforge import dump_seed_meta
from tests.fixtures.plugins import GmeProject
from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(600)]

PRODUCE = """
import time


class Produce():
    def __init__(self, delay=0):
        self.delay = delay

    def execute(self):
        time.sleep(self.delay)
        x = [1, 2]
        return x
"""
REFUSE = """
class Refuse():
    def execute(self, x):
        raise ValueError("refused " + repr(x))
"""
#: What DeepForge's plugins write on a Job besides its enum: ExecuteJob's onComplete writes 'fail'.
DEEPFORGE_JOB_WRITES = {"fail"}


@pytest.fixture(scope="module")
def enums(deepforge_seeds: Path) -> dict[str, list[str]]:
    meta = dump_seed_meta(deepforge_seeds / "project.webgmex")["meta"]
    return {kind: meta[f"pipeline.{kind}"]["attributes"]["status"]["enum"] for kind in ("Execution", "Job")}


def dialog(tmp_path: Path) -> dict[str, Any]:
    return {
        "storage": "local",
        "storage.local.root": str(tmp_path / "store"),
        "compute": "local",
        "compute.local.workDir": str(tmp_path / "work"),
    }


def import_pipeline(project: GmeProject, delay: float = 0, refuse: bool = False) -> str:
    second = REFUSE if refuse else "class Keep():\n    def execute(self, x):\n        y = x\n        return y\n"
    spec = {
        "name": "statuses",
        "operations": [
            {"name": "Produce", "code": PRODUCE, "outputs": ["x"], "attributes": {"delay": delay}},
            {"name": "Second", "code": second, "inputs": ["x"], "outputs": ["y"]},
        ],
        "connections": [["Produce.x", "Second.x"]],
    }
    result = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert result["success"], result.get("error")
    return str(result["messages"][0]["message"])


def statuses(project: GmeProject, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    m = project.tree("")
    ex = m.find("", "MyExecutions", name)
    jobs = {m.attrs(j)["name"]: m.attrs(j)["status"] for j in m.children(ex) if m.meta(j) == "pipeline.Job"}
    return m.attrs(ex), jobs


@pytest.mark.parametrize("which", ["deepforge_project", "deepforge_project_ns"])
def test_a_failed_job_is_fail_and_its_execution_failed(
    which: str, request: pytest.FixtureRequest, tmp_path: Path, enums: dict[str, list[str]]
) -> None:
    project: GmeProject = request.getfixturevalue(which)
    pipe = import_pipeline(project, refuse=True)
    result = project.run("ExecutePipeline", pipe, {"name": "refused", **dialog(tmp_path)})
    assert not result["success"] and "Second" in result["error"]
    execution, jobs = statuses(project, "refused")
    assert jobs == {"Produce": "success", "Second": "fail"}
    assert execution["status"] == "failed" and execution["status"] in enums["Execution"]


def _started(project: GmeProject, name: str) -> bool:
    try:
        _, jobs = statuses(project, name)
    except LookupError:
        return False
    return jobs.get("Produce") == "running"


@pytest.mark.parametrize("how", ["status set in the model", "CancelExecution"])
def test_a_cancel_request_is_a_value_of_deepforges_enum(
    how: str, deepforge_project: GmeProject, tmp_path: Path, enums: dict[str, list[str]]
) -> None:
    project = deepforge_project
    pipe = import_pipeline(project, delay=120)
    run_id = project.start("ExecutePipeline", pipe, {"name": "long", **dialog(tmp_path)})
    wait_for(lambda: _started(project, "long"), 120, what="Produce running")
    ex = project.tree("").find("", "MyExecutions", "long")
    if how == "CancelExecution":
        result = project.run("CancelExecution", ex, dialog(tmp_path))
    else:  # what a user does in DeepForge's property editor: pick 'canceled' from the status dropdown
        assert "canceled" in enums["Execution"]
        result = project.run("SetAttributes", ex, {"attrs": {"status": "canceled"}})
    assert result["success"], result.get("error")
    outcome = project.wait_result("ExecutePipeline", run_id, timeout=120)
    assert not outcome["success"] and "canceled" in outcome["error"]
    execution, jobs = statuses(project, "long")
    assert execution["status"] == "canceled" and execution["endTime"] >= execution["startTime"] > 0
    assert jobs == {"Produce": "canceled", "Second": "canceled"}
    assert set(jobs.values()) <= set(enums["Job"]) | DEEPFORGE_JOB_WRITES
