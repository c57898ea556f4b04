"""Issue 18, item 11: an operation that plots with matplotlib puts its figures into the Execution as DeepForge does.

A pipeline built with ImportPipeline on a project from DeepForge's own ``project.webgmex`` has one operation
that shows a line plot and an image (with a scatter); ExecutePipeline runs it on local and gme compute (a
real deepforge-worker).  Afterwards its Job holds one ``Graph`` per figure (``id`` = the figure number), each
with a ``Plot2D`` holding ``Line`` / ``Image`` / ``ScatterPoints`` nodes with DeepForge's attribute values,
and the ``deepforge-cmd PLOT`` lines are not in ``Job.stdout``.

On a project from our seed (``gme``: DeepForge's ``pipeline.webgmex``, library 0.20.1, no Plot2D meta) the same
figures reach ``Graph.data`` as the plotly JSON DeepForge 2.5.0 writes there; a plot that cannot be written is a
warning and never fails its job.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

PLOT = """
import matplotlib.pyplot as plt
import numpy as np


class Plot:
    def execute(self):
        plt.figure()
        plt.plot([0, 1, 2], [0, 1, 4], color="red", label="squares")
        plt.title("squares")
        plt.xlabel("x")
        plt.show()
        plt.figure()
        plt.imshow(np.array([[0.0, 1.0], [0.5, 0.25]]))
        plt.scatter([0, 1], [1, 0])
        plt.show()
        print("plotted", flush=True)
        return 1
"""


def _compute(request: Any, compute_id: str, tmp: Path) -> dict[str, Any]:
    if compute_id == "local":
        return {"compute": "local", "compute.local.workDir": str(tmp / "work"), "compute.local.processes": 1}
    request.getfixturevalue("worker_factory")(request.getfixturevalue("plugin_stack"))  # a real deepforge-worker
    return {"compute": "gme"}


def _named(model: Any, parent: str, meta_name: str) -> list[str]:
    """Children of ``parent`` made from the meta node ``meta_name`` (they inherit its name; nothing renames them)."""
    return [c for c in model.children(parent) if model.attrs(c).get("name") == meta_name]


@pytest.mark.parametrize(
    ("project_fixture", "compute_id"),
    [("deepforge_project", "local"), ("deepforge_project", "gme"), ("deepforge_project_ns", "local")],
)
def test_a_line_plot_and_an_image_reach_the_execution(
    request: Any, tmp_path: Path, project_fixture: str, compute_id: str
) -> None:
    project = request.getfixturevalue(project_fixture)
    spec = {"name": "plots", "operations": [{"name": "Plot", "code": PLOT, "outputs": ["done"]}], "connections": []}
    imported = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    dialog = {
        "storage": "local",
        "storage.local.root": str(tmp_path / "store"),
        **_compute(request, compute_id, tmp_path),
    }
    result = project.run("ExecutePipeline", str(imported["messages"][0]["message"]), {"name": "run", **dialog})
    assert result["success"], result.get("error")

    model = project.tree("")
    job = model.find("", "MyExecutions", "run", "Plot")
    stdout = model.attrs(job)["stdout"]
    assert "plotted" in stdout
    assert "deepforge-cmd" not in stdout
    graphs = {model.attrs(g)["id"]: g for g in _named(model, job, "Graph")}
    assert sorted(graphs) == [1, 2], graphs

    (plot,) = _named(model, graphs[1], "Plot2D")
    assert model.attrs(plot)["title"] == "squares"
    assert model.attrs(plot)["xlabel"] == "x"
    (line,) = _named(model, plot, "Line")
    line_attrs = model.attrs(line)
    assert line_attrs["points"] == "0.0,0.0;1.0,1.0;2.0,4.0"
    assert line_attrs["color"] == "#ff0000"
    assert line_attrs["label"] == "squares"
    assert line_attrs["lineStyle"] == "-"

    (plot,) = _named(model, graphs[2], "Plot2D")
    (image,) = _named(model, plot, "Image")
    image_attrs = model.attrs(image)
    assert (image_attrs["height"], image_attrs["width"], image_attrs["numChannels"]) == (2, 2, 3)
    # DeepForge's encoding: values in [0, 1] scaled to 0..255, a grey image as three equal channels, row-major.
    assert list(base64.b64decode(image_attrs["rgbaMatrix"])) == [0] * 3 + [255] * 3 + [127] * 3 + [63] * 3
    (scatter,) = _named(model, plot, "ScatterPoints")
    assert model.attrs(scatter)["points"] == "0.0,1.0;1.0,0.0"


PLOT_THEN_FAIL = """
import matplotlib.pyplot as plt


class PlotThenFail:
    def execute(self):
        plt.plot([0, 1], [1, 0])
        plt.show()
        raise RuntimeError("after the plot")
"""


def test_a_job_that_plotted_then_failed_keeps_its_plot(deepforge_project: Any, tmp_path: Path) -> None:
    op = {"name": "PlotThenFail", "code": PLOT_THEN_FAIL, "outputs": ["done"]}
    imported = deepforge_project.run(
        "ImportPipeline", "", {"pipeline": json.dumps({"name": "bad", "operations": [op]})}
    )
    assert imported["success"], imported.get("error")
    dialog = {"storage": "local", "storage.local.root": str(tmp_path / "store"), **_compute(None, "local", tmp_path)}
    result = deepforge_project.run("ExecutePipeline", str(imported["messages"][0]["message"]), {"name": "r", **dialog})
    assert not result["success"]
    model = deepforge_project.tree("")
    job = model.find("", "MyExecutions", "r", "PlotThenFail")
    assert "after the plot" in model.attrs(job)["stdout"] and "deepforge-cmd" not in model.attrs(job)["stdout"]
    (graph,) = _named(model, job, "Graph")
    (plot,) = _named(model, graph, "Plot2D")
    (line,) = _named(model, plot, "Line")
    assert model.attrs(line)["points"] == "0.0,1.0;1.0,0.0"


# ------------------------------------------------------------------ DeepForge 0.20.1: plotly JSON in Graph.data
# Our seed's language is DeepForge's ``pipeline`` library as its own seed holds it (0.20.1): no Plot2D / Line /
# Image meta nodes; ExecuteJob's Figure writes the figure's plotly JSON (its job-side ``plotly_backend.py``,
# ``mpl_to_plotly(figure).to_json()``) into ``Graph.data`` and sets nothing else on the Graph.


def _run_on_our_seed(gme: Any, tmp_path: Path, name: str, code: str) -> tuple[dict[str, Any], Any, str]:
    spec = {"name": name, "operations": [{"name": name, "code": code, "outputs": ["done"]}], "connections": []}
    imported = gme.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    dialog = {"storage": "local", "storage.local.root": str(tmp_path / "store"), **_compute(None, "local", tmp_path)}
    result = gme.run("ExecutePipeline", str(imported["messages"][0]["message"]), {"name": "run", **dialog})
    model = gme.tree("")
    return result, model, model.find("", "MyExecutions", "run", name)


def test_our_seed_gets_plotly_json_in_graph_data_as_deepforge_0_20_1(gme: Any, tmp_path: Path) -> None:
    result, model, job = _run_on_our_seed(gme, tmp_path, "Plot", PLOT)
    assert result["success"], result.get("error")
    stdout = model.attrs(job)["stdout"]
    assert "plotted" in stdout and "deepforge-cmd" not in stdout
    graphs = {model.attrs(g)["id"]: g for g in _named(model, job, "Graph")}
    assert sorted(graphs) == [1, 2], graphs
    for graph in graphs.values():
        assert model.meta(graph) == "pipeline.Graph"
        assert not any(model.meta(c) and "Plot" in str(model.meta(c)) for c in model.children(graph))

    line_figure = json.loads(model.attrs(graphs[1])["data"])
    (trace,) = line_figure["data"]
    assert (trace["type"], trace["mode"], trace["name"]) == ("scatter", "lines", "squares")
    assert (trace["x"], trace["y"]) == ([0.0, 1.0, 2.0], [0.0, 1.0, 4.0])
    assert (trace["xaxis"], trace["yaxis"]) == ("x", "y")
    assert trace["line"] == {"color": "rgba(255, 0, 0, 1)", "width": 1.5, "dash": "solid"}
    layout = line_figure["layout"]
    assert layout["title"]["text"] == "squares"
    assert layout["xaxis"]["title"]["text"] == "x"
    assert layout["yaxis"]["title"]["text"] == ""
    assert layout["xaxis"]["range"] == [-0.1, 2.1] and layout["xaxis"]["anchor"] == "y"

    image_figure = json.loads(model.attrs(graphs[2])["data"])
    image, scatter = image_figure["data"]
    assert image["type"] == "image" and (image["xaxis"], image["yaxis"]) == ("x", "y")
    # rows of pixels of the image as matplotlib draws it (its colormap, viridis): RGBA, 0..255
    assert image["z"] == [
        [[68, 1, 84, 255], [253, 231, 36, 255]],
        [[32, 144, 140, 255], [58, 82, 139, 255]],
    ]
    assert (scatter["type"], scatter["mode"]) == ("scatter", "markers")
    assert (scatter["x"], scatter["y"]) == ([0.0, 1.0], [1.0, 0.0])


BAD_PLOT = """
import sys


class BadPlot:
    def execute(self):
        # a PLOT line whose figure cannot become a Graph (an image whose pixels do not fit its size)
        sys.stdout.write('deepforge-cmd PLOT 1 {"id": 1, "title": "", "axes": [{"is3D": false, "images": '
                         '[{"height": 2, "width": 2, "numChannels": 3, "rgbaMatrix": "AAE="}]}]}\\n')
        print("still here", flush=True)
        return 1
"""


def test_a_failure_in_writing_plots_never_fails_the_job(gme: Any, plugin_stack: Any, tmp_path: Path) -> None:
    result, model, job = _run_on_our_seed(gme, tmp_path, "BadPlot", BAD_PLOT)
    assert result["success"], result.get("error")
    attrs = model.attrs(job)
    assert attrs["status"] == "success"
    assert "still here" in attrs["stdout"] and "deepforge-cmd" not in attrs["stdout"]
    assert _named(model, job, "Graph") == []  # nothing half-written
    log = (Path(plugin_stack.run_dir) / "webgme.log").read_text(errors="replace")
    assert "BadPlot operation in run: its plots were not recorded" in log
