"""The job-side matplotlib backend writes DeepForge's PLOT lines; the plugins' parser takes them out of stdout."""

from __future__ import annotations

import subprocess
import sys

import pytest
from deepforge_adapters.jobs.layout import PLOT_BACKEND
from deepforge_plugins import job_metadata

pytestmark = pytest.mark.integration  # runs a Python subprocess

SCRIPT = """
import matplotlib.pyplot as plt
print("before")
plt.plot([0, 1], [float("nan"), 2.0], "o--", label="_hidden")
plt.suptitle("both")
plt.figure(7)
plt.scatter([1, 2], [3, 4], s=[4, 9])
plt.show()
print("after")
"""


def test_show_writes_one_plot_line_per_figure_and_parse_takes_them_out() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={"MPLBACKEND": PLOT_BACKEND, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    text, commands = job_metadata.parse(out)
    assert text.split("\n") == ["before", "after", ""]
    assert [(c.command, c.id) for c in commands] == [("PLOT", 1), ("PLOT", 7)]
    first, second = (c.content for c in commands)
    assert first["title"] == "both"
    (line,) = first["axes"][0]["lines"]
    assert line["points"] == [[0.0, None], [1.0, 2.0]]  # NaN is null, as DeepForge's ignore_nan
    assert (line["label"], line["marker"], line["lineStyle"]) == ("", "o", "--")
    (scatter,) = second["axes"][0]["scatterPoints"]
    assert scatter["points"] == [[1.0, 3.0], [2.0, 4.0]]
    assert scatter["width"] == [2.0, 3.0]  # sqrt of the marker areas


def test_parse_keeps_lines_that_are_not_valid_commands() -> None:
    output = "\x1b[0mdeepforge-cmd PLOT 3 {not json\ndeepforge-cmd PLOT nope {}\nok\n"
    text, commands = job_metadata.parse(output)
    assert commands == []
    assert text == output


def test_parse_finds_a_command_after_other_text_on_its_line() -> None:
    text, commands = job_metadata.parse('x\n[1mdeepforge-cmd PLOT 2 {"id": 2, "axes": []}\n')
    assert text == "x\n"
    assert commands == [job_metadata.MetadataCommand("PLOT", 2, {"id": 2, "axes": []})]


SUBPLOTS = """
import matplotlib.pyplot as plt
fig = plt.figure()
left = fig.add_subplot(1, 2, 1)
left.plot([0, 1], [2, 3], "s:")
left.set_title("left")
right = fig.add_subplot(1, 2, 2, projection="3d")
right.scatter([1, 2], [3, 4], [5, 6])
right.set_zlabel("depth")
plt.show()
"""


def test_plotly_json_of_subplots_and_3d_axes_as_deepforge_0_20_1() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SUBPLOTS],
        env={"MPLBACKEND": PLOT_BACKEND, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (command,) = job_metadata.parse(out)[1]
    figure = job_metadata.plotly_figure(command.content)
    line, points = figure["data"]
    assert (line["type"], line["mode"], line["xaxis"], line["yaxis"]) == ("scatter", "lines+markers", "x", "y")
    assert line["line"]["dash"] == "dot" and line["marker"]["symbol"] == "square"
    assert (points["type"], points["scene"], points["mode"]) == ("scatter3d", "scene", "markers")
    assert (points["x"], points["y"], points["z"]) == ([1.0, 2.0], [3.0, 4.0], [5.0, 6.0])
    layout = figure["layout"]
    assert layout["scene"]["zaxis"]["title"]["text"] == "depth"
    assert layout["xaxis"]["domain"] == [0.0, 0.5] and layout["scene"]["domain"]["x"] == [0.5, 1.0]
    assert layout["title"]["text"] == ""  # several axes: each title is an annotation
    assert [a["text"] for a in layout["annotations"]] == ["left"]
