"""``make demo``: a three-operation pipeline run for real through ``local`` storage and ``local`` compute.

    GenerateNumbers --numbers--> Square --squares--> Sum --total

Each operation is DeepForge-style Python (a class with ``execute``); its job bundle is generated with
:mod:`deepforge_adapters.jobs.codegen` and :func:`~deepforge_adapters.jobs.bundle.build_bundle`, started on
:class:`~deepforge_adapters.compute.local.LocalCompute` (a detached supervisor runs the in-job runner, which
fetches inputs from storage and uploads outputs), and the next operation's inputs are the dataInfos in the
previous job's ``results.json``, as ExecutePipeline forwards them.  Everything lives in a fresh temporary
directory, removed at the end unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from deepforge_adapters.compute import ComputeJob, JobStatus
from deepforge_adapters.compute.local import LocalCompute
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.jobs.codegen import OperationSource
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage.local import LocalStorage

GENERATE = """
class GenerateNumbers:
    def __init__(self, count=10):
        self.count = count

    def execute(self):
        numbers = list(range(1, self.count + 1))
        print(f"generated {len(numbers)} numbers: {numbers}")
        return numbers
"""

SQUARE = """
class Square:
    def execute(self, numbers):
        squares = [n * n for n in numbers]
        print(f"squared: {squares}")
        return squares
"""

SUM = """
class Sum:
    def execute(self, squares):
        total = sum(squares)
        print(f"sum of {len(squares)} squares = {total}")
        return total
"""

PIPELINE = [
    OperationSource("GenerateNumbers", GENERATE, inputs=(), outputs=("numbers",), attributes={"count": 10}),
    OperationSource("Square", SQUARE, inputs=("numbers",), outputs=("squares",)),
    OperationSource("Sum", SUM, inputs=("squares",), outputs=("total",)),
]


def run_pipeline(base: Path, out: Any = sys.stdout) -> Any:
    """Run the pipeline with storage and compute under ``base``; returns the final output's value."""
    storage_config = {"root": str(base / "storage")}
    storage = LocalStorage(storage_config)
    compute = LocalCompute({"workDir": str(base / "compute"), "processes": 1})
    available: dict[str, DataInfo] = {}  # output name -> dataInfo, as the pipeline forwards them
    for op in PIPELINE:
        bundle = build_bundle(
            base / "bundles" / op.name,
            operation=op,
            storage_id="local",
            storage_dir=f"demo/executions/{op.name}",
            storage_config=storage_config,
            inputs={name: (available[name], None) for name in op.inputs},
            outputs=list(op.outputs),
        )
        info = compute.start_job(ComputeJob(bundle=bundle, name=op.name))
        print(f"=== {op.name} (job {info['hash'][:12]}) ===", file=out, flush=True)
        end = None
        for update in compute.watch(info):
            if update.kind == "output":
                out.write(update.output)
                out.flush()
            elif update.kind == "end":
                end = update
        assert end is not None
        if end.status != JobStatus.SUCCESS:
            raise RuntimeError(f"{op.name} {end.status}: {end.reason}")
        for name, result in compute.get_results_info(info).items():
            available[name] = DataInfo.from_json(result["dataInfo"])
            print(f"  {name}: {result['type']} at {available[name].dumps()}", file=out)
    with storage.get_file_stream(available["total"]) as f:
        return pickle.load(f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_dev.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary storage and compute directories")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="deepforge-demo-"))
    try:
        total = run_pipeline(base)
        print(f"=== result: total = {total} (expected {sum(n * n for n in range(1, 11))}) ===")
        return 0 if total == 385 else 1
    except Exception as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"files kept under {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
