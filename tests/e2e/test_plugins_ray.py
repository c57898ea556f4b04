"""ExecutePipeline with ``ray`` compute through the real WebGME server: the plugins submit each operation as a
Ray job to a real head node (tests/fixtures/ray.py): with ``gme`` storage, and with ``s3`` storage in a
mixed pipeline where one operation runs on ``local`` compute (one pipeline less: the Ray part of CI stays
short).  The same produce -> transform -> consume pipeline as test_plugins_execute.py; the outputs are read
back through their storage adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.test_plugins_execute import (
    execution,
    import_pipeline,
    local_compute,
    pipeline_spec,
    port,
    read_output,
    storage_choice,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]


def ray_compute(ray_head: Any) -> dict[str, Any]:
    return {"compute": "ray", "compute.ray.dashboardUrl": ray_head.url}


def check_outputs(gme: Any, name: str, storage_config: dict[str, Any]) -> dict[str, str]:
    m, ex = execution(gme, name)
    assert m.attrs(ex)["status"] == "success"
    jobs = {job: m.find(ex, job) for job in ("Produce", "Transform", "Consume")}
    for path in jobs.values():
        assert m.attrs(path)["status"] == "success"
    assert "produced [0, 1, 2]" in m.attrs(jobs["Produce"])["stdout"]
    assert "total 33" in m.attrs(jobs["Consume"])["stdout"]
    total = port(m, jobs["Consume"], "Outputs", "total")
    assert read_output(total["data"], storage_config) == 33
    x = port(m, jobs["Produce"], "Outputs", "x")["data"]
    assert read_output(x, storage_config) == [0, 1, 2]
    return {job: str(m.attrs(path)["stdout"]) for job, path in jobs.items()}


def ray_outputs(url: str, text: str) -> int:
    """How many job driver logs on the Ray head node contain ``text`` (they stay after a job is deleted)."""
    nodes = requests.get(f"{url}/api/v0/nodes", timeout=10).json()["data"]["result"]["result"]
    count = 0
    for node in nodes:
        params = {"node_id": node["node_id"], "glob": "job-driver-deepforge-*"}
        listed = requests.get(f"{url}/api/v0/logs", params=params, timeout=30).json()["data"]["result"]
        for name in [n for names in listed.values() for n in names]:
            params = {"node_id": node["node_id"], "filename": name, "lines": -1}
            count += text in requests.get(f"{url}/api/v0/logs/file", params=params, timeout=30).text
    return count


def test_pipeline_runs_on_ray_with_gme_storage(request: Any, gme: Any, tmp_path: Path, ray_head: Any) -> None:
    dialog, storage_config = storage_choice(request, "gme", tmp_path)
    pipe = import_pipeline(gme, pipeline_spec())
    result = gme.run("ExecutePipeline", pipe, {"name": "onray", **dialog, **ray_compute(ray_head)})
    assert result["success"], result.get("error")
    stdout = check_outputs(gme, "onray", storage_config)
    assert "deepforge-ray" not in "".join(stdout.values())  # our marks never reach the user's console


def test_mixed_pipeline_with_s3_storage_one_operation_on_local_compute(
    request: Any, gme: Any, tmp_path: Path, ray_head: Any
) -> None:
    dialog, storage_config = storage_choice(request, "s3", tmp_path)  # sealed S3 secrets, opened for each job
    pipe = import_pipeline(gme, pipeline_spec(name="mixed"))
    transform = gme.tree(pipe).find(pipe, "Transform")
    assert gme.run("SetExecutionTargets", transform, local_compute(tmp_path))["success"]
    transformed_on_ray, totals_on_ray = (ray_outputs(ray_head.url, t) for t in ("transformed [0, 10, 20]", "total 33"))
    result = gme.run("ExecutePipeline", pipe, {"name": "mixed", **dialog, **ray_compute(ray_head)})
    assert result["success"], result.get("error")
    check_outputs(gme, "mixed", storage_config)
    assert ray_outputs(ray_head.url, "transformed [0, 10, 20]") == transformed_on_ray  # not on Ray
    assert ray_outputs(ray_head.url, "total 33") == totals_on_ray + 1  # Consume was


def test_set_execution_targets_offers_ray_and_its_fields(gme: Any) -> None:
    from deepforge_plugins.targets import dialog_fields

    fields = {f["name"]: f for f in dialog_fields("compute", include_secrets=True)}
    assert "ray" in fields["compute"]["valueItems"]
    assert {"compute.ray.dashboardUrl", "compute.ray.numGpus", "compute.ray.token"} <= set(fields)
    assert fields["compute.ray.token"].get("isAuth") is True
    pipe = import_pipeline(gme, pipeline_spec())
    result = gme.run(
        "SetExecutionTargets", pipe, {"compute": "ray", "compute.ray.numGpus": 1, "compute.ray.token": "t"}
    )
    assert result["success"], result.get("error")
    stored = gme.tree(pipe).nodes[pipe]["registry"]["executionTargets"]
    assert '"ray"' in stored and '"numGpus": 1' in stored and '"t"' not in stored  # the token is not stored
