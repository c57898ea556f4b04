"""ExecutePipeline on wide pipelines: a run keeps at most ``$DEEPFORGE_MAX_RUNNING_JOBS`` jobs submitted at once
(a 500-wide fan-out was 500 local-compute supervisor processes, or 500 executor watchers, at the same time),
and still runs every job; the model records every job's outcome."""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject, plugin_stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SOURCE = """
class Source:
    def execute(self):
        return 1
"""

# Each step logs when it ran; it sleeps so that two steps in flight at once would overlap.
STEP = """
import time


class {name}:
    def __init__(self, log=""):
        self.log = log

    def execute(self, x):
        began = time.time()
        time.sleep(2)
        with open(self.log, "a") as fh:
            fh.write(f"{{began!r}} {{time.time()!r}}\\n")
        return x
"""


def fanout(width: int, log: Path) -> dict[str, Any]:
    ops: list[dict[str, Any]] = [{"name": "Source", "code": SOURCE, "outputs": ["x"]}]
    for i in range(width):
        name = f"Step_{i}"
        ops.append({"name": name, "code": STEP.format(name=name), "inputs": ["x"], "outputs": ["y"],
                    "attributes": {"log": str(log)}})  # fmt: skip
    return {"name": "wide", "operations": ops, "connections": [["Source.x", f"Step_{i}.x"] for i in range(width)]}


@pytest.fixture(scope="module")
def capped_stack(webgme_stack_factory: Any, secret_key: str, plugin_policy: Path) -> Any:
    env = plugin_stack_env(secret_key, plugin_policy, DEEPFORGE_MAX_RUNNING_JOBS="1")
    return webgme_stack_factory(worker_refresh_ms=250, plugin_paths=(str(TEST_PLUGINS),), env=env)


def test_a_wide_fanout_runs_one_job_at_a_time_under_a_cap_of_one(capped_stack: Any, tmp_path: Path) -> None:
    gme = GmeProject(capped_stack.url, f"scale_{uuid.uuid4().hex[:10]}").create()
    log = tmp_path / "steps.log"
    imported = gme.run("ImportPipeline", "", {"pipeline": json.dumps(fanout(4, log))})
    assert imported["success"], imported.get("error")
    dialog = {"name": "capped", "storage": "local", "storage.local.root": str(tmp_path / "store"), "compute": "local",
              "compute.local.workDir": str(tmp_path / "work"), "compute.local.processes": 4}  # fmt: skip
    result = gme.run("ExecutePipeline", str(imported["messages"][0]["message"]), dialog)
    assert result["success"], result.get("error")

    spans = sorted(tuple(map(float, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 4  # every step ran
    for (_, ended), (began, _) in itertools.pairwise(spans):
        assert began >= ended  # never two at once, though compute had 4 processes free
    model = gme.tree("")
    execution = model.find("", "MyExecutions", "capped")
    assert model.attrs(execution)["status"] == "success"
    for child in model.children(execution):
        if model.attrs(child).get("name", "").startswith("Step_"):
            assert model.attrs(child)["status"] == "success"


def test_a_chain_costs_at_most_two_commits_per_job(gme: Any, tmp_path: Path) -> None:
    """A job's success and the start of the job it feeds share one commit, its repeated ``queued`` costs none:
    at most ``running`` + (success with the next start) per job, plus creating and starting the run, the first
    job's start and the run's end (it was queued, queued again, running and success: four per job)."""
    ops: list[dict[str, Any]] = [{"name": "Source", "code": SOURCE, "outputs": ["x"]}]
    for i in range(1, 4):
        code = f"class Step_{i}:\n    def execute(self, x):\n        return x + 1\n"
        ops.append({"name": f"Step_{i}", "code": code, "inputs": ["x"], "outputs": ["y"]})
    links = [["Source.x", "Step_1.x"], ["Step_1.y", "Step_2.x"], ["Step_2.y", "Step_3.x"]]
    imported = gme.run("ImportPipeline", "", {"pipeline": json.dumps({"name": "chain", "operations": ops,
                                                                       "connections": links})})  # fmt: skip
    assert imported["success"], imported.get("error")

    def commits() -> int:
        r = gme.http.get(f"{gme.url}/api/projects/{gme.owner}/{gme.name}/commits", params={"n": 10_000})
        r.raise_for_status()
        return len(r.json())

    before = commits()
    dialog = {"name": "chain", "storage": "local", "storage.local.root": str(tmp_path / "store"), "compute": "local",
              "compute.local.workDir": str(tmp_path / "work")}  # fmt: skip
    result = gme.run("ExecutePipeline", str(imported["messages"][0]["message"]), dialog)
    assert result["success"], result.get("error")
    assert commits() - before <= 2 * len(ops) + 4
