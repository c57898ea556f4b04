"""Issue 18 item 1: our seed's language is DeepForge's ``pipeline`` library, attached as a library named
``pipeline``, with the root containers of DeepForge's own project; the only differences are the additions
documented in docs/protocols.md ("Our seed: DeepForge's pipeline library").

Both seeds are read with webgme-engine's core (``webgme-config/seeds/dump_meta.js``): every meta node's base,
abstract flag, mixins, attribute rules and defaults, pointer and set rules with cardinalities, child rules,
aspects, constraints and ``validPlugins``, and every node of the library (meta or not) with its own attributes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from deepforge_dev.stack import webgme_dir

from tests.fixtures.deepforge import dump_seed_meta as dump_meta

pytestmark = pytest.mark.integration

SEED = webgme_dir() / "seeds" / "pipeline.webgmex"
LIBRARY = "pipeline"

#: Our documented additions to DeepForge's library (docs/protocols.md): the plugins the UI's menu offers on a
#: node are its (inherited) ``validPlugins``; DeepForge's own ids are kept.  meta node -> validPlugins.
LIBRARY_ADDITIONS = {
    "Pipeline": ["ExecutePipeline", "SetExecutionTargets"],
    "Operation": ["SetExecutionTargets"],
    "Input": ["SetExecutionTargets"],  # Input and Output inherit Operation's
    "Output": ["SetExecutionTargets"],
    "Execution": ["CancelExecution", "ExecutePipeline"],
    "Job": ["CancelExecution", "ExecuteJob"],
}
#: ... and to the project's own containers.
PROJECT_ADDITIONS = {"MyPipelines": ["ImportPipeline"], "MyArtifacts": ["UploadArtifact"]}


def unqualified(value: Any, prefix: str = f"{LIBRARY}.") -> Any:
    """``value`` with the library's namespace taken off every name in it (keys and strings)."""
    if isinstance(value, dict):
        return {unqualified(k, prefix): unqualified(v, prefix) for k, v in value.items()}
    if isinstance(value, list):
        return [unqualified(v, prefix) for v in value]
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix) :]
    return value


def differences(ours: Any, theirs: Any, where: str = "") -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found = []
        for key in sorted(set(ours) | set(theirs)):
            if key not in ours:
                found.append(f"{where}/{key}: missing in ours (DeepForge: {theirs[key]!r})")
            elif key not in theirs:
                found.append(f"{where}/{key}: ours only ({ours[key]!r})")
            else:
                found += differences(ours[key], theirs[key], f"{where}/{key}")
        return found
    return [] if ours == theirs else [f"{where}: ours {ours!r}, DeepForge {theirs!r}"]


def library_meta(dump: dict[str, Any], library: str) -> dict[str, Any]:
    """The meta nodes of ``library`` ('' = the project's own) by unqualified name, ``library`` field dropped."""
    prefix = f"{library}." if library else ""
    return {
        unqualified(name, prefix): {k: unqualified(v, prefix) for k, v in node.items() if k != "library"}
        for name, node in dump["meta"].items()
        if node["library"] == library
    }


def without_additions(meta: dict[str, Any], additions: dict[str, list[str]], theirs: dict[str, Any]) -> list[str]:
    """Take the documented validPlugins additions off ``meta`` (in place); what of them was not there."""
    problems = []
    for name, ids in additions.items():
        offered = meta[name]["validPlugins"]
        if sorted(set(ids) | set(theirs[name]["validPlugins"])) != offered:
            problems.append(f"{name}: validPlugins {offered}, documented {ids} + DeepForge's")
        meta[name]["validPlugins"] = theirs[name]["validPlugins"]
    return problems


@pytest.fixture(scope="module", params=["committed", "rebuilt"])
def ours(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dump_meta(SEED if request.param == "committed" else request.getfixturevalue("rebuilt_seed"))


@pytest.fixture(scope="module")
def deepforge_library(deepforge_seeds: Path) -> dict[str, Any]:
    return dump_meta(deepforge_seeds / "pipeline.webgmex")


@pytest.fixture(scope="module")
def deepforge_project_seed(deepforge_seeds: Path) -> dict[str, Any]:
    return dump_meta(deepforge_seeds / "project.webgmex")


def test_the_language_is_deepforges_pipeline_library(ours: dict[str, Any], deepforge_library: dict[str, Any]) -> None:
    assert ours["libraries"] == [LIBRARY]
    assert ours["libraryInfo"][LIBRARY]["projectId"] == "guest+pipeline"  # as a DeepForge project records it
    mine, theirs = library_meta(ours, LIBRARY), library_meta(deepforge_library, "")
    problems = without_additions(mine, LIBRARY_ADDITIONS, theirs)
    # attached, the library's FCO derives from the project's FCO (webgme-engine's addLibrary)
    assert mine["FCO"].pop("base") == "FCO" and theirs["FCO"].pop("base") is None
    assert problems + differences(mine, theirs) == []
    # what the issue names, and the rules the plugins rely on, are there
    assert {"Complex", "Primitive", "Language", "Graph", "ExecutedJob", "WithProvenance", "Metadata"} <= set(mine)
    assert mine["Data"]["attributes"]["data"]["type"] == "userAsset"
    assert (
        mine["Operation"]["attributes"]["displayColor"]["default"]
        == theirs["Operation"]["attributes"]["displayColor"]["default"]
    )
    assert mine["Data"]["mixins"] == ["WithProvenance"]


def test_every_library_node_is_deepforges(ours: dict[str, Any], deepforge_library: dict[str, Any]) -> None:
    """Nodes of the library that are not meta nodes too (Plot2D, Line, Image, ..., the ports of Input/Output)."""
    mine = {k[len(LIBRARY) + 1 :]: unqualified(v) for k, v in ours["nodes"].items() if k.startswith(f"{LIBRARY}:")}
    theirs = copy.deepcopy(deepforge_library["nodes"])
    mine["FCO"].pop("base"), theirs["FCO"].pop("base")
    assert differences(mine, theirs) == []
    assert {"Language/Plot2D", "Language/Plot3D", "Language/Line", "Language/ScatterPoints", "Language/Image",
            "Language/SubGraph"} <= set(mine)  # fmt: skip


def test_the_root_containers_are_deepforges(ours: dict[str, Any], deepforge_project_seed: dict[str, Any]) -> None:
    assert ours["rootChildren"] == deepforge_project_seed["rootChildren"]
    assert ours["rootChildrenMeta"] == deepforge_project_seed["rootChildrenMeta"]
    mine, theirs = library_meta(ours, ""), library_meta(deepforge_project_seed, "")
    problems = without_additions(mine, PROJECT_ADDITIONS, theirs)
    assert problems + differences(mine, theirs) == []
