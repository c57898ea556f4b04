"""nx-27017 (a MongoDB wire-protocol server on SQLite) with the fixes a WebGME server needs.

No ``mongod`` can be installed on these machines, so the dev stack and the test fixtures run WebGME against
nx-27017.  Out of the box six things break WebGME (listed below, with what they break); each fix
below is a small runtime patch, applied before the server starts, and each one is pinned by a test in
``tests/integration/test_webgme_nx_patches.py`` that fails without it.

1. ``not_operator``     -- ``{$not: {<operator doc>}}`` (the executor's label query ``$not: {$elemMatch: ...}``).
2. ``collection_names`` -- collection names such as ``guest+Proj`` (one collection per WebGME project):
                           mapped reversibly to identifier-safe names at the wire layer, so the unique
                           ``_id`` index survives.
3. ``bool_set``         -- booleans written by ``$set`` stay booleans (not ``1``).
4. ``ne_filters``       -- ``$ne``/``$nin`` filters of update/delete match documents that lack the field.
5. ``rename_out``       -- ``renameCollection`` (was a silent no-op) and the ``$out`` aggregation stage.
6. ``dup_key_text``     -- duplicate-key errors say ``E11000 duplicate key error`` (WebGME matches the text).

The versions are pinned exactly (``requirements.txt``) because these patches reach into their internals.
``NX_PATCHES_SKIP=name,name`` leaves patches out; the tests use it to prove each test catches its bug.

Usage: ``python nx_patched.py --db memory --host 127.0.0.1 -p PORT --pid-file FILE --log-file FILE``
(the arguments of ``nx-27017``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import neosqlite.collection.query_engine.crud_operations as crud_operations
import neosqlite.collection.query_helper.update_operations as update_operations
import neosqlite.query_operators as query_operators
from neosqlite.collection.sql_translator_unified import SQLTranslator
from nx_27017 import handler as nx_handler
from nx_27017 import nx_27017 as nx_main

Handler = nx_handler.NeoSQLiteHandler
Reply = tuple[int, dict[str, Any]]

# ----------------------------------------------------------------------------------------- 1. $not


def patch_not_operator() -> None:
    """Add the ``$not`` query operator: negates an operator document (or a regex) applied to the field."""

    def _not(field: str, value: Any, document: dict[str, Any]) -> bool:
        if isinstance(value, re.Pattern):
            return not query_operators._regex(field, value.pattern, document)
        if not isinstance(value, dict) or not value or not all(k.startswith("$") for k in value):
            raise query_operators.MalformedQueryException("$not needs a regex or an operator document")
        return not all(
            query_operators._regex(field, operand, document, options=value.get("$options", ""))
            if op == "$regex"
            else _operator(op)(field, operand, document)
            for op, operand in value.items()
            if op != "$options"
        )

    def _operator(op: str) -> Callable[[str, Any, dict[str, Any]], bool]:
        fn = getattr(query_operators, "_" + op.lstrip("$"), None)
        if fn is None:
            raise query_operators.MalformedQueryException(f"Operator '{op}' is not currently implemented")
        return fn

    query_operators._not = _not


# ------------------------------------------------------------------------------- 2. collection names

ENCODED_PREFIX = "nxenc_"
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Commands whose first value is a collection name.
_COLLECTION_COMMANDS = frozenset(
    {
        "find", "insert", "update", "delete", "aggregate", "count", "distinct", "findAndModify",
        "findandmodify", "createIndexes", "listIndexes", "dropIndexes", "deleteIndexes", "drop", "create",
        "collMod", "killCursors", "collStats", "collstats", "validate",
    }
)  # fmt: skip


def encode_name(name: str) -> str:
    """``guest+Proj`` -> ``nxenc_guest_2bProj``; identifier-safe names (that don't look encoded) pass."""
    if _SAFE_NAME.match(name) and not name.startswith(ENCODED_PREFIX):
        return name
    return ENCODED_PREFIX + "".join(
        c if (c.isascii() and c.isalnum()) else "".join(f"_{b:02x}" for b in c.encode()) for c in name
    )


def decode_name(name: str) -> str:
    if not name.startswith(ENCODED_PREFIX):
        return name
    raw = name[len(ENCODED_PREFIX) :]
    return re.sub(rb"_([0-9a-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw.encode()).decode()


def _encode_ns(ns: str) -> str:
    db, _, coll = ns.partition(".")
    return f"{db}.{encode_name(coll)}" if coll else ns


def _decode_ns(ns: str) -> str:
    db, _, coll = ns.partition(".")
    return f"{db}.{decode_name(coll)}" if coll else ns


def _encode_command(cmd: dict[str, Any]) -> None:
    """Rewrite the collection names a command names, in place."""
    first = next(iter(cmd), None)
    if first in _COLLECTION_COMMANDS and isinstance(cmd[first], str):
        cmd[first] = encode_name(cmd[first])
    if "getMore" in cmd and isinstance(cmd.get("collection"), str):
        cmd["collection"] = encode_name(cmd["collection"])
    if "renameCollection" in cmd:
        for key in ("renameCollection", "to"):
            if isinstance(cmd.get(key), str):
                cmd[key] = _encode_ns(cmd[key])
    for stage in cmd.get("pipeline") or ():
        if not isinstance(stage, dict):
            continue
        if isinstance(stage.get("$out"), str):
            stage["$out"] = encode_name(stage["$out"])
        for key in ("$lookup", "$graphLookup"):
            if isinstance(stage.get(key), dict) and isinstance(stage[key].get("from"), str):
                stage[key]["from"] = encode_name(stage[key]["from"])


def _decode_reply(reply: dict[str, Any], cmd: dict[str, Any]) -> None:
    cursor = reply.get("cursor")
    if not isinstance(cursor, dict):
        return
    if isinstance(cursor.get("ns"), str):
        cursor["ns"] = _decode_ns(cursor["ns"])
    if "listCollections" in cmd:
        batch = [dict(c, name=decode_name(c["name"])) for c in cursor.get("firstBatch", []) if "name" in c]
        wanted = (cmd.get("filter") or {}).get("name")
        if isinstance(wanted, str):  # nx ignores the filter; drivers use it to test for existence
            batch = [c for c in batch if c["name"] == wanted]
        cursor["firstBatch"] = batch


def _body(msg: dict[str, Any]) -> dict[str, Any] | None:
    for section_type, doc in msg.get("sections", ()):
        if section_type == "body" and isinstance(doc, dict):
            return doc
    return None


def patch_collection_names() -> None:
    for method in ("handle_command", "handle_insert"):
        original = getattr(Handler, method)

        def wrapper(self: Any, msg: dict[str, Any], _original: Any = original) -> Reply:
            cmd = _body(msg)
            if cmd is not None:
                _encode_command(cmd)
            request_id, reply = _original(self, msg)
            if cmd is not None:
                _decode_reply(reply, cmd)
            return request_id, reply

        setattr(Handler, method, wrapper)


# ---------------------------------------------------------------------------------- 3. bool in $set


def _contains_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_contains_bool(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_bool(v) for v in value)
    return False


def patch_bool_set() -> None:
    """SQL ``json_set`` stores Python ``True`` as ``1``; route updates carrying a bool to the Python path."""
    mixin = update_operations.UpdateOperationsMixin
    original = mixin._can_use_sql_updates

    def _can_use_sql_updates(self: Any, update_spec: dict[str, Any], *args: Any, **kwargs: Any) -> bool:
        if _contains_bool(update_spec):
            return False
        return bool(original(self, update_spec, *args, **kwargs))

    mixin._can_use_sql_updates = _can_use_sql_updates


# ---------------------------------------------------------------------------- 4. $ne/$nin in writes

_python_match = threading.local()


def _has_negation(value: Any) -> bool:
    if isinstance(value, dict):
        return any(k in ("$ne", "$nin") or _has_negation(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_negation(v) for v in value)
    return False


@contextlib.contextmanager
def _force_python_match() -> Iterator[None]:
    depth = getattr(_python_match, "depth", 0)
    _python_match.depth = depth + 1
    try:
        yield
    finally:
        _python_match.depth = depth


def patch_ne_filters() -> None:
    """SQL ``json_extract(..) != ?`` is NULL for a missing field; use the Python matcher for such filters."""
    original_translate = SQLTranslator.translate_match

    def translate_match(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_python_match, "depth", 0):
            return None, []
        return original_translate(self, *args, **kwargs)

    SQLTranslator.translate_match = translate_match

    mixin = crud_operations.CRUDOperationsMixin
    for method in ("update_one", "update_many", "delete_one", "delete_many", "replace_one"):
        original = getattr(mixin, method, None)
        if original is None:
            continue

        def wrapper(self: Any, filter: dict[str, Any], *args: Any, _original: Any = original, **kw: Any) -> Any:
            if _has_negation(filter):
                with _force_python_match():
                    return _original(self, filter, *args, **kw)
            return _original(self, filter, *args, **kw)

        setattr(mixin, method, wrapper)


# -------------------------------------------------------------------------- 5. renameCollection, $out

NAMESPACE_NOT_FOUND = 26
NAMESPACE_EXISTS = 48


def _rename(handler: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    source, target = str(cmd.get("renameCollection", "")), str(cmd.get("to", ""))
    src_db, _, src = source.partition(".")
    dst_db, _, dst = target.partition(".")
    if not (src and dst):
        return {"ok": 0, "errmsg": "renameCollection needs 'db.collection' for both names", "code": 73}
    if src_db != dst_db:
        return {"ok": 0, "errmsg": "renameCollection across databases is not supported", "code": 20}
    with handler._lock_for(src_db):
        db = handler.get_database(src_db)
        names = set(db.list_collection_names())
        if src not in names:
            return {"ok": 0, "errmsg": f"source namespace {source} does not exist", "code": NAMESPACE_NOT_FOUND}
        if dst in names:
            if not cmd.get("dropTarget"):
                return {"ok": 0, "errmsg": f"target namespace {target} exists", "code": NAMESPACE_EXISTS}
            db.drop_collection(dst)
        _copy_into(db, dst, db[src].find({}))
        db.drop_collection(src)
    return {"ok": 1}


def _copy_into(db: Any, name: str, docs: Any) -> None:
    target = db.create_collection(name) if name not in db.list_collection_names() else db[name]
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) >= 1000:
            target.insert_many(batch)
            batch = []
    if batch:
        target.insert_many(batch)


def _aggregate_out(handler: Any, cmd: dict[str, Any]) -> dict[str, Any]:
    db_name = cmd.get("$db", "test")
    coll, pipeline = cmd["aggregate"], list(cmd.get("pipeline", []))
    out = pipeline.pop()["$out"]
    if isinstance(out, dict):
        if out.get("db", db_name) != db_name:
            return {"ok": 0, "errmsg": "$out to another database is not supported", "code": 20}
        out = out["coll"]
    with handler._lock_for(db_name):
        db = handler.get_database(db_name)
        docs = db[coll].aggregate(pipeline).to_list() if pipeline else list(db[coll].find({}))
        if out in db.list_collection_names():
            db.drop_collection(out)
        _copy_into(db, out, docs)
    return {"ok": 1, "cursor": {"id": 0, "ns": f"{db_name}.{coll}", "firstBatch": []}}


def patch_rename_out() -> None:
    original = Handler.handle_command

    def handle_command(self: Any, msg: dict[str, Any]) -> Reply:
        cmd = _body(msg)
        if cmd is not None:
            if "renameCollection" in cmd:
                return msg["request_id"], _rename(self, cmd)
            pipeline = cmd.get("pipeline") if "aggregate" in cmd else None
            if pipeline and isinstance(pipeline[-1], dict) and "$out" in pipeline[-1]:
                try:
                    return msg["request_id"], _aggregate_out(self, cmd)
                except Exception as exc:  # the wire answer carries the error, as nx does for aggregate
                    return msg["request_id"], {"ok": 0, "errmsg": f"$out failed: {exc}"}
        return original(self, msg)

    Handler.handle_command = handle_command


# ------------------------------------------------------------------------------- 6. E11000 error text

DUPLICATE_KEY = 11000


def _fix_duplicate_text(error: dict[str, Any]) -> None:
    text = error.get("errmsg")
    if error.get("code") == DUPLICATE_KEY and isinstance(text, str) and not text.startswith("E11000"):
        error["errmsg"] = f"E11000 duplicate key error ({text})"


def patch_dup_key_text() -> None:
    for method in ("handle_command", "handle_insert"):
        original = getattr(Handler, method)

        def wrapper(self: Any, msg: dict[str, Any], _original: Any = original) -> Reply:
            request_id, reply = _original(self, msg)
            _fix_duplicate_text(reply)
            for error in reply.get("writeErrors") or ():
                if isinstance(error, dict):
                    _fix_duplicate_text(error)
            return request_id, reply

        setattr(Handler, method, wrapper)


# ------------------------------------------------------------------------------------------- apply

PATCHES: dict[str, Callable[[], None]] = {
    "not_operator": patch_not_operator,
    "bool_set": patch_bool_set,
    "ne_filters": patch_ne_filters,
    # rename_out wraps handle_command inside collection_names, so it sees (and writes) encoded names.
    "rename_out": patch_rename_out,
    "collection_names": patch_collection_names,
    "dup_key_text": patch_dup_key_text,
}


def apply(skip: set[str] | None = None) -> list[str]:
    skip = set(skip or ())
    unknown = skip - set(PATCHES)
    if unknown:
        raise SystemExit(f"NX_PATCHES_SKIP names unknown patches: {sorted(unknown)}; known: {sorted(PATCHES)}")
    applied = []
    for name, patch in PATCHES.items():
        if name not in skip:
            patch()
            applied.append(name)
    return applied


def main() -> None:
    skip = {s.strip() for s in os.environ.get("NX_PATCHES_SKIP", "").split(",") if s.strip()}
    apply(skip)
    nx_main.main()


if __name__ == "__main__":
    main()
