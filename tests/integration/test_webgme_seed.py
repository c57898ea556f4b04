"""The pipeline seed: DeepForge's ``pipeline`` library (attached as library ``pipeline``), the root containers of a
DeepForge project and an example pipeline (docs/protocols.md), and the server uses it.  The full diff against
DeepForge's own seeds is tests/deepforge/test_item01_metamodel.py."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from deepforge_dev.stack import WebGMEStack, webgme_dir

from tests.fixtures.deepforge import dump_seed_meta

pytestmark = pytest.mark.integration

SEED = webgme_dir() / "seeds" / "pipeline.webgmex"

#: meta node -> attributes the execution code reads or writes
ATTRIBUTES = {
    "Pipeline": {"thumbnail"},
    "Operation": {"code", "lineOffset", "displayColor", "condaEnv"},
    "Output": {"saveName"},
    "Data": {"data", "type", "createdAt", "provOutput"},
    "Execution": {"status", "snapshot", "tagname", "createdAt", "startTime", "endTime", "executionId"},
    "Job": {"status", "stdout", "execFiles", "executionId", "jobInfo", "debug"},
    "WithProvenance": {"provOutput"},
    "Code": {"code"},
}
POINTERS = {
    "Transporter": {"src", "dst"},
    "Execution": {"origin"},
    "Input": {"artifact"},
    "Pipeline": {"executions"},
    "WithProvenance": {"provenance"},
    "Data": {"provenance"},
    "ImplicitOperation": {"operation"},
}


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    return dump_seed_meta(SEED)


@pytest.mark.parametrize("which", ["committed", "rebuilt"])
def test_seed_has_the_execution_metamodel(which: str, request: pytest.FixtureRequest) -> None:
    dump = request.getfixturevalue("committed") if which == "committed" else dump_seed_meta(
        request.getfixturevalue("rebuilt_seed"))  # fmt: skip
    meta = dump["meta"]
    assert dump["libraries"] == ["pipeline"]
    for name, attributes in ATTRIBUTES.items():
        assert attributes <= set(meta[f"pipeline.{name}"]["attributes"]), name
    for name, pointers in POINTERS.items():
        assert pointers <= set(meta[f"pipeline.{name}"]["pointers"]), name
    # DeepForge's enums (what its plugins write besides: a failed Job is 'fail', see deepforge_plugins.status)
    job_status = meta["pipeline.Job"]["attributes"]["status"]
    assert job_status["enum"] == ["pending", "queued", "running", "canceled", "success", "failed"]
    assert meta["pipeline.Execution"]["attributes"]["status"]["enum"] == ["pending", "running", "success",
                                                                          "failed", "canceled"]  # fmt: skip
    assert meta["pipeline.Output"]["attributes"]["saveName"]["default"] == "myData"
    assert meta["pipeline.Operation"]["attributes"]["lineOffset"]["default"] == "0"
    containers = {c["name"]: c["meta"] for c in dump["rootChildren"]}
    assert containers == {
        "FCO": "FCO",
        **{name: name for name in ("MyPipelines", "MyExecutions", "MyArtifacts", "MyOperations")},
        **{name: name for name in ("MyResources", "MyUtilities", "LibraryCode")},
        "InitCode": "pipeline.Code",
    }
    assert meta["MyPipelines"]["children"]["items"] == {"pipeline.Pipeline": [-1, -1]}
    assert meta["MyArtifacts"]["children"]["items"] == {"pipeline.Data": [-1, -1]}
    for name in ("Inputs", "Outputs", "Input", "ExecutedJob", "Graph", "Metadata"):
        assert f"pipeline.{name}" in meta, name


def test_seed_has_the_example_pipeline(committed: dict[str, Any]) -> None:
    nodes = committed["nodes"]
    assert nodes["MyPipelines/Example"]["base"] == "pipeline.Pipeline"
    assert "def execute(self, numbers)" in nodes["MyOperations/SumNumbers"]["attributes"]["code"]
    # DeepForge's Operation holds its Inputs/Outputs: the example's ports are in those
    assert nodes["MyOperations/SumNumbers/Inputs/numbers"]["base"] == "pipeline.Data"
    assert nodes["MyOperations/GenerateNumbers/Outputs/numbers"]["base"] == "pipeline.Data"


def test_server_creates_a_project_from_the_seed(webgme_server: WebGMEStack) -> None:
    url = f"{webgme_server.url}/api/projects/guest/SeedCheck"
    assert "pipeline" in requests.get(f"{webgme_server.url}/api/seeds", timeout=30).json()
    created = requests.put(url, json={"type": "file", "seedName": "pipeline"}, timeout=60)
    assert created.status_code == 204, created.text
    root = requests.get(f"{url}/branches/master/tree/", timeout=30)
    assert root.status_code == 200 and root.json()["atr"]["name"] == "ROOT"


def test_seed_offers_the_plugins_in_the_ui_menu(committed: dict[str, Any]) -> None:
    """The UI's plugin menu lists only a node's (inherited) validPlugins; each id must name one of plugins/
    (or one of DeepForge's, which a DeepForge deployment has)."""
    offered = {name: node["validPlugins"] for name, node in committed["meta"].items() if node["validPlugins"]}
    assert "ExecutePipeline" in offered["pipeline.Pipeline"] and "ExecuteJob" in offered["pipeline.Job"]
    assert "SetExecutionTargets" in offered["pipeline.Operation"] and "CancelExecution" in offered["pipeline.Execution"]
    assert "ImportPipeline" in offered["MyPipelines"] and "UploadArtifact" in offered["MyArtifacts"]
    plugins = webgme_dir().parent / "plugins"
    known = {p.name for p in plugins.iterdir() if (p / "metadata.json").is_file()}
    assert set().union(*offered.values()) <= known
