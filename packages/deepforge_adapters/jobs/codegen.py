r"""Operation code generation: what DeepForge's GenerateJob ``main.ejs``/``deepforge.ejs`` templates produce.

An Operation in a DeepForge model is a Python class with ``execute(self, *inputs)`` returning its outputs.
A job runs it through a generated ``main.py`` that

1. loads each input from ``artifacts/<name>`` with ``deepforge.serialization.load`` (pickle unless a
   serializer was registered for the type), or binds ``None`` when the input has no data,
2. constructs the operation with its attribute values as keyword arguments,
3. calls ``execute`` and writes each output to ``outputs/<name>/data`` (``serialization.dump``) plus
   ``outputs/<name>/metadata.json`` ``{"type": <full class name>}``, which the runner reads for
   ``results.json``.

Attribute values reach the operation typed as DeepForge's ``GenerateJob.getAttributeString`` types them
(:func:`attribute_literal`): a value stored as text becomes a Python number when the *whole* text matches
``-?\d+\.?\d*((e|e-)\d+)?`` (ASCII digits), ``True``/``False`` when it is exactly ``true``/``false``, and
stays a string otherwise; values the model already types (numbers, booleans) keep their type.  Every
literal is checked with :func:`ast.literal_eval`, so an attribute value can never inject code into
``main.py``.

Type names are DeepForge's: ``get_full_class_name`` is ``<module>.<class>`` for every class, builtins
included (``builtins.int``), and deserializers are looked up by that name; a short name an earlier model of
ours recorded (``int``) still finds the ``builtins.`` one.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import BundleError

#: ``deepforge/serialization.py``: DeepForge's ``deepforge.ejs``, same names and behaviour.
SERIALIZATION_PY = '''\
"""Serialization of operation inputs and outputs (DeepForge compatible): pickle unless registered.

Types are named as DeepForge names them, ``<module>.<class>`` (``builtins.int``); a short name recorded by
an earlier deepforge-adapters model (``int``) finds the ``builtins.`` entry.
"""
import pickle

SERIALIZERS = {}
DESERIALIZERS = {}
# DeepForge's names for the two registries.
serializers = SERIALIZERS
deserializers = DESERIALIZERS


def get_full_name(cls):
    return cls.__module__ + "." + cls.__name__


def get_full_class_name(obj):
    return get_full_name(obj.__class__)


def _lookup(table, name):
    if name in table:
        return table[name]
    if isinstance(name, str) and name and "." not in name:
        return table.get("builtins." + name)
    return None


def get_serializer(obj):
    return _lookup(SERIALIZERS, get_full_class_name(obj)) or pickle.dump


def get_deserializer(full_name):
    return _lookup(DESERIALIZERS, full_name) or pickle.load


def register(cls, serialize, deserialize):
    name = cls if isinstance(cls, str) else get_full_name(cls)
    SERIALIZERS[name] = serialize
    DESERIALIZERS[name] = deserialize


def dump(obj, outfile):
    get_serializer(obj)(obj, outfile)


def load(cls_name, infile):
    return get_deserializer(cls_name)(infile)
'''

DEEPFORGE_INIT_PY = "from . import serialization  # noqa: F401\n"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(kind: str, name: str) -> str:
    """``name`` if it is a usable Python identifier (it becomes a variable and a path part), else BundleError."""
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise BundleError(f"{kind} name {name!r} must be a Python identifier (letters, digits, '_')")
    return name


def snake_case(name: str) -> str:
    """``MyOperation`` -> ``my_operation`` (the module name DeepForge uses under ``operations/``)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


@dataclass(frozen=True)
class OperationSource:
    """One Operation as the model holds it: its class code, its ports and its attribute values.

    ``input_types`` maps an input name to the full class name recorded on its Data node (the ``type``
    attribute), used to pick a registered deserializer; untyped inputs load with pickle.
    """

    name: str
    code: str
    inputs: Sequence[str] = ()
    outputs: Sequence[str] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    input_types: Mapping[str, str] = field(default_factory=dict)
    #: Extra code run before the operation is imported (DeepForge's ``initCode``: root Code nodes).
    init_code: str = ""

    def check(self) -> None:
        check_identifier("operation", self.name)
        for n in self.inputs:
            check_identifier("input", n)
        for n in self.outputs:
            check_identifier("output", n)
        for n in self.attributes:
            check_identifier("attribute", n)
        dupes = sorted({n for n in [*self.inputs, *self.outputs] if [*self.inputs, *self.outputs].count(n) > 1})
        if dupes:
            raise BundleError(f"operation {self.name}: port names must be unique; repeated: {dupes}")
        try:
            tree = ast.parse(self.code, filename=f"operations/{snake_case(self.name)}.py")
        except SyntaxError as exc:
            raise BundleError(f"operation {self.name}: code does not parse: {exc}") from None
        if not any(isinstance(node, ast.ClassDef) and node.name == self.name for node in tree.body):
            raise BundleError(f"operation {self.name}: code defines no class named {self.name!r}")


#: ``GenerateJob.getAttributeString``'s test for text that becomes a number or a boolean (JavaScript's ``\d``
#: is ASCII only and its ``$`` matches only at the very end: hence ``re.ASCII`` and ``fullmatch``).
_NUM_OR_BOOL = re.compile(r"-?\d+\.?\d*((e|e-)\d+)?|(true|false)", re.ASCII)
_INTEGER = re.compile(r"-?\d+", re.ASCII)


def attribute_literal(what: str, value: Any) -> str:
    """The Python literal an Operation attribute value is passed to the operation as (DeepForge's rules).

    Text is typed as ``GenerateJob.getAttributeString`` types it: ``'20'`` -> ``20``, ``'-1.5e-3'`` ->
    ``-1.5e-3``, ``'true'`` -> ``True``, anything else (``'True'``, ``'1e+5'``, ``'.5'``, ``' 5'``,
    ``'20\\n'``) a string.  Where DeepForge's output would not be valid Python, ours gives the value it meant:
    an integer with leading zeros (``'007'``) is ``7`` (DeepForge emitted ``007``, a SyntaxError), and a
    string is an exact literal of its text (DeepForge wrapped it in ``"..."`` unescaped, so a quote broke
    ``main.py`` and a backslash was read as an escape).  ``None`` (no value) is ``None`` (DeepForge passed the
    text ``"undefined"``).  Numbers and booleans the model already types keep their type, as do lists and
    dicts (an extension: DeepForge's metamodel has no such attribute types).
    """
    if isinstance(value, str) and _NUM_OR_BOOL.fullmatch(value):
        if value in ("true", "false"):
            return "True" if value == "true" else "False"
        try:
            number = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # '007': no leading zeros in a Python 3 integer literal
            number = None
        if isinstance(number, int | float) and not isinstance(number, bool):
            return value
        if _INTEGER.fullmatch(value):
            return str(int(value))
        raise BundleError(f"{what}: value {value[:80]!r} looks like a number but is not one Python can read")
    return _literal(what, value)


def _literal(what: str, value: Any) -> str:
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        same = False
    if not same:
        raise BundleError(f"{what}: value {text[:80]} is not a Python literal (str, number, bool, None, list, dict)")
    return text


def generate_main_py(op: OperationSource) -> str:
    """The job's ``main.py`` for ``op`` (see the module docstring for what it does)."""
    op.check()
    module = snake_case(op.name)
    lines = [
        '"""Generated by deepforge_adapters.jobs.codegen: runs one operation on its inputs."""',
        "import json",
        "import os",
        "import signal",
        "import sys",
        "",
        "import deepforge.serialization as serialization",
        "",
        "",
        "def _exit_on_signal(signum, frame):",
        "    sys.exit(1)",
        "",
        "",
        "signal.signal(signal.SIGINT, _exit_on_signal)",
        "signal.signal(signal.SIGTERM, _exit_on_signal)",
        "",
    ]
    if op.init_code.strip():
        lines += [op.init_code.rstrip(), ""]
    lines += [
        f"from operations.{module} import {op.name}",
        "",
        "",
        "def _load(name, type_name):",
        '    path = os.path.join("artifacts", name)',
        "    if not os.path.exists(path):",
        "        return None",
        '    with open(path, "rb") as f:',
        "        return serialization.load(type_name, f)",
        "",
        "",
        "def _save(name, value):",
        '    out_dir = os.path.join("outputs", name)',
        "    os.makedirs(out_dir, exist_ok=True)",
        '    with open(os.path.join(out_dir, "data"), "wb") as f:',
        "        serialization.dump(value, f)",
        '    with open(os.path.join(out_dir, "metadata.json"), "w") as f:',
        '        json.dump({"type": serialization.get_full_class_name(value)}, f)',
        "",
        "",
    ]
    for name in op.inputs:
        type_name = _literal(f"input {name} type", op.input_types.get(name, ""))
        lines.append(f"{name} = _load({name!r}, {type_name})")
    kwargs = ", ".join(f"{k}={attribute_literal(f'attribute {k}', v)}" for k, v in op.attributes.items())
    lines.append(f"operation = {op.name}({kwargs})")
    call = f"operation.execute({', '.join(op.inputs)})"
    if not op.outputs:
        lines.append(call)
    elif len(op.outputs) == 1:
        lines.append(f"{op.outputs[0]} = {call}")
    else:
        lines.append(f"{', '.join(op.outputs)} = {call}")
    for name in op.outputs:
        lines.append(f"_save({name!r}, {name})")
    return "\n".join(lines) + "\n"


def operation_files(op: OperationSource) -> dict[str, str]:
    """Every file a job needs to run ``op``: ``main.py``, the operation module and ``deepforge/``."""
    module = snake_case(op.name)
    return {
        "main.py": generate_main_py(op),
        f"operations/{module}.py": op.code,
        "operations/__init__.py": f"from operations.{module} import {op.name}  # noqa: F401\n",
        "deepforge/__init__.py": DEEPFORGE_INIT_PY,
        "deepforge/serialization.py": SERIALIZATION_PY,
    }
