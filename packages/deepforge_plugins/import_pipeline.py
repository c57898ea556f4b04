"""ImportPipeline: build a Pipeline in MyPipelines from a JSON description (scripts, tests, demos).

::

    {"name": "demo",
     "operations": [
        {"name": "Produce", "code": "class Produce: ...", "outputs": ["x"], "attributes": {"n": 3}},
        {"name": "data", "input": "<path or name of a Data node in MyArtifacts>"},
        {"name": "save", "output": true}, ...],
     "connections": [["Produce.x", "Transform.x"], ...]}

An ``input`` operation (DeepForge's Input) has one output port ``data`` and points at the artifact; an
``output`` operation has one input port ``saveData``.  The new Pipeline's path is reported in the result
message and in the commit message.
"""

from __future__ import annotations

import json
from typing import Any

from .base import DeepForgePlugin
from .model import ModelSession, Node
from .pipeline import io_box, root_container

# WebGME's plugin menu lists the plugins named in the active node's ``validPlugins`` registry.
PIPELINE_PLUGINS = "ExecutePipeline SetExecutionTargets"
OPERATION_PLUGINS = "SetExecutionTargets"


def _port(model: ModelSession, box: Node, name: str) -> Node:
    """The port ``name`` of the box: the one inherited from the meta node (DeepForge's Input has ``data``, its
    Output ``saveData``), else a new one."""
    existing = model.child_named(box, name)
    if existing is not None:
        return existing
    port = model.core.create_node({"parent": box, "base": model.META["Data"]})
    model.core.set_attribute(port, "name", name)
    return port


def _artifact(model: ModelSession, ref: str) -> Node:
    if ref.startswith("/"):
        node = model.load(ref)
        if node is None:
            raise LookupError(f"no artifact at {ref!r}: the project has no node at that path")
        return node
    found = model.child_named(root_container(model, "MyArtifacts"), ref)
    if found is None:
        raise LookupError(f"no artifact named {ref!r} in MyArtifacts")
    return found


def build_pipeline(model: ModelSession, spec: dict[str, Any]) -> str:
    """Create the pipeline (inside a change); returns its path."""
    pipe = model.core.create_node({"parent": root_container(model, "MyPipelines"), "base": model.META["Pipeline"]})
    model.core.set_attribute(pipe, "name", spec.get("name") or "pipeline")
    model.core.set_registry(pipe, "validPlugins", PIPELINE_PLUGINS)
    ports: dict[str, Node] = {}
    for op_spec in spec.get("operations", []):
        name = op_spec["name"]
        if "input" in op_spec:
            op = model.core.create_node({"parent": pipe, "base": model.META["Input"]})
            ports[f"{name}.data"] = _port(model, io_box(model, op, "Outputs"), "data")
            if op_spec["input"]:  # null: an Input whose artifact is still to be chosen
                model.core.set_pointer(op, "artifact", _artifact(model, str(op_spec["input"])))
        elif op_spec.get("output"):
            op = model.core.create_node({"parent": pipe, "base": model.META["Output"]})
            ports[f"{name}.saveData"] = _port(model, io_box(model, op, "Inputs"), "saveData")
            if op_spec.get("saveName"):
                model.core.set_attribute(op, "saveName", op_spec["saveName"])
        else:
            op = model.core.create_node({"parent": pipe, "base": model.META["Operation"]})
            model.core.set_attribute(op, "code", op_spec.get("code", ""))
            for port_name in op_spec.get("inputs", []):
                ports[f"{name}.{port_name}"] = _port(model, io_box(model, op, "Inputs"), port_name)
            for port_name in op_spec.get("outputs", []):
                ports[f"{name}.{port_name}"] = _port(model, io_box(model, op, "Outputs"), port_name)
            for attr, value in (op_spec.get("attributes") or {}).items():
                model.core.set_attribute(op, attr, value)
        model.core.set_attribute(op, "name", name)
        model.core.set_registry(op, "validPlugins", OPERATION_PLUGINS)
        if op_spec.get("targets"):
            model.core.set_registry(op, "executionTargets", json.dumps(op_spec["targets"], sort_keys=True))
    for src, dst in spec.get("connections", []):
        for end in (src, dst):
            if end not in ports:
                raise LookupError(f"connection end {end!r} is not a port; known: {', '.join(sorted(ports))}")
        conn = model.core.create_node({"parent": pipe, "base": model.META["Transporter"]})
        model.core.set_pointer(conn, "src", ports[src])
        model.core.set_pointer(conn, "dst", ports[dst])
    if spec.get("targets"):
        model.core.set_registry(pipe, "executionTargets", json.dumps(spec["targets"], sort_keys=True))
    return model.path(pipe)


class ImportPipeline(DeepForgePlugin):
    def main(self) -> None:
        raw = self.config().get("pipeline") or ""
        try:
            spec = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            self.fail(f"ImportPipeline: config 'pipeline' is not valid JSON: {exc}")
            return
        if not isinstance(spec, dict) or not spec.get("operations"):
            self.fail("ImportPipeline: config 'pipeline' must be an object with 'operations'")
            return
        path = self.model.change(f"Imported pipeline {spec.get('name')}", lambda: build_pipeline(self.model, spec))
        self.create_message(self.model.node(path), path, "info")
        self.result_set_success(True)
