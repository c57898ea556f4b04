"""ExecutePipeline & co. end to end: a real WebGME server runs the Python plugins through webgme-bindings.

The pipeline is produce -> transform -> consume, with produce's output fanned out to both (consume gets
``x`` and ``y``), built with ImportPipeline, executed with each storage x compute pair available, and
checked in the model: statuses, final stdout in ``Job.stdout``, output dataInfos readable through their
storage adapter.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.storage import DataInfo
from deepforge_dev.soak.faults import plugin_processes

from tests.fixtures.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

PRODUCE = """
import time


class Produce:
    def __init__(self, n=3, delay=0):
        self.n = n
        self.delay = delay

    def execute(self):
        x = list(range(self.n))
        print("produced", x, flush=True)
        time.sleep(self.delay)
        return x
"""

TRANSFORM = """
class Transform:
    def execute(self, x):
        y = [v * 10 for v in x]
        print("transformed", y)
        return y
"""

FAILING_TRANSFORM = """
class Transform:
    def execute(self, x):
        raise ValueError("transform refuses " + str(x))
"""

CONSUME = """
class Consume:
    def execute(self, x, y):
        total = sum(x) + sum(y)
        print("total", total)
        return total
"""


def pipeline_spec(transform: str = TRANSFORM, delay: float = 0, name: str = "demo") -> dict[str, Any]:
    return {
        "name": name,
        "operations": [
            {"name": "Produce", "code": PRODUCE, "outputs": ["x"], "attributes": {"n": 3, "delay": delay}},
            {"name": "Transform", "code": transform, "inputs": ["x"], "outputs": ["y"]},
            {"name": "Consume", "code": CONSUME, "inputs": ["x", "y"], "outputs": ["total"]},
        ],
        "connections": [["Produce.x", "Transform.x"], ["Produce.x", "Consume.x"], ["Transform.y", "Consume.y"]],
    }


def import_pipeline(gme: Any, spec: dict[str, Any]) -> str:
    result = gme.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert result["success"], result.get("error")
    return str(result["messages"][0]["message"])


# ------------------------------------------------------------------------------------- backend pairs
# Each entry: (the ExecutePipeline dialog fields, the config to read the outputs back with).


def local_storage(tmp: Path) -> dict[str, Any]:
    return {"storage": "local", "storage.local.root": str(tmp / "store")}


def local_compute(tmp: Path) -> dict[str, Any]:
    return {"compute": "local", "compute.local.workDir": str(tmp / "work"), "compute.local.processes": 2}


def storage_choice(request: Any, storage_id: str, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    if storage_id == "local":
        return local_storage(tmp), {"root": str(tmp / "store")}
    if storage_id == "gme":
        return {"storage": "gme"}, {"host": request.getfixturevalue("plugin_stack").url}
    if storage_id == "s3":
        config = request.getfixturevalue("s3_config")
        storage.get_client("s3", config).ensure_bucket()
        return {"storage": storage_id, **{f"storage.s3.{k}": v for k, v in config.items()}}, config
    if storage_id == "sciserver-files":
        config = request.getfixturevalue("sciserver").config()
        return {"storage": storage_id, **{f"storage.{storage_id}.{k}": v for k, v in config.items()}}, config
    raise ValueError(storage_id)


def compute_choice(request: Any, compute_id: str, tmp: Path) -> dict[str, Any]:
    if compute_id == "local":
        return local_compute(tmp)
    if compute_id == "gme":
        stack = request.getfixturevalue("plugin_stack")
        request.getfixturevalue("worker_factory")(stack)  # a real deepforge-worker polling this server
        return {"compute": "gme"}
    if compute_id == "sciserver-compute":
        server = request.getfixturevalue("sciserver")
        config = {**server.config(), "racmUrl": server.racm_url}
        return {"compute": compute_id, **{f"compute.{compute_id}.{k}": v for k, v in config.items()}}
    raise ValueError(compute_id)


#: Every storage x compute pair available here: gme, local, s3 storage x local, gme compute, plus SciServer's
#: (against the contract server).  A backend that fails to import fails its pairs; none is skipped.
PAIRS = [
    ("local", "local"),
    ("gme", "local"),
    ("s3", "local"),
    ("local", "gme"),
    ("gme", "gme"),
    ("s3", "gme"),
    ("sciserver-files", "local"),
    ("sciserver-files", "sciserver-compute"),
    ("local", "sciserver-compute"),
]


def targets(tmp: Path) -> dict[str, Any]:
    return {**local_storage(tmp), **local_compute(tmp)}


def execution(gme: Any, name: str) -> tuple[Any, str]:
    """A snapshot of the project and the path of the Execution called ``name`` in it."""
    model = gme.tree("")
    return model, model.find("", "MyExecutions", name)


def port(model: Any, job_path: str, box: str, name: str) -> dict[str, Any]:
    (op,) = model.children(job_path)
    return dict(model.attrs(model.find(op, box, name)))


def read_output(info_text: str, config: dict[str, Any]) -> Any:
    info = DataInfo.from_json(info_text)
    client = storage.get_client(info.backend, config)
    with client.get_file_stream(info) as f:
        return pickle.loads(f.read())


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("storage_id", "compute_id"), PAIRS)
def test_pipeline_runs_end_to_end(request: Any, gme: Any, tmp_path: Path, storage_id: str, compute_id: str) -> None:
    dialog, storage_config = storage_choice(request, storage_id, tmp_path)
    dialog.update(compute_choice(request, compute_id, tmp_path))
    pipe = import_pipeline(gme, pipeline_spec())
    result = gme.run("ExecutePipeline", pipe, {"name": "run1", **dialog})
    assert result["success"], result.get("error")

    m, ex = execution(gme, "run1")
    assert m.attrs(ex)["status"] == "success"
    assert m.attrs(ex)["endTime"] >= m.attrs(ex)["startTime"]
    jobs = {name: m.find(ex, name) for name in ("Produce", "Transform", "Consume")}
    for path in jobs.values():
        assert m.attrs(path)["status"] == "success"
    assert "produced [0, 1, 2]" in m.attrs(jobs["Produce"])["stdout"]
    assert "total 33" in m.attrs(jobs["Consume"])["stdout"]

    total = port(m, jobs["Consume"], "Outputs", "total")
    assert total["type"] == "builtins.int"  # DeepForge get_full_class_name: <module>.<class>, builtins too
    assert read_output(total["data"], storage_config) == 33
    # The fan-out: Produce's x reached both consumers, as the same dataInfo.
    x = port(m, jobs["Produce"], "Outputs", "x")["data"]
    assert port(m, jobs["Transform"], "Inputs", "x")["data"] == x
    assert port(m, jobs["Consume"], "Inputs", "x")["data"] == x
    assert read_output(x, storage_config) == [0, 1, 2]


def test_failing_operation_fails_the_execution_with_its_reason(gme: Any, tmp_path: Path) -> None:
    pipe = import_pipeline(gme, pipeline_spec(transform=FAILING_TRANSFORM))
    result = gme.run("ExecutePipeline", pipe, {"name": "bad", **targets(tmp_path)})
    assert not result["success"]
    assert "Transform" in result["error"]
    m, ex = execution(gme, "bad")
    assert m.attrs(ex)["status"] == "failed"
    transform = m.attrs(m.find(ex, "Transform"))
    assert transform["status"] == "fail"  # DeepForge's: a failed Job is 'fail', a failed Execution 'failed'
    assert "ValueError: transform refuses [0, 1, 2]" in transform["stdout"]
    assert m.attrs(m.find(ex, "Produce"))["status"] == "success"
    assert m.attrs(m.find(ex, "Consume"))["status"] != "success"


def test_missing_input_artifact_fails_the_input_job(gme: Any, tmp_path: Path) -> None:
    spec = {
        "name": "needs_input",
        "operations": [
            {"name": "data", "input": None},  # an Input operation whose artifact was never chosen
            {"name": "Transform", "code": TRANSFORM, "inputs": ["x"], "outputs": ["y"]},
        ],
        "connections": [["data.data", "Transform.x"]],
    }
    pipe = import_pipeline(gme, spec)
    result = gme.run("ExecutePipeline", pipe, {"name": "noinput", **targets(tmp_path)})
    assert not result["success"]
    assert "no artifact chosen" in result["error"]
    m, ex = execution(gme, "noinput")
    assert m.attrs(ex)["status"] == "failed"
    assert m.attrs(m.find(ex, "Transform"))["status"] in ("pending", "canceled")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"compute": "nowhere"}, "nowhere"),
        ({"compute.local.processes": "many"}, "processes"),
        ({"storage.local.colour": "red"}, "colour"),
        ({"storage": "nowhere"}, "nowhere"),
    ],
)
def test_misconfiguration_is_rejected_before_any_job_starts(gme: Any, tmp_path: Path, bad: dict, message: str) -> None:
    pipe = import_pipeline(gme, pipeline_spec())
    result = gme.run("ExecutePipeline", pipe, {"name": "misconfigured", **targets(tmp_path), **bad})
    if message is None:
        assert result["success"], result.get("error")
        return
    assert not result["success"]
    assert message in result["error"]
    m = gme.tree("")
    assert m.children(m.find("", "MyExecutions")) == []  # nothing was created, nothing started
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("job.json"))


def test_targets_set_on_nodes_are_used_and_operation_overrides_pipeline(gme: Any, tmp_path: Path) -> None:
    pipe = import_pipeline(gme, pipeline_spec())
    a, b = tmp_path / "a", tmp_path / "b"
    result = gme.run("SetExecutionTargets", pipe, {**local_storage(a), **local_compute(a)})
    assert result["success"], result.get("error")
    consume = gme.tree(pipe).find(pipe, "Consume")
    result = gme.run("SetExecutionTargets", consume, {"storage": "local", "storage.local.root": str(b / "store")})
    assert result["success"], result.get("error")
    result = gme.run("ExecutePipeline", pipe, {"name": "targeted"})  # nothing chosen in the dialog
    assert result["success"], result.get("error")
    m, ex = execution(gme, "targeted")
    total = port(m, m.find(ex, "Consume"), "Outputs", "total")["data"]
    x = port(m, m.find(ex, "Produce"), "Outputs", "x")["data"]
    assert read_output(total, {"root": str(b / "store")}) == 33  # Consume wrote to its own storage
    assert read_output(x, {"root": str(a / "store")}) == [0, 1, 2]  # the others to the pipeline's


def test_set_execution_targets_rejects_bad_config(gme: Any) -> None:
    pipe = import_pipeline(gme, pipeline_spec())
    result = gme.run("SetExecutionTargets", pipe, {"compute": "local", "compute.local.processes": 0})
    assert not result["success"]
    assert "processes" in result["error"]


def _job_started(gme: Any, name: str, job_name: str) -> bool:
    try:
        m, ex = execution(gme, name)
        attrs = m.attrs(m.find(ex, job_name))
    except LookupError:
        return False
    return attrs.get("status") in ("queued", "running") and bool(attrs.get("jobInfo"))


COMPUTES = ["local", "gme"]


@pytest.mark.parametrize("compute_id", COMPUTES)
def test_cancel_from_another_session_cancels_running_jobs(
    request: Any, gme: Any, tmp_path: Path, compute_id: str
) -> None:
    dialog = {**local_storage(tmp_path), **compute_choice(request, compute_id, tmp_path)}
    pipe = import_pipeline(gme, pipeline_spec(delay=120))
    run_id = gme.start("ExecutePipeline", pipe, {"name": "long", **dialog})
    wait_for(lambda: _job_started(gme, "long", "Produce"), 120, what="Produce started")
    _, ex = execution(gme, "long")
    result = gme.run("CancelExecution", ex, dialog)
    assert result["success"], result.get("error")
    outcome = gme.wait_result("ExecutePipeline", run_id, timeout=120)
    assert not outcome["success"]
    m, ex = execution(gme, "long")
    assert m.attrs(ex)["status"] == "canceled"
    assert m.attrs(m.find(ex, "Produce"))["status"] == "canceled"
    assert m.attrs(m.find(ex, "Transform"))["status"] in ("pending", "canceled")


@pytest.mark.parametrize("compute_id", COMPUTES)
def test_resume_after_the_plugin_process_is_killed(
    request: Any, gme: Any, tmp_path: Path, plugin_stack: Any, compute_id: str
) -> None:
    dialog = {**local_storage(tmp_path), **compute_choice(request, compute_id, tmp_path)}
    pipe = import_pipeline(gme, pipeline_spec(delay=6))
    run_id = gme.start("ExecutePipeline", pipe, {"name": "resumable", **dialog})
    wait_for(lambda: _job_started(gme, "resumable", "Produce"), 120, what="Produce started")
    m, ex = execution(gme, "resumable")
    bundle = m.attrs(m.find(ex, "Produce"))["execFiles"]
    (pid,) = wait_for(lambda: plugin_processes(plugin_stack.server.popen.pid), 120, what="plugin process")
    os.kill(pid, signal.SIGKILL)
    dead = gme.wait_result("ExecutePipeline", run_id, timeout=60)
    assert not dead["success"]
    m, ex = execution(gme, "resumable")
    assert m.attrs(ex)["status"] == "running"  # the runner died; the job itself kept running

    result = gme.run("ExecutePipeline", ex, dialog)
    assert result["success"], result.get("error")
    m, ex = execution(gme, "resumable")
    assert m.attrs(ex)["status"] == "success"
    produce = m.attrs(m.find(ex, "Produce"))
    assert "produced [0, 1, 2]" in produce["stdout"]
    assert produce["execFiles"] == bundle  # re-attached to the same job, not re-run (a re-run has a new bundle)


def test_execute_job_reruns_one_job_with_its_recorded_inputs(gme: Any, tmp_path: Path) -> None:
    pipe = import_pipeline(gme, pipeline_spec())
    assert gme.run("ExecutePipeline", pipe, {"name": "first", **targets(tmp_path)})["success"]
    m, ex = execution(gme, "first")
    consume = m.find(ex, "Consume")
    first_bundle = m.attrs(consume)["execFiles"]
    result = gme.run("ExecuteJob", consume, targets(tmp_path))
    assert result["success"], result.get("error")
    m, ex = execution(gme, "first")
    assert m.attrs(consume)["status"] == "success"
    assert m.attrs(consume)["execFiles"] and "total 33" in m.attrs(consume)["stdout"]
    after = port(m, consume, "Outputs", "total")["data"]
    assert read_output(after, {"root": str(tmp_path / "store")}) == 33
    assert m.attrs(ex)["status"] == "success"
    assert m.attrs(consume)["execFiles"] != first_bundle  # really run again: a new bundle was built


def test_secrets_never_reach_the_model_the_blob_or_a_log(
    request: Any, gme: Any, tmp_path: Path, plugin_stack: Any
) -> None:
    s3_dialog, s3_config = storage_choice(request, "s3", tmp_path)
    sci_dialog, sci_config = storage_choice(request, "sciserver-files", tmp_path)
    secrets = [s3_config["secretAccessKey"], sci_config["password"]]
    pipe = import_pipeline(gme, pipeline_spec())
    # Consume stores in SciServer (its choice on the node holds no password); the rest in S3.
    consume = gme.tree(pipe).find(pipe, "Consume")
    public = {k: v for k, v in sci_dialog.items() if not k.endswith(".password")}
    assert gme.run("SetExecutionTargets", consume, sci_dialog)["success"]
    result = gme.run("ExecutePipeline", pipe, {"name": "secret", **s3_dialog, **sci_dialog, **local_compute(tmp_path)})
    assert result["success"], result.get("error")
    m, ex = execution(gme, "secret")
    total = port(m, m.find(ex, "Consume"), "Outputs", "total")["data"]
    assert DataInfo.from_json(total).backend == "sciserver-files"
    assert read_output(total, sci_config) == 33

    model_text = gme.dump("")
    assert public["storage.sciserver-files.username"] in model_text  # the public choice is stored...
    places = {"model": model_text}
    for root in (plugin_stack.run_dir, tmp_path / "work"):
        for path in Path(root).rglob("*"):
            if path.is_file():
                places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    sealed = [name for name, text in places.items() if '"$sealed"' in text]
    assert sealed, "the bundles in the blob carry the secrets sealed"
    for secret in secrets:
        leaks = [name for name, text in places.items() if secret in text]
        assert not leaks, f"a secret appears in {leaks}"  # ...the secrets nowhere: not model, blob, logs, jobs


def test_an_input_naming_a_path_with_no_node_is_refused_at_import(gme: Any) -> None:
    spec = {
        "name": "dangling_input",
        "operations": [
            {"name": "data", "input": "/no/such/node"},
            {"name": "Transform", "code": TRANSFORM, "inputs": ["x"], "outputs": ["y"]},
        ],
        "connections": [["data.data", "Transform.x"]],
    }
    result = gme.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert not result["success"]
    assert "no artifact at '/no/such/node'" in result["error"]
    m = gme.tree("")
    pipelines = m.children(m.find("", "MyPipelines"))
    assert "dangling_input" not in [m.attrs(p).get("name") for p in pipelines]  # nothing half-imported


def test_uploaded_artifact_feeds_a_pipeline_input_and_outputs_are_saved(
    gme: Any, tmp_path: Path, plugin_stack: Any
) -> None:
    from deepforge_adapters.webgme.blob import BlobClient

    blob_hash, _ = BlobClient(plugin_stack.url).create_file("numbers.pkl", io.BytesIO(pickle.dumps([4, 5])))
    upload = {"file": blob_hash, "name": "numbers", "type": "list", **local_storage(tmp_path)}
    result = gme.run("UploadArtifact", "", upload)
    assert result["success"], result.get("error")
    m = gme.tree("")
    artifact = m.attrs(m.find("", "MyArtifacts", "numbers"))
    assert artifact["type"] == "list"
    assert read_output(artifact["data"], {"root": str(tmp_path / "store")}) == [4, 5]

    spec = {
        "name": "with_input",
        "operations": [
            {"name": "numbers", "input": "numbers"},
            {"name": "Transform", "code": TRANSFORM, "inputs": ["x"], "outputs": ["y"]},
            {"name": "save", "output": True, "saveName": "tens"},
        ],
        "connections": [["numbers.data", "Transform.x"], ["Transform.y", "save.saveData"]],
    }
    pipe = import_pipeline(gme, spec)
    result = gme.run("ExecutePipeline", pipe, {"name": "fed", **targets(tmp_path)})
    assert result["success"], result.get("error")
    m, ex = execution(gme, "fed")
    assert port(m, m.find(ex, "Transform"), "Inputs", "x")["data"] == artifact["data"]
    saved = m.attrs(m.find("", "MyArtifacts", "tens"))
    # a copy, out of the execution, under a fresh segment (never overwriting an earlier artifact's key)
    assert re.search(r"/artifacts/\d{8}T\d{6}Z-[0-9a-f]{8}/tens$", json.loads(saved["data"])["data"]["filename"])
    assert read_output(saved["data"], {"root": str(tmp_path / "store")}) == [40, 50]


def test_commits_by_others_during_a_run_are_kept_and_the_run_stays_on_its_branch(gme: Any, tmp_path: Path) -> None:
    pipe = import_pipeline(gme, pipeline_spec(delay=4))
    run_id = gme.start("ExecutePipeline", pipe, {"name": "busy", **targets(tmp_path)})
    wait_for(lambda: _job_started(gme, "busy", "Produce"), 120, what="Produce started")
    # Another user edits the branch while the run commits: the run's next commit forks and is redone on top.
    assert gme.run("SetExecutionTargets", pipe, {"compute": "local"})["success"]
    outcome = gme.wait_result("ExecutePipeline", run_id, timeout=120)
    assert outcome["success"], outcome.get("error")
    m, ex = execution(gme, "busy")
    assert m.attrs(ex)["status"] == "success"
    assert json.loads(m.nodes[pipe]["registry"]["executionTargets"])["compute"]["id"] == "local"  # edit kept
    branches = gme.http.get(f"{gme.url}/api/projects/{gme.owner}/{gme.name}/branches").json()
    assert list(branches) == ["master"]


def test_the_seed_example_pipeline_runs(gme: Any, tmp_path: Path) -> None:
    """Operations that are instances of MyOperations definitions (inherited ports), as the UI makes them."""
    m = gme.tree("")
    example = m.find("", "MyPipelines", "Example")
    result = gme.run("ExecutePipeline", example, {"name": "example", **targets(tmp_path)})
    assert result["success"], result.get("error")
    m, ex = execution(gme, "example")
    assert m.attrs(ex)["status"] == "success"
    assert "sum: 55" in m.attrs(m.find(ex, "SumNumbers"))["stdout"]
    total = port(m, m.find(ex, "SumNumbers"), "Outputs", "total")["data"]
    assert read_output(total, {"root": str(tmp_path / "store")}) == 55
    for name in ("GenerateNumbers", "SumNumbers"):  # jobs sit where their operations sat, not on one spot
        op_position = gme.raw(m.find(example, name))["reg"]["position"]
        assert gme.raw(m.find(ex, name))["reg"]["position"] == op_position, name


RENDEZVOUS = """
import os
import time


class {name}:
    def __init__(self, meeting="", me="", other=""):
        self.meeting, self.me, self.other = meeting, me, other

    def execute(self):
        open(os.path.join(self.meeting, self.me), "w").close()
        for _ in range(1200):  # up to 2 minutes: the other job must be running at the same time
            if os.path.exists(os.path.join(self.meeting, self.other)):
                print("met", self.other)
                return self.me
            time.sleep(0.1)
        raise RuntimeError("{name} ran alone: " + self.other + " never started")
"""


def test_independent_jobs_run_at_the_same_time(gme: Any, tmp_path: Path) -> None:
    """Two jobs that each wait for the other to start can only finish if they run concurrently."""
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    ops = []
    for me, other in (("Left", "Right"), ("Right", "Left")):
        attributes = {"meeting": str(meeting), "me": me, "other": other}
        ops.append({"name": me, "code": RENDEZVOUS.format(name=me), "outputs": ["done"], "attributes": attributes})
    pipe = import_pipeline(gme, {"name": "pair", "operations": ops, "connections": []})
    result = gme.run("ExecutePipeline", pipe, {"name": "pair", **targets(tmp_path)})
    assert result["success"], result.get("error")
    m, ex = execution(gme, "pair")
    assert "met Right" in m.attrs(m.find(ex, "Left"))["stdout"]
    assert "met Left" in m.attrs(m.find(ex, "Right"))["stdout"]
