"""Issue 18 item 3: Operation attribute values reach the code typed as DeepForge's ``getAttributeString`` types them.

DeepForge's GenerateJob (``getAttributeString``) writes an attribute into ``main.py`` unquoted when its whole
text is ``-?\\d+\\.?\\d*((e|e-)\\d+)?`` or ``true``/``false`` (booleans capitalised), and quoted otherwise.  The
table below is its behaviour, case by case (JavaScript's ``\\d`` is ASCII only and its ``$`` does not match
before a trailing newline); the rows marked *fixed* are where DeepForge's output is not valid Python and ours
gives the value it meant.  The last test runs a generated ``main.py`` whose attributes are stored as text, as
a DeepForge model stores them in string attributes, and the operation multiplies with them.
"""

from __future__ import annotations

import ast
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.errors import BundleError
from deepforge_adapters.jobs.codegen import OperationSource, attribute_literal, generate_main_py, operation_files
from deepforge_adapters.storage import DataInfo

TABLE: list[tuple[Any, Any]] = [
    # text that DeepForge passes unquoted: numbers
    ("20", 20),
    ("0", 0),
    ("-3", -3),
    ("-0", 0),
    ("2.5", 2.5),
    ("5.", 5.0),
    ("-0.125", -0.125),
    ("1e5", 1e5),
    ("1e-5", 1e-5),
    ("2.5e3", 2500.0),
    ("-1.5e-3", -1.5e-3),
    ("5.e3", 5000.0),
    ("12345678901234567890123", 12345678901234567890123),
    ("007", 7),  # fixed: DeepForge emitted 007, a SyntaxError in Python 3
    ("007.5", 7.5),
    # booleans: exactly lower-case true/false
    ("true", True),
    ("false", False),
    # everything else is a string, exactly as typed
    ("True", "True"),
    ("FALSE", "FALSE"),
    ("1e+5", "1e+5"),
    ("1E5", "1E5"),
    (".5", ".5"),
    ("+5", "+5"),
    (" 5", " 5"),
    ("5 ", "5 "),
    ("20\n", "20\n"),  # JavaScript's $ (no m flag) does not match before a trailing newline
    ("1.2.3", "1.2.3"),
    ("0x10", "0x10"),
    ("1_000", "1_000"),
    ("inf", "inf"),
    ("nan", "nan"),
    ("-", "-"),
    ("", ""),
    ("\u0663", "\u0663"),  # ARABIC-INDIC DIGIT THREE: not a digit to JavaScript's \d
    ("adam", "adam"),
    ('say "hi"', 'say "hi"'),  # fixed: DeepForge's "..." broke on the quote
    ("C:\\temp", "C:\\temp"),  # fixed: DeepForge's "..." read \t as a tab
    # values the model already types keep their type
    (20, 20),
    (0.5, 0.5),
    (True, True),
    (False, False),
    (None, None),  # DeepForge passed the text "undefined"
]


@pytest.mark.parametrize(("stored", "expected"), TABLE, ids=[repr(s) for s, _ in TABLE])
def test_attribute_values_are_typed_as_deepforge_types_them(stored: Any, expected: Any) -> None:
    value = ast.literal_eval(attribute_literal("attribute x", stored))
    assert value == expected and type(value) is type(expected)


def test_a_value_that_is_no_literal_is_refused_by_name() -> None:
    with pytest.raises(BundleError, match="attribute lr"):
        attribute_literal("attribute lr", object())


def test_text_attributes_cannot_inject_code() -> None:
    evil = '1"); import os; os.system("touch /tmp/pwned"); ("'
    text = generate_main_py(OperationSource("Op", "class Op: pass", attributes={"name": evil}))
    compile(text, "main.py", "exec")
    assert f"name={evil!r}" in text


TRAIN = """
class Train:
    def __init__(self, epochs=1, lr=0.1, shuffle=False, optimizer="sgd", note=""):
        self.epochs, self.lr, self.shuffle, self.optimizer, self.note = epochs, lr, shuffle, optimizer, note

    def execute(self):
        return {
            "steps": self.epochs * 2,
            "scaled": self.lr * 10,
            "shuffle": self.shuffle is True,
            "optimizer": self.optimizer,
            "note": self.note,
            "types": [type(v).__name__ for v in (self.epochs, self.lr, self.shuffle, self.optimizer, self.note)],
        }
"""


def test_a_generated_main_passes_text_attributes_as_numbers_and_booleans(tmp_path: Path) -> None:
    # As a DeepForge model stores them: every parameter attribute a string.
    attributes = {"epochs": "20", "lr": "1e-2", "shuffle": "true", "optimizer": "adam", "note": "True"}
    op = OperationSource("Train", TRAIN, outputs=["summary"], attributes=attributes)
    for rel, text in operation_files(op).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    # Before the fix this raised TypeError: can't multiply sequence by non-int of type 'str'... or, for
    # "20" * 2, silently returned "2020".
    code = "import pickle, runpy, json\nrunpy.run_path('main.py', run_name='__main__')\n"
    code += "print(json.dumps(pickle.load(open('outputs/summary/data', 'rb'))))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {
        "steps": 40,
        "scaled": 0.1,
        "shuffle": True,
        "optimizer": "adam",
        "note": "True",
        "types": ["int", "float", "bool", "str", "str"],
    }


# ------------------------------------------------------------------------------ on DeepForge's own project
# A parameterised operation as a DeepForge user has it, on a project made from DeepForge's project.webgmex
# (the plugins find its language with fidmodel's item 2), attribute values stored as text.


@pytest.mark.integration
@pytest.mark.e2e
def test_text_attributes_on_a_deepforge_project_reach_the_operation_typed(
    deepforge_project: Any, tmp_path: Path
) -> None:
    spec = {
        "name": "train",
        "operations": [
            {
                "name": "Train",
                "code": TRAIN,
                "outputs": ["summary"],
                "attributes": {"epochs": "20", "lr": "1e-2", "shuffle": "true", "note": "True"},
            },
        ],
        "connections": [],
    }
    imported = deepforge_project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    pipe = imported["messages"][0]["message"]
    dialog = {
        "storage": "local",
        "storage.local.root": str(tmp_path / "store"),
        "compute": "local",
        "compute.local.workDir": str(tmp_path / "work"),
    }
    result = deepforge_project.run("ExecutePipeline", pipe, {"name": "typed", **dialog})
    assert result["success"], result.get("error")
    m = deepforge_project.tree("")
    job = m.find("", "MyExecutions", "typed", "Train")
    (op,) = m.children(job)
    port = m.attrs(m.find(op, "Outputs", "summary"))
    assert port["type"] == "builtins.dict"  # item 4: DeepForge's type names
    info = DataInfo.from_json(port["data"])
    with storage.get_client("local", {"root": str(tmp_path / "store")}).get_file_stream(info) as f:
        summary = pickle.load(f)
    assert summary["steps"] == 40 and summary["shuffle"] is True and summary["note"] == "True"
    assert summary["types"] == ["int", "float", "bool", "str", "str"]
