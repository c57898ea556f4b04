"""Metadata lines of a job's output (plots) turned into model nodes, as DeepForge's ExecuteJob does.

An operation's output may hold lines ``deepforge-cmd <COMMAND> <id> <json>``
(:data:`deepforge_adapters.jobs.layout.METADATA_PREFIX`); our job-side matplotlib backend
(:mod:`deepforge_adapters.jobs.plotting`) and DeepForge's write ``PLOT`` lines.  :func:`parse` takes them
out of the console text that goes into ``Job.stdout``; :func:`apply` writes them into the Job (inside a
:meth:`ModelSession.change`): one child of the ``Metadata`` type the command names per ``id`` (``PLOT`` ->
``Graph``), found again by its ``id`` attribute, so a figure shown twice updates one Graph.

A ``Graph`` (attribute ``title``) holds one ``Plot2D``/``Plot3D`` per axes (``title``, ``xlabel``, ``ylabel``,
``xlim``, ``ylim``, ``zlabel``/``zlim`` in 3D) with ``Line`` (``points`` as ``x,y;x,y``, ``color``, ``label``
(``line N`` when none), ``lineStyle``, ``marker``, ``lineWidth``), ``ScatterPoints`` (``points``, ``color``,
``label``, ``marker``, ``width``) and, in 2D, ``Image`` (``rgbaMatrix``, ``height``, ``width``, ``visible``,
``numChannels``) children: the node shapes of DeepForge's ``pipeline`` library 0.20.0 (the library in its
``project.webgmex``).

DeepForge's own ``pipeline.webgmex`` (library 0.20.1, DeepForge 2.5.0, the language of our seed) has no
``Plot2D``/``Line``/``Image`` meta nodes: its ``Graph`` keeps the figure as plotly JSON in ``data`` (its job-side
``plotly_backend.py`` sends ``mpl_to_plotly(figure).to_json()`` and ExecuteJob's ``Figure.update`` stores it,
setting nothing else).  :func:`update_graph` writes the shape the project's language holds (see
:func:`keeps_plotly_json`): there, ``data`` gets :func:`plotly_figure` of the state.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from deepforge_adapters.jobs.layout import METADATA_PREFIX

from .model import ModelSession, Node

log = logging.getLogger(__name__)

_ANSI = re.compile(r"\x1b?\[\d+(;\d+)?m")
_COMMAND = re.compile(re.escape(METADATA_PREFIX) + r"\s+(\S+)\s+(-?\d+)\s+(.*)$")


@dataclass(frozen=True)
class MetadataCommand:
    command: str
    id: int
    content: Any


def parse(output: str) -> tuple[str, list[MetadataCommand]]:
    """``(output without its metadata lines, the commands in order)``.  A line that looks like a command but
    does not parse (no id, bad JSON) stays in the output."""
    kept: list[str] = []
    commands: list[MetadataCommand] = []
    for line in output.split("\n"):
        start = line.find(METADATA_PREFIX)
        match = _COMMAND.match(_ANSI.sub("", line[start:])) if start != -1 else None
        if match is not None:
            try:
                commands.append(MetadataCommand(match[1], int(match[2]), json.loads(match[3])))
                continue
            except ValueError:
                log.warning("a %s %s line holds no valid JSON; kept in the output", METADATA_PREFIX, match[1])
        kept.append(line)
    return "\n".join(kept), commands


def apply(model: ModelSession, job_path: str, commands: Iterable[MetadataCommand]) -> None:
    """Write ``commands`` into the Job at ``job_path``: the last state of each (command, id) wins."""
    latest: dict[tuple[str, int], MetadataCommand] = {}
    for command in commands:
        latest.pop((command.command, command.id), None)
        latest[(command.command, command.id)] = command
    if not latest:
        return
    job = model.node(job_path)
    for command in latest.values():
        handler = HANDLERS.get(command.command)
        if handler is None:
            log.warning("unknown job metadata command %r (id %d) ignored", command.command, command.id)
            continue
        meta_type, update = handler
        node = _metadata_node(model, job, meta_type, command.id)
        update(model, node, command.content)


def _metadata_node(model: ModelSession, job: Node, meta_type: str, metadata_id: int) -> Node:
    for child in model.children(job, "Metadata"):
        if model.is_a(child, meta_type) and _int(model.attr(child, "id")) == metadata_id:
            return child
    node = model.core.create_node({"parent": job, "base": model.META[meta_type]})
    model.core.set_attribute(node, "id", metadata_id)
    return node


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------- PLOT
def keeps_plotly_json(model: ModelSession) -> bool:
    """Whether the project's language keeps a figure as plotly JSON in ``Graph.data`` (DeepForge's library
    0.20.1: no ``Plot2D``) rather than as Plot2D/Line/Image nodes (0.20.0)."""
    graph = model.META.get("Graph")
    if graph is None or "Plot2D" in model.META:
        return False
    return "data" in (model.core.get_valid_attribute_names(graph) or [])


def update_graph(model: ModelSession, graph: Node, state: Any) -> None:
    """A Graph from a figure's state (:mod:`deepforge_adapters.jobs.plotting`): its plots replaced."""
    if not isinstance(state, dict):
        log.warning("PLOT state is not an object; ignored")
        return
    core = model.core
    if keeps_plotly_json(model):
        core.set_attribute(graph, "data", json.dumps(plotly_figure(state), separators=(",", ":")))
        return
    core.set_attribute(graph, "title", str(state.get("title") or ""))
    keep = core.get_pointer_path(graph, "provenance") or ""
    for child in core.load_children(graph):
        if not (keep and keep.startswith(model.path(child))):
            core.delete_node(child)
    for axes in state.get("axes") or []:
        is3d = bool(axes.get("is3D"))
        plot = core.create_node({"parent": graph, "base": model.META["Plot3D" if is3d else "Plot2D"]})
        for name in ("title", "xlabel", "ylabel", "xlim", "ylim", *(("zlabel", "zlim") if is3d else ())):
            if axes.get(name) is not None:
                core.set_attribute(plot, name, axes[name])
        for index, line in enumerate(axes.get("lines") or []):
            node = core.create_node({"parent": plot, "base": model.META["Line"]})
            _set(core, node, line, ("color", "lineStyle", "marker", "lineWidth"))
            core.set_attribute(node, "label", line.get("label") or f"line {index + 1}")
            core.set_attribute(node, "points", _points(line.get("points")))
        if not is3d:
            for image in axes.get("images") or []:
                node = core.create_node({"parent": plot, "base": model.META["Image"]})
                _set(core, node, image, ("rgbaMatrix", "height", "width", "visible", "numChannels"))
        for scatter in axes.get("scatterPoints") or []:
            node = core.create_node({"parent": plot, "base": model.META["ScatterPoints"]})
            _set(core, node, scatter, ("color", "label", "marker", "width"))
            core.set_attribute(node, "points", _points(scatter.get("points")))


def _set(core: Any, node: Node, values: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        if values.get(name) is not None:
            core.set_attribute(node, name, values[name])


def _points(points: Any) -> str:
    """DeepForge's points text: ``x,y;x,y`` (``x,y,z`` in 3D)."""
    return ";".join(",".join("" if v is None else str(v) for v in point) for point in points or [])


# ------------------------------------------------------------------------- plotly JSON (library 0.20.1)
#: matplotlib line styles -> plotly dashes (plotly's matplotlylib ``convert_dash``)
_DASHES = {"-": "solid", "solid": "solid", "--": "dash", "dashed": "dash", ":": "dot", "dotted": "dot"}
_DASHES.update({"-.": "dashdot", "dashdot": "dashdot"})
#: matplotlib markers -> plotly symbols (plotly's matplotlylib ``convert_symbol``)
_SYMBOLS = {".": "circle", "o": "circle", "v": "triangle-down", "^": "triangle-up", "<": "triangle-left"}
_SYMBOLS.update({">": "triangle-right", "s": "square", "+": "cross", "x": "x", "D": "diamond", "d": "diamond"})
_SYMBOLS.update({"*": "star", "p": "pentagon", "h": "hexagon"})


def plotly_figure(state: dict[str, Any]) -> dict[str, Any]:
    """The plotly figure JSON (``{"data": [traces], "layout": {...}}``) of a figure's state, as DeepForge's job-side
    plotly backend (plotly's matplotlib renderer) makes it: per 2-D axes ``xaxis``/``yaxis`` (``xaxis2``... for the
    next) with their title and range, ``scatter`` traces (``lines``/``markers``) for lines and scatter points,
    ``image`` traces (RGBA pixel rows) for images; per 3-D axes a ``scene`` with ``scatter3d`` traces.  The figure's
    title is its suptitle, else the title of its one axes; with several axes each title is an annotation."""
    all_axes = [a for a in state.get("axes") or [] if isinstance(a, dict)]
    data: list[dict[str, Any]] = []
    layout: dict[str, Any] = {}
    annotations: list[dict[str, Any]] = []
    count = {"2d": 0, "3d": 0}
    for index, axes in enumerate(all_axes):
        domain = _domain(index, len(all_axes))
        if axes.get("is3D"):
            count["3d"] += 1
            scene = "scene" if count["3d"] == 1 else f"scene{count['3d']}"
            layout[scene] = {"domain": {"x": domain[0], "y": domain[1]}, **_scene_axes(axes)}
            for line in axes.get("lines") or []:
                data.append({"type": "scatter3d", "scene": scene, **_trace(line, is_line=True, dims=3)})
            for points in axes.get("scatterPoints") or []:
                data.append({"type": "scatter3d", "scene": scene, **_trace(points, is_line=False, dims=3)})
        else:
            count["2d"] += 1
            n = "" if count["2d"] == 1 else str(count["2d"])
            layout[f"xaxis{n}"] = {**_axis(axes, "x"), "anchor": f"y{n}", "domain": domain[0]}
            layout[f"yaxis{n}"] = {**_axis(axes, "y"), "anchor": f"x{n}", "domain": domain[1]}
            where = {"xaxis": f"x{n}", "yaxis": f"y{n}"}
            for line in axes.get("lines") or []:
                data.append({"type": "scatter", **where, **_trace(line, is_line=True, dims=2)})
            for image in axes.get("images") or []:
                data.append({"type": "image", **where, "z": _pixel_rows(image)})
            for points in axes.get("scatterPoints") or []:
                data.append({"type": "scatter", **where, **_trace(points, is_line=False, dims=2)})
        if len(all_axes) > 1 and axes.get("title"):
            at = {"x": sum(domain[0]) / 2, "y": domain[1][1], "xanchor": "center", "yanchor": "bottom"}
            annotations.append({"text": axes["title"], "xref": "paper", "yref": "paper", "showarrow": False, **at})
    title = state.get("title") or (all_axes[0].get("title") if len(all_axes) == 1 else "") or ""
    layout["title"] = {"text": title}
    if annotations:
        layout["annotations"] = annotations
    return {"data": data, "layout": layout}


def _domain(index: int, total: int, columns: int = 2) -> tuple[list[float], list[float]]:
    """Where the ``index``-th of ``total`` axes lies in the figure (paper coordinates): a grid of ``columns``."""
    if total <= 1:
        return [0.0, 1.0], [0.0, 1.0]
    rows = -(-total // columns)
    row, column = divmod(index, columns)
    return [column / columns, (column + 1) / columns], [1 - (row + 1) / rows, 1 - row / rows]


def _axis(axes: dict[str, Any], name: str) -> dict[str, Any]:
    axis: dict[str, Any] = {"title": {"text": str(axes.get(f"{name}label") or "")}}
    if axes.get(f"{name}lim") is not None:
        axis["range"] = list(axes[f"{name}lim"])
    return axis


def _scene_axes(axes: dict[str, Any]) -> dict[str, Any]:
    return {f"{name}axis": _axis(axes, name) for name in ("x", "y", "z")}


def _trace(values: dict[str, Any], *, is_line: bool, dims: int) -> dict[str, Any]:
    """A scatter trace's mode, name, coordinates, line and marker from a Line or ScatterPoints state."""
    points = [p for p in values.get("points") or [] if isinstance(p, list | tuple)]
    dash = _DASHES.get(str(values.get("lineStyle") or "")) if is_line else None
    symbol = _SYMBOLS.get(str(values.get("marker") or ""), "circle") if values.get("marker") else None
    if not is_line:
        symbol = symbol or "circle"
    mode = "+".join(m for m, on in (("lines", dash), ("markers", symbol)) if on) or "none"
    trace: dict[str, Any] = {"mode": mode}
    if values.get("label"):
        trace["name"] = str(values["label"])
    for axis, name in zip(range(dims), "xyz", strict=False):
        trace[name] = [p[axis] if len(p) > axis else None for p in points]
    if dash:
        trace["line"] = {"color": _rgba(values.get("color")), "width": values.get("lineWidth"), "dash": dash}
    if symbol:
        color = values.get("color")
        marker: dict[str, Any] = {"symbol": symbol}
        marker["color"] = [_rgba(c) for c in color] if isinstance(color, list) else _rgba(color)
        if not is_line and values.get("width") is not None:
            marker["size"] = values["width"]
        trace["marker"] = marker
    return trace


def _rgba(color: Any) -> Any:
    """``#rrggbb[aa]`` as plotly's ``rgba(r, g, b, a)`` (plotly's matplotlib renderer's colors)."""
    text = str(color or "")
    if not re.fullmatch(r"#[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", text):
        return color
    r, g, b = (int(text[i : i + 2], 16) for i in (1, 3, 5))
    alpha = int(text[7:9], 16) / 255 if len(text) == 9 else 1
    return f"rgba({r}, {g}, {b}, {alpha:g})"


def _pixel_rows(image: dict[str, Any]) -> list[list[list[int]]]:
    """An image's pixels as plotly ``z``: rows of pixels of channel values 0..255 (the image as matplotlib draws
    it, RGBA, where the state has it; else its data's channels)."""
    height, width = int(image["height"]), int(image["width"])
    if image.get("rgbaPixels"):
        pixels, channels = base64.b64decode(image["rgbaPixels"]), 4
    else:
        pixels, channels = base64.b64decode(image["rgbaMatrix"]), int(image["numChannels"])
    if len(pixels) != height * width * channels:
        raise ValueError(f"an image of {height}x{width}x{channels} holds {len(pixels)} bytes")
    row = width * channels
    return [
        [list(pixels[y * row + x * channels : y * row + (x + 1) * channels]) for x in range(width)]
        for y in range(height)
    ]


#: command -> (the Metadata meta type of its node, how to write its content into that node)
HANDLERS: dict[str, tuple[str, Callable[[ModelSession, Node, Any], None]]] = {"PLOT": ("Graph", update_graph)}
