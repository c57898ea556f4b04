"""The pipeline seed: DeepForge's execution metamodel (deepforge-execution.md §1.2), and the server uses it."""

from __future__ import annotations

import json
import zipfile
from typing import Any

import pytest
import requests
from deepforge_adapters.webgme.stack import WebGMEStack, webgme_dir

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


def seed_objects() -> dict[str, dict[str, Any]]:
    with zipfile.ZipFile(SEED) as z:
        project = json.loads(z.read("project.json"))
    assert project["rootHash"] and project["objects"]
    named: dict[str, dict[str, Any]] = {}
    for obj in project["objects"]:
        named.setdefault(obj.get("atr", {}).get("name", ""), obj)
    return named


def test_seed_has_the_execution_metamodel() -> None:
    named = seed_objects()
    for meta, attributes in ATTRIBUTES.items():
        assert attributes <= set(named[meta]["_meta"]["atr"]), meta
    for meta, pointers in POINTERS.items():
        assert {f"_p_{p}" for p in pointers} <= set(named[meta]["_meta"]), meta
    assert named["Job"]["_meta"]["atr"]["status"]["enum"] == ["pending", "queued", "running", "canceled",
                                                                "success", "failed"]  # fmt: skip
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
