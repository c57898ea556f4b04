"""Issue 18 item 4: type names are DeepForge's (``builtins.int``), and deserializers are keyed by them.

DeepForge's ``deepforge/serialization.py`` names every class ``<module>.<class>``, builtins included, records
that name as the output's ``type`` (``outputs/<name>/metadata.json`` -> ``results.json`` -> ``Data.type``), and
loads an input with the deserializer registered under the ``type`` of its Data node.  We wrote ``int``; a
model of ours that recorded such a short name still loads with the ``builtins.`` deserializer.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.jobs.codegen import OperationSource, operation_files
from deepforge_adapters.storage.base import StorageClient

from tests.fixtures.jobs import put_pickle, read_json, run_runner

# Init code as a DeepForge project's LibraryCode would have it: DeepForge's own names for the registry.
INIT = """
import deepforge
import json as _json

def _dump_int(value, outfile):
    outfile.write(("INT:%d" % value).encode())

def _load_int(infile):
    return int(infile.read().decode().split(":")[1])

deepforge.serialization.register(int, _dump_int, _load_int)
assert "builtins.int" in deepforge.serialization.deserializers
"""

NEXT = "class Next:\n    def execute(self, n):\n        return n + 1, [n], {'n': n}, Point(n)\n"
POINT = "class Point:\n    def __init__(self, v):\n        self.v = v\n"


def run_main(root: Path, op: OperationSource) -> subprocess.CompletedProcess[str]:
    for rel, text in operation_files(op).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return subprocess.run([sys.executable, "main.py"], cwd=root, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("recorded", ["builtins.int", "int"])  # DeepForge's name; the short one of our older models
def test_types_are_named_and_deserialized_as_deepforge_does(tmp_path: Path, recorded: str) -> None:
    op = OperationSource(
        "Next",
        NEXT.replace("class Next", POINT + "\n\nclass Next"),
        inputs=["n"],
        outputs=["next", "listed", "mapped", "point"],
        input_types={"n": recorded},
        init_code=INIT,
    )
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts/n").write_text("INT:41")  # written by the registered serializer, not pickle

    done = run_main(tmp_path, op)

    assert done.returncode == 0, done.stderr
    types = {name: read_json(tmp_path / f"outputs/{name}/metadata.json")["type"] for name in op.outputs}
    assert types == {
        "next": "builtins.int",
        "listed": "builtins.list",
        "mapped": "builtins.dict",
        "point": "operations.next.Point",
    }
    assert (tmp_path / "outputs/next/data").read_bytes() == b"INT:42"  # dumped by the builtins.int serializer
    assert pickle.loads((tmp_path / "outputs/listed/data").read_bytes()) == [41]


@pytest.mark.integration
def test_results_json_records_deepforge_type_names(
    tmp_path: Path, storage_root: Path, local_storage: StorageClient, job_env: dict[str, str]
) -> None:
    code = "class Double:\n    def execute(self, x):\n        return x * 2, str(x)\n"
    op = OperationSource("Double", code, inputs=["x"], outputs=["doubled", "text"], input_types={"x": "builtins.int"})
    info = put_pickle(local_storage, "proj/artifacts/x", 21)
    bundle = build_bundle(
        tmp_path / "bundle",
        storage_id="local",
        storage_dir="proj/executions/op",
        storage_config={"root": str(storage_root)},
        inputs={"x": (info, None)},
        outputs=["doubled", "text"],
        operation=op,
    )

    done = run_runner(bundle, job_env)

    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((bundle / "results.json").read_text())
    assert {name: r["type"] for name, r in results.items()} == {"doubled": "builtins.int", "text": "builtins.str"}
