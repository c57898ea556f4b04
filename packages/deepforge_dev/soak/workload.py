"""The soak run's workload: generated pipelines, drawn from the seed, and the job log their operations keep.

Every pipeline is built with ImportPipeline from a JSON description (:func:`pipeline_spec`, the same shape
``bench/scale_pipelines.py`` generates: a **chain** or a wide **fan-out** from one ``Source``) whose
operations are one generic class each with knobs: ``sleep`` seconds, ``lines`` printed, ``size`` bytes of
output (a large, seeded, reproducible artifact) and ``fail`` (raise on purpose).  Each operation appends a
start line and an end line to the run's job log (``S``/``E``, its run tag, its name, its pid, the time):
how many times each job really ran (retries), and when the fleet made progress again after a fault.

One run = one pipeline = one Execution, so a job is ``(run name, operation name)``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The code of every operation; ``{name}`` is its class name, ``{args}`` its input ports.
OPERATION = """
import os
import random
import time


def _mark(log, what, tag, name):
    with open(log, "a") as fh:
        fh.write(f"{{what}} {{tag}} {{name}} {{os.getpid()}} {{time.time()!r}}\\n")


class {name}:
    def __init__(self, log="", tag="", sleep=0, lines=0, size=0, fail=0, hold="", hold_max=0):
        self.hold = hold
        self.hold_max = float(hold_max)
        self.log = log
        self.tag = tag
        self.sleep = float(sleep)
        self.lines = int(lines)
        self.size = int(size)
        self.fail = int(fail)

    def execute(self{args}):
        _mark(self.log, "S", self.tag, "{name}")
        for i in range(self.lines):
            print("{name} line", i, "of", self.lines, "." * 60)
        time.sleep(self.sleep)
        deadline = time.time() + self.hold_max
        while self.hold and not os.path.exists(self.hold) and time.time() < deadline:
            time.sleep(0.5)
        if self.fail:
            raise RuntimeError("{name} fails on purpose (soak run)")
        total = 1
        for value in ({inputs}):
            total += len(value) if isinstance(value, bytes) else int(value)
        result = random.Random("{name}" + self.tag).randbytes(self.size) if self.size else total
        _mark(self.log, "E", self.tag, "{name}")
        return result
"""


@dataclass(frozen=True)
class OperationSpec:
    name: str
    inputs: tuple[str, ...] = ()  # upstream operation names (each feeds one input port)
    sleep: float = 0.0
    lines: int = 0
    size: int = 0
    fail: bool = False
    hold: bool = False  # runs until the fault schedule is over (a flag file), at most ``hold_max`` seconds


@dataclass
class RunSpec:
    """One pipeline and how it runs: its compute (``gme``: the workers, ``local``) and storage (``gme``, ``s3``)."""

    name: str
    shape: str
    compute: str
    storage: str
    operations: list[OperationSpec] = field(default_factory=list)
    hold: bool = False  # a holding run: never canceled while another run can be; outside ``parallel``

    @property
    def failing(self) -> list[str]:
        return [op.name for op in self.operations if op.fail]


@dataclass(frozen=True)
class WorkloadOptions:
    jobs: int = 1000  # operations in all (one job each)
    ops_per_run: int = 25  # the largest pipeline
    large_output: int = 4 * 1024 * 1024  # bytes of a "large output" operation
    sleep: float = 3.0  # the longest sleep of a "sleeper"
    lines: int = 5000  # lines a "printer" writes
    local_share: float = 0.2  # of the runs, on local compute instead of the workers
    holds: int = 2  # holding runs: a job that lasts until the last fault, so every fault finds a target
    hold_max: float = 1800.0  # the longest a holding job waits for the end of the faults


def plan(seed: int, options: WorkloadOptions) -> list[RunSpec]:
    """Pipelines with ``options.jobs`` operations in all, drawn from ``seed`` (the same seed, the same plan),
    after ``options.holds`` holding runs of 2 operations each (not counted in ``jobs``)."""
    rng = random.Random(f"workload-{seed}")
    # on local compute (a queue of their own, see Soak.dialog): on the workers, each requeue of a holding job
    # (a worker stopped or cut off) would leave one more copy running in a slot until the faults end
    runs = [RunSpec(f"hold{i}", "fanout", "local", ("s3", "gme")[i % 2],
                    [OperationSpec("Source", hold=True), OperationSpec("Step_1", ("Source",))], hold=True)
            for i in range(options.holds)]  # fmt: skip
    left = options.jobs
    while left > 0:
        index = len(runs) - options.holds
        ops = min(left, rng.randint(max(2, options.ops_per_run // 3), max(2, options.ops_per_run)))
        if 0 < left - ops < 2:  # no one-operation tail
            ops = left
        shape = "chain" if index % 3 == 1 else "fanout"
        compute = "local" if rng.random() < options.local_share else "gme"
        storage = "s3" if index % 2 == 0 else "gme"
        runs.append(RunSpec(f"soak{index:03d}", shape, compute, storage, _operations(rng, shape, ops, options)))
        left -= ops
    return runs


def _operations(rng: random.Random, shape: str, ops: int, options: WorkloadOptions) -> list[OperationSpec]:
    source = OperationSpec("Source", (), size=options.large_output if rng.random() < 0.25 else 0)
    operations = [source]
    for i in range(1, ops):
        upstream = ("Source",) if shape == "fanout" or i == 1 else (f"Step_{i - 1}",)
        last = i == ops - 1
        roll = rng.random()
        operations.append(
            OperationSpec(
                f"Step_{i}",
                upstream,
                sleep=round(rng.uniform(0.5, options.sleep), 2) if roll < 0.3 else 0.0,
                lines=options.lines if 0.3 <= roll < 0.4 else 0,
                size=options.large_output if 0.4 <= roll < 0.47 else 0,
                # fail on purpose only where nothing is downstream: a fan-out leaf, a chain's last step
                fail=(shape == "fanout" or last) and 0.47 <= roll < 0.52,
            )
        )
    return operations


def pipeline_spec(run: RunSpec, log: Path, hold: Path, hold_max: float = 1800.0) -> dict[str, Any]:
    """The ImportPipeline description of ``run``; its operations log to ``log``, a holding one waits for
    ``hold`` to exist (at most ``hold_max`` seconds)."""
    operations = []
    connections = []
    for op in run.operations:
        ports = [f"x{i}" for i in range(len(op.inputs))]
        code = OPERATION.format(
            name=op.name,
            args="".join(f", {p}" for p in ports),
            inputs="".join(f"{p}, " for p in ports),
        )
        attributes = {"log": str(log), "tag": run.name, "sleep": op.sleep, "lines": op.lines,
                      "size": op.size, "fail": int(op.fail)}  # fmt: skip
        if op.hold:
            attributes.update(hold=str(hold), hold_max=hold_max)
        operations.append({"name": op.name, "code": code, "inputs": ports, "outputs": ["y"], "attributes": attributes})
        connections += [[f"{up}.y", f"{op.name}.{port}"] for up, port in zip(op.inputs, ports, strict=True)]
    return {"name": run.name, "operations": operations, "connections": connections}


@dataclass(frozen=True)
class LogLine:
    what: str  # S (started) or E (ended)
    tag: str
    name: str
    pid: int
    time: float


def read_log(log: Path) -> list[LogLine]:
    """The job log's lines (a torn last line of a killed job is skipped)."""
    lines: list[LogLine] = []
    if not log.exists():
        return lines
    with open(log, errors="replace") as fh:
        for raw in fh:
            parts = raw.split()
            if len(parts) != 5:
                continue
            try:
                lines.append(LogLine(parts[0], parts[1], parts[2], int(parts[3]), float(parts[4])))
            except ValueError:
                continue
    return lines


def attempts(lines: list[LogLine]) -> Counter[tuple[str, str]]:
    """How many times each job ``(run, operation)`` started."""
    return Counter((line.tag, line.name) for line in lines if line.what == "S")
