"""Each nx-27017 patch of ``webgme-config/nx_patched.py`` against the patched wire server, with pymongo.

Every check runs twice: against the patched server (it must pass) and against a server with only that one
patch skipped (``NX_PATCHES_SKIP``; it must fail), which proves each test catches the bug its patch fixes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pymongo = pytest.importorskip("pymongo", reason="run `make node` (installs webgme-config/requirements.txt)")
from deepforge_dev.stack import free_port, webgme_dir  # noqa: E402
from pymongo.database import Database  # noqa: E402
from pymongo.errors import DuplicateKeyError, OperationFailure  # noqa: E402

from tests.fixtures.waiting import wait_for  # noqa: E402

pytestmark = pytest.mark.integration

PATCHES = ("not_operator", "collection_names", "bool_set", "ne_filters", "rename_out", "dup_key_text")


def start_nx(tmp: Path, skip: tuple[str, ...]) -> Iterator[pymongo.MongoClient]:
    port = free_port()
    env = dict(os.environ, NX_PATCHES_SKIP=",".join(skip))
    argv = [sys.executable, str(webgme_dir() / "nx_patched.py"), "--db", "memory", "--host", "127.0.0.1",
            "-p", str(port), "--pid-file", str(tmp / "nx.pid"), "--log-file", str(tmp / "nx.log")]  # fmt: skip
    with open(tmp / "out.log", "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=20000
        )

        def pings() -> bool:
            try:
                client.admin.command("ping")
                return True
            except pymongo.errors.PyMongoError:
                if proc.poll() is not None:
                    raise RuntimeError((tmp / "out.log").read_text()) from None
                return False

        wait_for(pings, 30, f"mongod to answer (log: {tmp / 'out.log'})", interval=0.1)
        yield client
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def patched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pymongo.MongoClient]:
    yield from start_nx(tmp_path_factory.mktemp("nx-patched"), ())


# ---------------------------------------------------------------------------------------------- checks
def check_not_operator(db: Database) -> None:
    """The executor's label query: jobs whose labels are all among the worker's."""
    db.jobs.insert_many([{"_id": "none", "labels": []}, {"_id": "gpu", "labels": ["gpu"]},
                         {"_id": "both", "labels": ["gpu", "big"]}])  # fmt: skip
    found = {d["_id"] for d in db.jobs.find({"labels": {"$not": {"$elemMatch": {"$nin": ["gpu"]}}}})}
    assert found == {"none", "gpu"}


def check_collection_names(db: Database) -> None:
    """One collection per project, named ``owner+project``; its unique _id index must hold."""
    coll = db["guest+My Proj"]
    coll.insert_one({"_id": "#hash", "v": 1})
    with pytest.raises(DuplicateKeyError):
        coll.insert_one({"_id": "#hash", "v": 2})
    assert coll.find_one({"_id": "#hash"}) == {"_id": "#hash", "v": 1}
    assert "guest+My Proj" in db.list_collection_names()
    assert db.list_collection_names(filter={"name": "guest+My Proj"}) == ["guest+My Proj"]
    coll.insert_many([{"_id": f"#{i}"} for i in range(250)])  # getMore batches carry the decoded ns
    assert len(list(coll.find({}, batch_size=50))) == 251


def check_bool_set(db: Database) -> None:
    db.flags.insert_one({"_id": "job"})
    db.flags.update_one({"_id": "job"}, {"$set": {"cancelRequested": True, "nested": {"ok": False}}})
    doc = db.flags.find_one({"_id": "job"})
    assert doc is not None and doc["cancelRequested"] is True and doc["nested"]["ok"] is False


def check_ne_filters(db: Database) -> None:
    """``$ne``/``$nin`` match documents without the field (gmeauth's organisation ops rely on it)."""
    db.users.insert_many([{"_id": "alice"}, {"_id": "org1", "type": "Organization"}])
    assert db.users.update_one({"_id": "alice", "type": {"$ne": "Organization"}}, {"$set": {"x": 1}}).matched_count == 1
    assert db.users.update_many({"type": {"$nin": ["Organization"]}}, {"$set": {"y": 1}}).matched_count == 1
    assert db.users.delete_many({"type": {"$ne": "Organization"}}).deleted_count == 1
    assert [d["_id"] for d in db.users.find({})] == ["org1"]


def check_rename_out(db: Database) -> None:
    """webgme's renameProject / duplicateProject."""
    db.src.insert_many([{"_id": 1, "v": "a"}, {"_id": 2, "v": "b"}])
    db.src.rename("dst")
    assert "src" not in db.list_collection_names() and db.dst.count_documents({}) == 2
    with pytest.raises(OperationFailure) as err:
        db.nothing.rename("other")
    assert err.value.code == 26
    db.taken.insert_one({"_id": 1})
    with pytest.raises(OperationFailure) as err:
        db.dst.rename("taken")
    assert err.value.code == 48
    list(db.dst.aggregate([{"$match": {"v": "a"}}, {"$out": "copy"}]))
    assert list(db.copy.find({})) == [{"_id": 1, "v": "a"}] and db.dst.count_documents({}) == 2


def check_dup_key_text(db: Database) -> None:
    """webgme's TokenServer recognises a taken token name by this text."""
    db.tokens.create_index("displayName", unique=True)
    db.tokens.insert_one({"displayName": "ci"})
    with pytest.raises(DuplicateKeyError) as err:
        db.tokens.insert_one({"displayName": "ci"})
    assert "E11000 duplicate key error" in str(err.value)


CHECKS: dict[str, Callable[[Database], None]] = {
    "not_operator": check_not_operator,
    "collection_names": check_collection_names,
    "bool_set": check_bool_set,
    "ne_filters": check_ne_filters,
    "rename_out": check_rename_out,
    "dup_key_text": check_dup_key_text,
}


@pytest.mark.parametrize("patch", PATCHES)
def test_patch_fixes_its_bug(patched: pymongo.MongoClient, patch: str) -> None:
    CHECKS[patch](patched[f"t_{uuid.uuid4().hex[:8]}"])


@pytest.mark.parametrize("patch", PATCHES)
def test_check_fails_without_its_patch(tmp_path: Path, patch: str) -> None:
    for without in start_nx(tmp_path, (patch,)):
        with pytest.raises((AssertionError, pymongo.errors.PyMongoError, pytest.fail.Exception)):
            CHECKS[patch](without["t"])


def test_every_patch_has_a_check() -> None:
    sys.path.insert(0, str(webgme_dir()))
    try:
        import nx_patched
    finally:
        sys.path.remove(str(webgme_dir()))
    assert set(nx_patched.PATCHES) == set(CHECKS) == set(PATCHES)
    assert nx_patched.decode_name(nx_patched.encode_name("guest+a_b c/é")) == "guest+a_b c/é"
    assert nx_patched.encode_name("_executorJobList") == "_executorJobList"
