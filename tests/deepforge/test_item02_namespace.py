"""Issue 18 item 2: the plugins find the pipeline language whatever the namespace they run under.

On a project made from DeepForge's ``project.webgmex`` the language is the library ``pipeline``: over REST
(webgme-engine's plugin route drops ``namespace``) META names are ``pipeline.Pipeline``; DeepForge's UI sends
``namespace: "pipeline"`` (names ``Pipeline``).  Every plugin runs both ways: UploadArtifact, ImportPipeline
(an Input fed by the artifact, an operation, an Output), SetExecutionTargets, ExecutePipeline, ExecuteJob and
CancelExecution.
"""

from __future__ import annotations

import io
import json
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.webgme.blob import BlobClient

from tests.fixtures.plugins import GmeProject

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(600)]

DOUBLE = """
class Double():
    def execute(self, x):
        y = [2 * v for v in x]
        print("doubled", y)
        return y
"""


@pytest.fixture(params=["deepforge_project", "deepforge_project_ns"], ids=["rest", "namespace-pipeline"])
def project(request: pytest.FixtureRequest) -> GmeProject:
    gme: GmeProject = request.getfixturevalue(request.param)
    return gme


def read_output(info_text: str, root: Path) -> Any:
    info = DataInfo.from_json(info_text)
    with storage.get_client(info.backend, {"root": str(root)}).get_file_stream(info) as f:
        return pickle.loads(f.read())


def test_every_plugin_runs_on_a_deepforge_project(project: GmeProject, tmp_path: Path) -> None:
    store = tmp_path / "store"
    local = {"storage": "local", "storage.local.root": str(store)}
    blob_hash, _ = BlobClient(project.url).create_file("numbers.pkl", io.BytesIO(pickle.dumps([4, 5])))
    result = project.run("UploadArtifact", "", {"file": blob_hash, "name": "numbers", "type": "list", **local})
    assert result["success"], result.get("error")

    spec = {
        "name": "doubling",
        "operations": [
            {"name": "numbers", "input": "numbers"},
            {"name": "Double", "code": DOUBLE, "inputs": ["x"], "outputs": ["y"]},
            {"name": "save", "output": True, "saveName": "doubled"},
        ],
        "connections": [["numbers.data", "Double.x"], ["Double.y", "save.saveData"]],
    }
    result = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert result["success"], result.get("error")
    pipe = str(result["messages"][0]["message"])
    m = project.tree("")
    assert pipe == m.find("", "MyPipelines", "doubling")
    # DeepForge's Input and Output come with their ports: ImportPipeline uses them, makes no second one
    for op, box in (("numbers", "Outputs"), ("save", "Inputs")):
        assert len(m.children(m.find(pipe, op, box))) == 1, op

    targets = {**local, "compute": "local", "compute.local.workDir": str(tmp_path / "work")}
    result = project.run("SetExecutionTargets", pipe, targets)
    assert result["success"], result.get("error")
    result = project.run("ExecutePipeline", pipe, {"name": "run1"})
    assert result["success"], result.get("error")

    m = project.tree("")
    ex = m.find("", "MyExecutions", "run1")
    assert m.attrs(ex)["status"] == "success"
    assert {m.attrs(job)["status"] for job in m.children(ex) if m.attrs(job).get("name") in spec_names(spec)} == {
        "success"
    }
    assert read_output(m.attrs(m.find("", "MyArtifacts", "doubled"))["data"], store) == [8, 10]

    result = project.run("ExecuteJob", m.find(ex, "Double"), {})
    assert result["success"], result.get("error")
    result = project.run("CancelExecution", ex, {})
    assert result["success"], result.get("error")
    assert "already success" in json.dumps(result["messages"])


def spec_names(spec: dict[str, Any]) -> set[str]:
    return {op["name"] for op in spec["operations"]}


def test_a_project_without_the_language_is_refused_with_a_clear_error(plugin_stack: Any) -> None:
    """An empty project (webgme's EmptyProject seed): the error says what is missing, not 'runs on a Pipeline'."""
    gme = GmeProject(plugin_stack.url, f"nolang_{uuid.uuid4().hex[:10]}").create("EmptyProject")
    try:
        result = gme.run("ExecutePipeline", "/1", {})
        assert not result["success"]
        assert "no pipeline language" in result["error"] and "Pipeline" in result["error"]
    finally:
        gme.http.delete(f"{gme.url}/api/projects/{gme.owner}/{gme.name}")
