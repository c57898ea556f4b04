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
``numChannels``) children: the node shapes of DeepForge's ``pipeline`` library (its Figure metadata).
"""

from __future__ import annotations

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
def update_graph(model: ModelSession, graph: Node, state: Any) -> None:
    """A Graph from a figure's state (:mod:`deepforge_adapters.jobs.plotting`): its plots replaced."""
    if not isinstance(state, dict):
        log.warning("PLOT state is not an object; ignored")
        return
    core = model.core
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


#: command -> (the Metadata meta type of its node, how to write its content into that node)
HANDLERS: dict[str, tuple[str, Callable[[ModelSession, Node, Any], None]]] = {"PLOT": ("Graph", update_graph)}
