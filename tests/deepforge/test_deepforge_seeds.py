"""DeepForge's own project seed imports into our WebGME server, ready for the fidelity tests beside this file."""

from __future__ import annotations

import pytest

from tests.fixtures.plugins import GmeProject

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_a_project_from_deepforges_seed_has_its_root_containers(deepforge_project: GmeProject) -> None:
    root = deepforge_project.raw("")
    names = set()
    for key, value in root.items():
        if not key.startswith("_") and isinstance(value, str) and key not in ("atr", "reg", "ovr"):
            names.add(deepforge_project.raw(f"/{key}").get("atr", {}).get("name"))
    assert {"MyPipelines", "MyExecutions", "MyArtifacts", "pipeline"} <= names, names
