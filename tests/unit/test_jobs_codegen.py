"""Operation code generation: the generated main.py really runs (in a subprocess) on pickled inputs."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters.errors import BundleError
from deepforge_adapters.jobs.codegen import OperationSource, generate_main_py, operation_files, snake_case

SCALE = """
class ScaleAndSum:
    def __init__(self, factor=1, label="x"):
        self.factor = factor
        self.label = label

    def execute(self, numbers, offset):
        scaled = [n * self.factor + (offset or 0) for n in numbers]
        return scaled, {"label": self.label, "total": sum(scaled)}
"""


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run_main(job: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "main.py"], cwd=job, capture_output=True, text=True, timeout=60)


def test_generated_main_runs_the_operation_on_pickled_inputs(tmp_path: Path) -> None:
    op = OperationSource(
        "ScaleAndSum",
        SCALE,
        inputs=["numbers", "offset"],
        outputs=["scaled", "summary"],
        attributes={"factor": 3, "label": 'it\'s "quoted"\n'},
    )
    write_files(tmp_path, operation_files(op))
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "numbers").write_bytes(pickle.dumps([1, 2, 3]))
    (tmp_path / "artifacts" / "offset").write_bytes(pickle.dumps(10))

    result = run_main(tmp_path)

    assert result.returncode == 0, result.stderr
    scaled = pickle.loads((tmp_path / "outputs/scaled/data").read_bytes())
    summary = pickle.loads((tmp_path / "outputs/summary/data").read_bytes())
    assert scaled == [13, 16, 19]
    assert summary == {"label": 'it\'s "quoted"\n', "total": 48}
    assert json.loads((tmp_path / "outputs/scaled/metadata.json").read_text()) == {"type": "builtins.list"}
    assert json.loads((tmp_path / "outputs/summary/metadata.json").read_text()) == {"type": "builtins.dict"}


def test_input_without_data_is_none_and_single_output_is_not_unpacked(tmp_path: Path) -> None:
    code = "class Echo:\n    def execute(self, value):\n        return (value, 'tuple kept')\n"
    op = OperationSource("Echo", code, inputs=["value"], outputs=["out"])
    write_files(tmp_path, operation_files(op))

    result = run_main(tmp_path)

    assert result.returncode == 0, result.stderr
    assert pickle.loads((tmp_path / "outputs/out/data").read_bytes()) == (None, "tuple kept")
    assert json.loads((tmp_path / "outputs/out/metadata.json").read_text()) == {"type": "builtins.tuple"}


def test_registered_serializer_is_used_for_dump_and_typed_load(tmp_path: Path) -> None:
    init = (
        "import deepforge.serialization as _s\n"
        "class Box:\n"
        "    def __init__(self, v):\n"
        "        self.v = v\n"
        "_s.register(Box, lambda obj, f: f.write(('BOX:%d' % obj.v).encode()), None)\n"
        "_s.register('text/int', None, lambda f: int(f.read().decode()))\n"
    )
    code = "class Wrap:\n    def execute(self, n):\n        import __main__\n        return __main__.Box(n + 1)\n"
    op = OperationSource("Wrap", code, inputs=["n"], outputs=["box"], input_types={"n": "text/int"}, init_code=init)
    write_files(tmp_path, operation_files(op))
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts/n").write_text("41")

    result = run_main(tmp_path)

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "outputs/box/data").read_bytes() == b"BOX:42"
    assert json.loads((tmp_path / "outputs/box/metadata.json").read_text()) == {"type": "__main__.Box"}


def test_operation_exception_exits_non_zero_with_traceback(tmp_path: Path) -> None:
    code = "class Boom:\n    def execute(self):\n        raise ValueError('no good')\n"
    write_files(tmp_path, operation_files(OperationSource("Boom", code, outputs=["x"])))
    result = run_main(tmp_path)
    assert result.returncode != 0
    assert "ValueError: no good" in result.stderr
    assert not (tmp_path / "outputs/x").exists()


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (OperationSource("Op", "class Op: pass", attributes={"x": object()}), "attribute x"),
        (OperationSource("Op", "class Op: pass", attributes={"x": float("nan")}), "not a Python literal"),
        (OperationSource("Op", "class Op: pass", inputs=["a-b"]), "input name 'a-b'"),
        (OperationSource("Op", "class Op: pass", outputs=["class"]), "output name 'class'"),
        (OperationSource("Op", "class Op: pass", inputs=["a"], outputs=["a"]), "unique"),
        (OperationSource("Op", "class Other: pass"), "no class named 'Op'"),
        (OperationSource("Op", "class Op(:"), "does not parse"),
        (OperationSource("Op; import os", "class Op: pass"), "operation name"),
    ],
)
def test_bad_operations_are_rejected_with_the_reason(op: OperationSource, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        generate_main_py(op)


def test_attribute_values_cannot_inject_code() -> None:
    evil = "'); import os; os.system('touch /tmp/pwned'); ('"
    text = generate_main_py(OperationSource("Op", "class Op: pass", attributes={"name": evil}))
    assert f"name={evil!r}" in text
    compile(text, "main.py", "exec")  # still one well-formed literal


def test_snake_case_matches_deepforge_module_names() -> None:
    assert snake_case("TrainModel") == "train_model"
    assert snake_case("Op") == "op"
