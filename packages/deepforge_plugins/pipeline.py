"""The DeepForge pipeline metamodel as the plugins use it: executions, jobs, ports and connections.

Only paths and plain values leave this module, so callers can re-find nodes after :class:`ModelSession`
moves onto a newer branch head.  Names follow the ``pipeline`` library (docs/protocols.md, "Metamodel and dataInfo"):
an Execution holds one Job per Operation plus copies of the Transporters; a Job holds a copy of its
Operation whose ``Inputs``/``Outputs`` children are the Data ports.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from deepforge_adapters.timestamps import now_ms

from .model import ModelSession, Node
from .status import ModelStatus

# Attributes every Operation has; the rest are the operation's own parameters passed to its constructor.
BASE_OPERATION_ATTRIBUTES = frozenset({"name", "code", "lineOffset", "displayColor", "condaEnv"})
LOCAL_OPERATIONS = ("Input", "Output")
# WebGME's plugin menu lists the plugins named in the active node's ``validPlugins`` registry.
EXECUTION_PLUGINS = "ExecutePipeline CancelExecution"
JOB_PLUGINS = "ExecuteJob CancelExecution"


@dataclass
class Port:
    name: str
    path: str
    data: str = ""  # the dataInfo JSON, "" when nothing arrived yet
    type: str = ""


@dataclass
class PipelineJob:
    """One Job of an Execution as read from the model (not a job bundle's ``jobs.bundle.JobSpec``)."""

    path: str
    name: str
    operation: str  # path of the Operation copy inside the Job
    kind: str  # "Input", "Output" or "Operation"
    status: str
    job_info: str
    inputs: list[Port] = field(default_factory=list)
    outputs: list[Port] = field(default_factory=list)

    def input(self, name: str) -> Port:
        return next(p for p in self.inputs if p.name == name)


@dataclass
class Graph:
    jobs: dict[str, PipelineJob]
    #: (src port path, dst port path) for each Transporter
    connections: list[tuple[str, str]]

    def job_of_port(self, port_path: str) -> str:
        for job in self.jobs:
            if port_path.startswith(job + "/"):
                return job
        raise KeyError(f"port {port_path} belongs to no job of this execution")

    def edges(self) -> list[tuple[str, str]]:
        return [(self.job_of_port(src), self.job_of_port(dst)) for src, dst in self.connections]

    def consumers(self, port_path: str) -> list[str]:
        return [dst for src, dst in self.connections if src == port_path]


def root_container(model: ModelSession, name: str) -> Node:
    node = model.child_named(model.root, name)
    if node is None:
        raise LookupError(f"the project has no {name} folder at its root")
    return node


def operation_kind(model: ModelSession, op: Node) -> str:
    for kind in LOCAL_OPERATIONS:
        if model.is_a(op, kind):
            return kind
    return "Operation"


def _port_boxes(model: ModelSession, op: Node) -> dict[str, Node]:
    """The op's ``Inputs`` and ``Outputs`` containers: for each, the child of that name, else the first child of
    that type.  One ``load_children`` for both (each box looked up on its own loaded the op's children twice,
    ~20 of the ~166 model requests a job cost, bench/scale_pipelines.py)."""
    kids = model.core.load_children(op)
    names = [model.attr(kid, "name") for kid in kids]
    boxes = {}
    for container in ("Inputs", "Outputs"):
        named = next((kid for kid, name in zip(kids, names, strict=True) if name == container), None)
        box = named if named is not None else next((kid for kid in kids if model.is_a(kid, container)), None)
        if box is not None:
            boxes[container] = box
    return boxes


def _ports(model: ModelSession, box: Node | None) -> list[Port]:
    if box is None:
        return []
    ports = []
    for data in model.children(box):
        ports.append(
            Port(
                name=str(model.attr(data, "name")),
                path=model.path(data),
                data=str(model.attr(data, "data") or ""),
                type=str(model.attr(data, "type") or ""),
            )
        )
    return ports


def _code_order(code: str, names: list[str], inputs: bool) -> list[str]:
    """Order port names as the operation's code does (``execute`` arguments / returned names)."""
    order: list[str] = []
    try:
        tree = ast.parse(code or "")
    except SyntaxError:
        return sorted(names)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "execute":
            if inputs:
                order = [a.arg for a in node.args.args[1:]]
            else:
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None):
                    values = ret.value.elts if isinstance(ret.value, ast.Tuple) else [ret.value]
                    order = [v.id for v in values if isinstance(v, ast.Name)]
            break
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def read_operation(model: ModelSession, op: Node) -> tuple[list[Port], list[Port]]:
    code = str(model.attr(op, "code") or "")
    boxes = _port_boxes(model, op)
    ins, outs = _ports(model, boxes.get("Inputs")), _ports(model, boxes.get("Outputs"))
    in_order = _code_order(code, [p.name for p in ins], inputs=True)
    out_order = _code_order(code, [p.name for p in outs], inputs=False)
    return sorted(ins, key=lambda p: in_order.index(p.name)), sorted(outs, key=lambda p: out_order.index(p.name))


def operation_attributes(model: ModelSession, op: Node) -> dict[str, Any]:
    # Meta-defined parameters (DeepForge) and values set on the node without a meta rule alike.
    names = set(model.core.get_valid_attribute_names(op) or []) | set(model.core.get_attribute_names(op) or [])
    return {n: model.attr(op, n) for n in sorted(names) if n not in BASE_OPERATION_ATTRIBUTES and not n.startswith("_")}


def _read_job(model: ModelSession, child: Node) -> PipelineJob:
    ops = model.children(child, "Operation")
    if len(ops) != 1:
        raise ValueError(f"job {model.attr(child, 'name')} must hold exactly one Operation, has {len(ops)}")
    op = ops[0]
    ins, outs = read_operation(model, op)
    return PipelineJob(
        path=model.path(child),
        name=str(model.attr(child, "name")),
        operation=model.path(op),
        kind=operation_kind(model, op),
        status=str(model.attr(child, "status") or ""),
        job_info=str(model.attr(child, "jobInfo") or ""),
        inputs=ins,
        outputs=outs,
    )


def read_job(model: ModelSession, job_path: str) -> PipelineJob:
    """One Job of an Execution as it is now (its ports' data included), without reading its siblings: a run
    re-reads each job when it starts it, and reading the whole graph then made a run quadratic in its jobs."""
    return _read_job(model, model.node(job_path))


def read_graph(model: ModelSession, execution_path: str) -> Graph:
    execution = model.node(execution_path)
    jobs: dict[str, PipelineJob] = {}
    connections: list[tuple[str, str]] = []
    for child in model.children(execution):
        if model.is_a(child, "Job"):
            jobs[model.path(child)] = _read_job(model, child)
        elif model.is_a(child, "Transporter"):
            src, dst = model.core.get_pointer_path(child, "src"), model.core.get_pointer_path(child, "dst")
            if src and dst:
                connections.append((src, dst))
    return Graph(jobs, connections)


def unique_name(taken: set[str], wanted: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", wanted) or "execution"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


#: MyExecutions as a grid in creation order: left to right, then the next row (each Execution a box of
#: WebGME's default decorator, ~140 x 60 px).  Without a position each new Execution inherited its meta node's
#: and they piled on top of each other.
GRID_COLUMNS = 5
GRID_ORIGIN = (60, 60)
GRID_STEP = (220, 120)


def grid_position(slot: int) -> dict[str, int]:
    """The registry ``position`` of grid slot ``slot`` (0, 1, ... in creation order)."""
    row, col = divmod(slot, GRID_COLUMNS)
    return {"x": GRID_ORIGIN[0] + col * GRID_STEP[0], "y": GRID_ORIGIN[1] + row * GRID_STEP[1]}


def next_grid_slot(positions: list[Any]) -> int:
    """The slot after the last one taken by ``positions`` (the existing Executions'), so a new Execution
    comes after every older one even when some were deleted; positions off the grid (moved by hand) are
    ignored."""
    taken = [-1]
    for pos in positions:
        x, y = (pos.get("x"), pos.get("y")) if isinstance(pos, dict) else (None, None)
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            continue
        col, dx = divmod(int(x) - GRID_ORIGIN[0], GRID_STEP[0])
        row, dy = divmod(int(y) - GRID_ORIGIN[1], GRID_STEP[1])
        if dx == 0 and dy == 0 and 0 <= col < GRID_COLUMNS and row >= 0:
            taken.append(row * GRID_COLUMNS + col)
    return max(taken) + 1


def create_execution(model: ModelSession, pipeline_path: str, name: str | None) -> str:
    """Copy the pipeline into a new Execution (one Job per Operation, connections remapped); its path.

    Must run inside :meth:`ModelSession.change`.
    """
    pipeline = model.node(pipeline_path)
    container = root_container(model, "MyExecutions")
    existing = model.children(container)
    taken = {str(model.attr(e, "name")) for e in existing} | set(model.project.get_tags() or {})
    exec_name = unique_name(taken, name or f"{model.attr(pipeline, 'name')}_execution")
    slot = next_grid_slot([model.core.get_registry(e, "position") for e in existing if model.is_a(e, "Execution")])
    execution = model.core.create_node({"parent": container, "base": model.META["Execution"]})
    model.core.set_registry(execution, "position", grid_position(slot))
    model.core.set_attribute(execution, "name", exec_name)
    model.core.set_attribute(execution, "status", ModelStatus.PENDING)
    model.core.set_attribute(execution, "createdAt", now_ms())
    model.core.set_registry(execution, "validPlugins", EXECUTION_PLUGINS)
    model.core.set_pointer(execution, "origin", pipeline)
    model.core.add_member(pipeline, "executions", execution)
    # Targets chosen for the whole pipeline travel with the execution (the Pipeline may change later).
    targets = model.core.get_registry(pipeline, "executionTargets")
    if targets:
        model.core.set_registry(execution, "executionTargets", targets)

    moved: dict[str, str] = {}  # old op path -> new op path; ports keep their relative ids under a copy
    transporters = []
    for child in model.children(pipeline):
        if model.is_a(child, "Operation"):
            job = model.core.create_node({"parent": execution, "base": model.META["Job"]})
            model.core.set_attribute(job, "name", model.attr(child, "name"))
            model.core.set_attribute(job, "status", ModelStatus.PENDING)
            model.core.set_registry(job, "validPlugins", JOB_PLUGINS)
            position = model.core.get_registry(child, "position")
            if position:  # the Execution view lays its jobs out as the pipeline laid out its operations
                model.core.set_registry(job, "position", position)
            copy = model.core.copy_node(child, job)
            moved[model.path(child)] = model.path(copy)
        elif model.is_a(child, "Transporter"):
            transporters.append(child)

    def remap(path: str) -> str:
        for old, new in moved.items():
            if path.startswith(old + "/"):
                return new + path[len(old) :]
        raise KeyError(f"connection end {path} is not a port of an operation of this pipeline")

    for conn in transporters:
        src, dst = model.core.get_pointer_path(conn, "src"), model.core.get_pointer_path(conn, "dst")
        if not (src and dst):
            continue
        copy = model.core.create_node({"parent": execution, "base": model.META["Transporter"]})
        model.core.set_pointer(copy, "src", model.node(remap(src)))
        model.core.set_pointer(copy, "dst", model.node(remap(dst)))
    return model.path(execution)


def set_attributes(model: ModelSession, path: str, **values: Any) -> None:
    """Set (or, for ``None``, delete) attributes of the node at ``path``."""
    node = model.node(path)
    for key, value in values.items():
        if value is None:
            if key in (model.core.get_own_attribute_names(node) or []):
                model.core.del_attribute(node, key)
        else:
            model.core.set_attribute(node, key, value)


def write_port(model: ModelSession, port_path: str, data_info: dict[str, Any] | str, type_name: str) -> None:
    text = data_info if isinstance(data_info, str) else json.dumps(data_info, sort_keys=True)
    set_attributes(model, port_path, data=text, type=type_name or None)


def execution_targets(model: ModelSession, path: str) -> str:
    return str(model.core.get_registry(model.node(path), "executionTargets") or "")


def run_over(model: ModelSession, execution_path: str) -> bool:
    """The Execution's last run has finished: a final status and an ``endTime`` (a runner writes both at the
    end, as DeepForge's ExecutePipeline does, and clears ``endTime`` when it starts)."""
    node = model.node(execution_path)
    status = str(model.attr(node, "status") or "")
    return status in {s.value for s in ModelStatus if s.finished} and bool(model.attr(node, "endTime"))


def cancel_pending(model: ModelSession, execution_path: str) -> bool:
    """Someone asked to cancel the Execution (``status = canceled``) and no runner has finished it yet."""
    node = model.node(execution_path)
    return model.attr(node, "status") == ModelStatus.CANCELED and not model.attr(node, "endTime")


# ------------------------------------------------------------------------------------------------ provenance
# As DeepForge's ExecuteJob.recordProvenance / ExecutionHelpers write it: an output port of a job that ran gets
# ``provOutput`` (its own name), an ``ExecutedJob`` child holding a snapshot of the operation (a plain Operation
# with the operation's attribute values, copies of its input ports, shallow copies of its output ports) that
# the ExecutedJob's ``operation`` points at, and a ``provenance`` pointer to that ExecutedJob.  A port the data
# is passed to (and so the artifact an Output saves, a copy of its input port) gets a copy of it.


def _delete_provenance(model: ModelSession, port: Node) -> None:
    old = model.core.get_pointer_path(port, "provenance")
    if old:
        model.core.delete_node(model.node(old))


def io_box(model: ModelSession, op: Node, kind: str) -> Node:
    """The op's Inputs/Outputs container: the one inherited from the meta node, else a new one."""
    existing = model.children(op, kind)
    if existing:
        return existing[0]
    box = model.core.create_node({"parent": op, "base": model.META[kind]})
    model.core.set_attribute(box, "name", kind)
    return box


def _snapshot_operation(model: ModelSession, op: Node, parent: Node) -> Node:
    core = model.core
    snapshot = core.create_node({"parent": parent, "base": model.META["Operation"]})
    for name in core.get_attribute_names(op) or []:
        core.set_attribute(snapshot, name, core.get_attribute(op, name))
    for name in core.get_valid_pointer_names(op) or []:
        target = core.get_pointer_path(op, name) if name != "base" else None
        if target:
            core.set_pointer(snapshot, name, core.copy_node(model.node(target), snapshot))
    inputs, outputs = io_box(model, snapshot, "Inputs"), io_box(model, snapshot, "Outputs")
    for port in model.children(io_box(model, op, "Inputs")):
        copy = core.copy_node(port, inputs)
        model.set_base(copy, model.META["Data"])
        core.set_attribute(copy, "name", core.get_attribute(port, "name"))
    for port in model.children(io_box(model, op, "Outputs")):
        copy = core.create_node({"parent": outputs, "base": core.get_meta_type(port)})
        for name in core.get_attribute_names(port) or []:
            core.set_attribute(copy, name, core.get_attribute(port, name))
    return snapshot


def record_provenance(model: ModelSession, port_path: str, operation_path: str) -> None:
    """Edit (inside a change): the output port at ``port_path`` was made by the operation at ``operation_path``."""
    port = model.node(port_path)
    _delete_provenance(model, port)
    executed = model.core.create_node({"parent": port, "base": model.META["ExecutedJob"]})
    snapshot = _snapshot_operation(model, model.node(operation_path), executed)
    model.core.set_pointer(executed, "operation", snapshot)
    model.core.set_pointer(port, "provenance", executed)
    model.core.set_attribute(port, "provOutput", model.attr(port, "name"))


def copy_provenance(model: ModelSession, src_path: str, dst_path: str) -> None:
    """Edit (inside a change): the port at ``dst_path`` received the data of ``src_path``: its provenance too."""
    src, dst = model.node(src_path), model.node(dst_path)
    prov_output = model.attr(src, "provOutput")
    if prov_output:
        model.core.set_attribute(dst, "provOutput", prov_output)
    _delete_provenance(model, dst)
    origin = model.core.get_pointer_path(src, "provenance")
    if origin:
        model.core.set_pointer(dst, "provenance", model.core.copy_node(model.node(origin), dst))
