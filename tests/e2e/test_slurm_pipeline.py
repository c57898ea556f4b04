"""ExecutePipeline with ``slurm`` compute through the real WebGME server and a real Slurm (tests/fixtures/slurm.py).

The server runs with its own operator policy, which allows ``slurm`` (it is never offered without one: it
runs commands on the server host) with ``sharedDir`` under the cluster's shared directory.  Storage ``gme``
needs that shared directory for the output stream (the blob has no file names); ``s3`` (moto) carries the
output stream itself, so nothing is shared.  A mixed pipeline, its targets set with SetExecutionTargets, runs
Consume on ``local`` and the rest on Slurm.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage

from tests.e2e.test_plugins_execute import execution, import_pipeline, pipeline_spec, port, read_output
from tests.fixtures.plugins import TEST_PLUGINS, GmeProject, plugin_stack_env
from tests.fixtures.slurm import SlurmCluster

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def slurm_stacks(
    webgme_stack_factory: Any, secret_key: str, slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[bool], Any]:
    """``stack(shared)``: a WebGME server whose policy allows ``slurm``, with ``sharedDir`` under the cluster's
    shared directory (``shared``) or, without a rule for it, never set (the built-in rule): then the output
    stream goes through the job's storage."""
    made: dict[bool, Any] = {}
    base = json.dumps(str(tmp_path_factory.getbasetemp()))

    def stack(shared: bool) -> Any:
        if shared in made:
            return made[shared]
        rule = f"[compute.slurm]\nsharedDir = {{ under = [{json.dumps(str(slurm_cluster.shared))}] }}\n"
        policy = tmp_path_factory.mktemp("slurm-policy") / "policy.toml"
        policy.write_text(
            f"""\
[storage]
allow = ["gme", "local", "s3"]

[storage.local]
root = {{ under = [{base}] }}

[compute]
allow = ["local", "slurm"]

[compute.local]
workDir = {{ under = [{base}] }}

{rule if shared else ""}"""
        )
        env = plugin_stack_env(secret_key, policy, SLURM_CONF=str(slurm_cluster.conf))
        made[shared] = webgme_stack_factory(worker_refresh_ms=250, plugin_paths=(str(TEST_PLUGINS),), env=env)
        return made[shared]

    return stack


def new_project(stack: Any) -> GmeProject:
    return GmeProject(stack.url, f"slurm_{uuid.uuid4().hex[:10]}").create()


def slurm_dialog(cluster: SlurmCluster, shared: bool) -> dict[str, Any]:
    config = cluster.config()
    if not shared:
        config.pop("sharedDir")
    return {"compute": "slurm", **{f"compute.slurm.{k}": v for k, v in config.items()}}


def check_run(m: Any, ex: str, storage_config: dict[str, Any]) -> dict[str, str]:
    assert m.attrs(ex)["status"] == "success"
    jobs = {name: m.find(ex, name) for name in ("Produce", "Transform", "Consume")}
    for path in jobs.values():
        assert m.attrs(path)["status"] == "success", m.attrs(path).get("stdout")
    assert "produced [0, 1, 2]" in m.attrs(jobs["Produce"])["stdout"]
    assert "total 33" in m.attrs(jobs["Consume"])["stdout"]
    assert read_output(port(m, jobs["Consume"], "Outputs", "total")["data"], storage_config) == 33
    return jobs


@pytest.mark.parametrize("storage_id", ["gme", "s3"])
def test_pipeline_on_slurm(
    request: Any, slurm_stacks: Callable[[bool], Any], slurm_cluster: SlurmCluster, storage_id: str
) -> None:
    slurm_stack = slurm_stacks(storage_id == "gme")
    project = new_project(slurm_stack)
    if storage_id == "gme":
        dialog: dict[str, Any] = {"storage": "gme", **slurm_dialog(slurm_cluster, shared=True)}
        storage_config: dict[str, Any] = {"host": slurm_stack.url}
    else:
        storage_config = request.getfixturevalue("s3_config")
        storage.get_client("s3", storage_config).ensure_bucket()
        dialog = {"storage": "s3", **{f"storage.s3.{k}": v for k, v in storage_config.items()}}
        dialog.update(slurm_dialog(slurm_cluster, shared=False))  # the output stream goes through s3
    before = set(slurm_cluster.jobs())
    shared_before = set(slurm_cluster.shared.glob("deepforge-slurm/*"))
    pipe = import_pipeline(project, pipeline_spec())
    result = project.run("ExecutePipeline", pipe, {"name": "onslurm", **dialog})
    assert result["success"], result.get("error")

    m, ex = execution(project, "onslurm")
    check_run(m, ex, storage_config)
    ran = set(slurm_cluster.jobs()) - before
    assert len(ran) == 3  # one Slurm batch job per pipeline job
    assert all(slurm_cluster.state(job_id) == "COMPLETED" for job_id in ran)
    if storage_id == "s3":  # nothing went through the shared directory: the output came through s3
        assert set(slurm_cluster.shared.glob("deepforge-slurm/*")) == shared_before


def test_mixed_pipeline_slurm_and_local(
    slurm_stacks: Callable[[bool], Any], slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    slurm_stack = slurm_stacks(True)
    project = new_project(slurm_stack)
    pipe = import_pipeline(project, pipeline_spec())
    consume = project.tree(pipe).find(pipe, "Consume")
    local = {"compute": "local", "compute.local.workDir": str(tmp_path / "work")}
    result = project.run("SetExecutionTargets", consume, local)
    assert result["success"], result.get("error")
    targets = {"storage": "gme", **slurm_dialog(slurm_cluster, shared=True)}
    result = project.run("SetExecutionTargets", pipe, targets)  # SetExecutionTargets offers slurm
    assert result["success"], result.get("error")
    before = set(slurm_cluster.jobs())
    result = project.run("ExecutePipeline", pipe, {"name": "mixed"})  # the targets stored on the nodes
    assert result["success"], result.get("error")

    m, ex = execution(project, "mixed")
    check_run(m, ex, {"host": slurm_stack.url})
    assert len(set(slurm_cluster.jobs()) - before) == 2  # Produce and Transform on Slurm
    assert (tmp_path / "work" / "slots").is_dir()  # Consume ran on local compute (its job dir is purged)
