"""ExecutePipeline & co. end to end: a real WebGME server runs the Python plugins through webgme-bindings.

The pipeline is produce -> transform -> consume, with produce's output fanned out to both (consume gets
``x`` and ``y``), built with ImportPipeline, executed with each storage x compute pair available, and
checked in the model: statuses, final stdout in ``Job.stdout``, output dataInfos readable through their
storage adapter.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.storage import DataInfo

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

PRODUCE = '''
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
'''

TRANSFORM = '''
class Transform:
    def execute(self, x):
        y = [v * 10 for v in x]
        print("transformed", y)
        return y
'''

FAILING_TRANSFORM = '''
class Transform:
    def execute(self, x):
        raise ValueError("transform refuses " + str(x))
'''

CONSUME = '''
class Consume:
    def execute(self, x, y):
        total = sum(x) + sum(y)
        print("total", total)
        return total
'''


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


def local_storage(tmp: Path) -> dict[str, Any]:
    return {"storage": "local", "storage.local.root": str(tmp / "store")}


def local_compute(tmp: Path) -> dict[str, Any]:
    return {"compute": "local", "compute.local.workDir": str(tmp / "work"), "compute.local.processes": 2}


STORAGES = {"local": local_storage}
COMPUTES = {"local": local_compute}
PAIRS = [(s, c) for s in STORAGES for c in COMPUTES]


def targets(tmp: Path, storage_id: str = "local", compute_id: str = "local") -> dict[str, Any]:
    return {**STORAGES[storage_id](tmp), **COMPUTES[compute_id](tmp)}


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
        return pickle.load(f)


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("storage_id", "compute_id"), PAIRS)
def test_pipeline_runs_end_to_end(gme: Any, tmp_path: Path, storage_id: str, compute_id: str) -> None:
    pipe = import_pipeline(gme, pipeline_spec())
    result = gme.run("ExecutePipeline", pipe, {"name": "run1", **targets(tmp_path, storage_id, compute_id)})
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
    assert total["type"] == "int"  # DeepForge get_full_class_name: builtins unqualified
    storage_config = {"root": str(tmp_path / "store")} if storage_id == "local" else {}
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
    assert transform["status"] == "failed"
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


def _wait_for(predicate: Any, timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(what)


def _job_started(gme: Any, name: str, job_name: str) -> bool:
    try:
        m, ex = execution(gme, name)
        attrs = m.attrs(m.find(ex, job_name))
    except LookupError:
        return False
    return attrs.get("status") in ("queued", "running") and bool(attrs.get("jobInfo"))


def test_cancel_from_another_session_cancels_running_jobs(gme: Any, tmp_path: Path) -> None:
    pipe = import_pipeline(gme, pipeline_spec(delay=120))
    run_id = gme.start("ExecutePipeline", pipe, {"name": "long", **targets(tmp_path)})
    _wait_for(lambda: _job_started(gme, "long", "Produce"), what="Produce started")
    _, ex = execution(gme, "long")
    result = gme.run("CancelExecution", ex, targets(tmp_path))
    assert result["success"], result.get("error")
    outcome = gme.wait_result("ExecutePipeline", run_id, timeout=120)
    assert not outcome["success"]
    m, ex = execution(gme, "long")
    assert m.attrs(ex)["status"] == "canceled"
    assert m.attrs(m.find(ex, "Produce"))["status"] == "canceled"
    assert m.attrs(m.find(ex, "Transform"))["status"] in ("pending", "canceled")


def _plugin_processes(server_pid: int) -> list[int]:
    """Python plugin processes under our own server (walks /proc; only our children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if any(part.endswith(b"ExecutePipeline/run_plugin.py") for part in cmdline):
            ppid = int(stat[1])
            if _descends_from(ppid, server_pid):
                found.append(int(entry.name))
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return False


def test_resume_after_the_plugin_process_is_killed(gme: Any, tmp_path: Path, plugin_stack: Any) -> None:
    pipe = import_pipeline(gme, pipeline_spec(delay=6))
    run_id = gme.start("ExecutePipeline", pipe, {"name": "resumable", **targets(tmp_path)})
    _wait_for(lambda: _job_started(gme, "resumable", "Produce"), what="Produce started")
    m, ex = execution(gme, "resumable")
    bundle = m.attrs(m.find(ex, "Produce"))["execFiles"]
    (pid,) = _wait_for(lambda: _plugin_processes(plugin_stack.server.popen.pid), what="plugin process")
    os.kill(pid, signal.SIGKILL)
    dead = gme.wait_result("ExecutePipeline", run_id, timeout=60)
    assert not dead["success"]
    m, ex = execution(gme, "resumable")
    assert m.attrs(ex)["status"] == "running"  # the runner died; the job itself kept running

    result = gme.run("ExecutePipeline", ex, targets(tmp_path))
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
