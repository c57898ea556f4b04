"""The pipeline seed: DeepForge's execution metamodel (docs/protocols.md), and the server uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_dev.stack import WebGMEStack, webgme_dir

pytestmark = pytest.mark.integration

SEED = webgme_dir() / "seeds" / "pipeline.webgmex"

#: meta node -> attributes the execution code reads or writes
ATTRIBUTES = {
    "Pipeline": {"thumbnail"},
    "Operation": {"code", "lineOffset", "displayColor", "condaEnv"},
    "Output": {"saveName"},
    "Data": {"data", "type", "createdAt"},
    "Execution": {"status", "snapshot", "tagname", "createdAt", "startTime", "endTime", "executionId", "runId"},
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
    "ImplicitOperation": {"operation"},
}


def seed_objects(seed: Path = SEED) -> dict[str, dict[str, Any]]:
    with zipfile.ZipFile(seed) as z:
        project = json.loads(z.read("project.json"))
    assert project["rootHash"] and project["objects"]
    named: dict[str, dict[str, Any]] = {}
    for obj in project["objects"]:
        named.setdefault(obj.get("atr", {}).get("name", ""), obj)
    return named


@pytest.fixture(scope="module")
def rebuilt_seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make seed``'s command, into a temp file: the builder must keep working."""
    out = tmp_path_factory.mktemp("seed") / "pipeline.webgmex"
    builder = webgme_dir() / "seeds" / "build_pipeline_seed.js"
    done = subprocess.run(
        [sys.executable, "-m", "deepforge_dev.stack", "with-db", "--", "node", str(builder), str(out)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


@pytest.mark.parametrize("which", ["committed", "rebuilt"])
def test_seed_has_the_execution_metamodel(which: str, request: pytest.FixtureRequest) -> None:
    named = seed_objects(SEED if which == "committed" else request.getfixturevalue("rebuilt_seed"))
    for meta, attributes in ATTRIBUTES.items():
        assert attributes <= set(named[meta]["_meta"]["atr"]), meta
    for meta, pointers in POINTERS.items():
        assert {f"_p_{p}" for p in pointers} <= set(named[meta]["_meta"]), meta
    assert named["Job"]["_meta"]["atr"]["status"]["enum"] == ["pending", "queued", "running", "canceled",
                                                                "success", "failed"]  # fmt: skip
    # 'canceling' is how any session asks a running ExecutePipeline to cancel (the UI's dropdown offers it)
    assert named["Execution"]["_meta"]["atr"]["status"]["enum"] == ["pending", "running", "canceling", "success",
                                                                      "failed", "canceled"]  # fmt: skip
    assert named["Output"]["atr"]["saveName"] == "myData" and named["Operation"]["atr"]["lineOffset"] == "0"
    for name in ("MyPipelines", "MyExecutions", "MyArtifacts", "MyOperations", "MyUtilities", "InitCode",
                 "LibraryCode", "Inputs", "Outputs", "Input", "ExecutedJob", "Graph", "Metadata"):  # fmt: skip
        assert name in named, name


def test_seed_has_the_example_pipeline() -> None:
    named = seed_objects()
    assert {"Example", "GenerateNumbers", "SumNumbers"} <= set(named)
    assert "def execute(self, numbers)" in named["SumNumbers"]["atr"]["code"]


def test_server_creates_a_project_from_the_seed(webgme_server: WebGMEStack) -> None:
    url = f"{webgme_server.url}/api/projects/guest/SeedCheck"
    assert "pipeline" in requests.get(f"{webgme_server.url}/api/seeds", timeout=30).json()
    created = requests.put(url, json={"type": "file", "seedName": "pipeline"}, timeout=60)
    assert created.status_code == 204, created.text
    root = requests.get(f"{url}/branches/master/tree/", timeout=30)
    assert root.status_code == 200 and root.json()["atr"]["name"] == "ROOT"


def test_seed_offers_the_plugins_in_the_ui_menu() -> None:
    """The UI's plugin menu lists only a node's (inherited) validPlugins; each id must name one of plugins/."""
    named = seed_objects()
    offered = {name: obj["reg"]["validPlugins"].split() for name, obj in named.items()
               if obj.get("reg", {}).get("validPlugins")}  # fmt: skip
    assert "ExecutePipeline" in offered["Pipeline"] and "ExecuteJob" in offered["Job"]
    assert "SetExecutionTargets" in offered["Operation"] and "CancelExecution" in offered["Execution"]
    plugins = webgme_dir().parent / "plugins"
    known = {p.name for p in plugins.iterdir() if (p / "metadata.json").is_file()}
    assert set().union(*offered.values()) <= known
