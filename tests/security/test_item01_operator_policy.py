"""Issue 16 item 1: the operator policy decides which backends (and which of their settings) plugin users get.

Against real WebGME servers running the real plugins, requests made as an anonymous guest:

* without a policy, ``local`` compute and ``local`` storage are refused (no Execution, no job, no file) and
  the ``gme`` host is this server: nothing is sent to a host the user names;
* with a policy, a value outside it (another ``local`` root, an S3 endpoint not listed) is refused before
  anything is created or sent, and so is a crafted dataInfo (or reader config) that points outside it;
* the dialogs list only what the policy allows; an invalid policy file is refused naming the file and key.

Attackers' servers are plain ``http.server`` listeners on loopback that record every request.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.policy import POLICY_ENV
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_dev.stack import PLUGINS_DIR_ENV

from tests.fixtures.attacker import AttackerServer
from tests.fixtures.plugins import TEST_PLUGINS, GmeProject, plugin_stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

#: An operation that leaves a marker file: if it exists, the operation ran.
MARK = """
class Mark:
    def __init__(self, marker=""):
        self.marker = marker

    def execute(self):
        open(self.marker, "w").write("ran")
        return 1
"""

#: An operation that copies its input where the attacker can read it (stdout, a marker file).
LEAK = """
class Leak:
    def __init__(self, marker=""):
        self.marker = marker

    def execute(self, x):
        open(self.marker, "w").write(repr(x))
        print("leaked", x)
        return x
"""


# ------------------------------------------------------------------------------------------- helpers
def _stack(factory: Any, secret_key: str, policy: str, plugins_dir: Path | None = None) -> Any:
    env = plugin_stack_env(secret_key, policy)
    if plugins_dir is not None:  # the plugins with dialogs generated for the policy, as `make dev` deploys them
        subprocess.run([sys.executable, "-m", "deepforge_plugins.metadata", "--deploy", str(plugins_dir)],
                       env={**os.environ, POLICY_ENV: policy}, check=True, capture_output=True)  # fmt: skip
        env[PLUGINS_DIR_ENV] = str(plugins_dir)
    return factory(worker_refresh_ms=250, plugin_paths=(str(TEST_PLUGINS),), env=env)


@pytest.fixture(scope="module")
def open_stack(webgme_stack_factory: Any, secret_key: str) -> Any:
    """A server as it ships: no policy file (``$DEEPFORGE_POLICY`` empty), guests allowed, no auth."""
    return _stack(webgme_stack_factory, secret_key, "")


@pytest.fixture(scope="module")
def strict_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("strict")
    return {"root": base / "storage", "work": base / "compute", "policy": base / "policy.toml"}


def strict_policy(dirs: dict[str, Path]) -> str:
    return f"""
[storage]
allow = ["gme", "local", "s3"]

[storage.local]
root = {{ fixed = {json.dumps(str(dirs["root"]))} }}

[storage.s3]
endpoint = {{ allowed = ["http://127.0.0.1:9"] }}

[compute]
allow = ["gme", "local"]

[compute.local]
workDir = {{ fixed = {json.dumps(str(dirs["work"]))} }}
"""


@pytest.fixture(scope="module")
def strict_stack(webgme_stack_factory: Any, secret_key: str, strict_dirs: dict[str, Path]) -> Any:
    """A server whose operator fixed the local root and work dir and lists the one S3 endpoint allowed."""
    strict_dirs["policy"].write_text(strict_policy(strict_dirs))
    return _stack(webgme_stack_factory, secret_key, str(strict_dirs["policy"]))


def _project(stack: Any) -> Iterator[GmeProject]:
    project = GmeProject(stack.url, f"policy_{uuid.uuid4().hex[:10]}").create()
    yield project
    project.http.delete(f"{project.url}/api/projects/{project.owner}/{project.name}")


@pytest.fixture
def open_gme(open_stack: Any) -> Iterator[GmeProject]:
    yield from _project(open_stack)


@pytest.fixture
def strict_gme(strict_stack: Any) -> Iterator[GmeProject]:
    yield from _project(strict_stack)


def import_pipeline(gme: GmeProject, spec: dict[str, Any]) -> str:
    result = gme.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert result["success"], result.get("error")
    return str(result["messages"][0]["message"])


def mark_pipeline(marker: Path) -> dict[str, Any]:
    return {"name": "mark", "operations": [{"name": "Mark", "code": MARK, "outputs": ["done"],
                                            "attributes": {"marker": str(marker)}}]}  # fmt: skip


def executions(gme: GmeProject) -> list[str]:
    m = gme.tree("")
    return m.children(m.find("", "MyExecutions"))


def artifacts(gme: GmeProject) -> list[str]:
    m = gme.tree("")
    return m.children(m.find("", "MyArtifacts"))


def upload_blob(stack: Any, data: bytes, name: str = "data.pkl") -> str:
    blob_hash, _ = BlobClient(stack.url).create_file(name, io.BytesIO(data))
    return blob_hash


def crafted_artifact(gme: GmeProject, stack: Any, data_info: dict[str, Any], name: str) -> str:
    """A Data node in MyArtifacts whose ``data`` a user typed: uploaded to gme, then edited in the model."""
    result = gme.run("UploadArtifact", "", {"file": upload_blob(stack, pickle.dumps(0)), "name": name,
                                            "storage": "gme", "storage.gme.host": stack.url})  # fmt: skip
    assert result["success"], result.get("error")
    m = gme.tree("")
    path = m.find("", "MyArtifacts", name)
    result = gme.run("SetAttributes", path, {"attrs": {"data": json.dumps(data_info)}})
    assert result["success"], result.get("error")
    return path


def leak_pipeline(artifact: str, marker: Path) -> dict[str, Any]:
    return {
        "name": "leak",
        "operations": [
            {"name": "secret", "input": artifact},
            {"name": "Leak", "code": LEAK, "inputs": ["x"], "outputs": ["y"], "attributes": {"marker": str(marker)}},
        ],
        "connections": [["secret.data", "Leak.x"]],
    }


def refused(result: dict[str, Any], *needles: str) -> str:
    assert not result["success"], "the request was accepted"
    error = str(result.get("error"))
    for needle in needles:
        assert needle in error, f"{needle!r} not in {error!r}"
    return error


# ------------------------------------------------------------------------------------- no policy file
def test_guest_cannot_run_an_operation_on_the_server_host_without_a_policy(
    open_gme: GmeProject, tmp_path: Path
) -> None:
    marker, work = tmp_path / "ran", tmp_path / "work"
    pipe = import_pipeline(open_gme, mark_pipeline(marker))
    result = open_gme.run("ExecutePipeline", pipe, {"name": "pwn", "storage": "gme", "compute": "local",
                                                    "compute.local.workDir": str(work)})  # fmt: skip
    refused(result, "compute backend 'local' is not allowed", POLICY_ENV)
    assert executions(open_gme) == []  # no Execution node
    assert not marker.exists() and not work.exists()  # no job, no operation ran

    # Storing the choice on the pipeline (to run it later, or by another user) is refused too.
    result = open_gme.run("SetExecutionTargets", pipe, {"compute": "local"})
    refused(result, "compute backend 'local' is not allowed", POLICY_ENV)
    assert "executionTargets" not in open_gme.raw(pipe).get("reg", {})


def test_a_target_edited_into_the_model_is_refused_at_run_time(open_gme: GmeProject, tmp_path: Path) -> None:
    """The registry a user can edit directly (SetExecutionTargets is not the only way to write it)."""
    marker = tmp_path / "ran"
    pipe = import_pipeline(open_gme, mark_pipeline(marker))
    assert open_gme.run("SetExecutionTargets", pipe, {"storage": "gme", "compute": "gme"})["success"]
    op = open_gme.tree(pipe).find(pipe, "Mark")
    # What a model-editor edit of the Operation's registry stores (SetExecutionTargets' own format).
    targets = {"compute": {"id": "local", "config": {"workDir": str(tmp_path / "work")}}}
    result = open_gme.run("SetAttributes", op, {"registry": {"executionTargets": json.dumps(targets)}})
    assert result["success"], result.get("error")
    result = open_gme.run("ExecutePipeline", pipe, {"name": "edited"})
    refused(result, "compute backend 'local' is not allowed", POLICY_ENV)
    assert executions(open_gme) == [] and not marker.exists()


def test_upload_cannot_write_into_a_directory_the_user_names(
    open_gme: GmeProject, open_stack: Any, tmp_path: Path
) -> None:
    target = tmp_path / "anywhere"
    before = artifacts(open_gme)
    result = open_gme.run("UploadArtifact", "", {"file": upload_blob(open_stack, b"payload"), "name": "x",
                                                 "storage": "local", "storage.local.root": str(target)})  # fmt: skip
    refused(result, "storage backend 'local' is not allowed", POLICY_ENV)
    assert not target.exists()
    assert artifacts(open_gme) == before


def test_the_gme_host_is_this_server_the_user_token_goes_nowhere_else(
    open_gme: GmeProject, attacker_listener: AttackerServer, tmp_path: Path
) -> None:
    pipe = import_pipeline(open_gme, mark_pipeline(tmp_path / "ran"))
    result = open_gme.run("ExecutePipeline", pipe, {"name": "elsewhere", "storage": "gme", "compute": "gme",
                                                    "compute.gme.host": attacker_listener.url})  # fmt: skip
    refused(result, "compute.gme.host", "this server's URL", POLICY_ENV)
    assert attacker_listener.requests == []
    assert executions(open_gme) == []


# --------------------------------------------------------------------------------- a policy in force
def test_a_fixed_root_refuses_another_root_and_is_used_when_none_is_given(
    strict_gme: GmeProject, strict_stack: Any, strict_dirs: dict[str, Path], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    blob = upload_blob(strict_stack, b"payload")
    before = artifacts(strict_gme)
    result = strict_gme.run("UploadArtifact", "", {"file": blob, "name": "x", "storage": "local",
                                                   "storage.local.root": str(other)})  # fmt: skip
    refused(result, "storage.local.root", str(strict_dirs["root"]), str(strict_dirs["policy"]))
    assert not other.exists() and artifacts(strict_gme) == before

    # The operator's root is what a request without one gets (and one repeating it is fine).
    for extra in ({}, {"storage.local.root": str(strict_dirs["root"])}):
        result = strict_gme.run("UploadArtifact", "", {"file": blob, "name": "x", "storage": "local", **extra})
        assert result["success"], result.get("error")
    stored = [p for p in strict_dirs["root"].rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [b"payload", b"payload"]  # each upload its own key (issue 18 item 9)


def test_a_crafted_local_datainfo_outside_the_policy_root_is_not_read(
    strict_gme: GmeProject, strict_stack: Any, strict_dirs: dict[str, Path], tmp_path: Path
) -> None:
    """A Data node whose dataInfo names a file in the victim's directory, read with a root the user typed
    into the Execute dialog's "credentials for inputs" (on main the job read it on the server host)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    secret = pickle.dumps("TOPSECRET")
    (victim / "secret.pkl").write_bytes(secret)
    info = {"backend": "local", "data": {"filename": "secret.pkl", "size": len(secret),
                                         "sha256": hashlib.sha256(secret).hexdigest()}}  # fmt: skip
    path = crafted_artifact(strict_gme, strict_stack, info, "secret")
    marker = tmp_path / "leaked"
    pipe = import_pipeline(strict_gme, leak_pipeline("secret", marker))
    dialog = {"name": "leak", "storage": "gme", "compute": "local",
              "inputs": {path: {"backend": "local", "root": str(victim)}}}  # fmt: skip
    result = strict_gme.run("ExecutePipeline", pipe, dialog)
    refused(result, "storage.local.root", str(strict_dirs["policy"]))
    assert executions(strict_gme) == [] and not marker.exists()


def test_an_s3_endpoint_not_in_the_policy_is_refused_before_a_request(
    strict_gme: GmeProject, strict_stack: Any, strict_dirs: dict[str, Path], attacker_listener: AttackerServer
) -> None:
    s3 = {"storage": "s3", "storage.s3.endpoint": attacker_listener.url, "storage.s3.accessKeyId": "AKIAVICTIM",
          "storage.s3.secretAccessKey": "victim-secret", "storage.s3.maxAttempts": 1}  # fmt: skip
    before = artifacts(strict_gme)
    result = strict_gme.run("UploadArtifact", "", {"file": upload_blob(strict_stack, b"x"), "name": "x", **s3})
    error = refused(result, "storage.s3.endpoint", attacker_listener.url, str(strict_dirs["policy"]))
    assert "victim-secret" not in error
    assert attacker_listener.requests == []
    assert artifacts(strict_gme) == before


def test_a_crafted_s3_datainfo_naming_another_endpoint_is_refused(
    strict_gme: GmeProject,
    strict_stack: Any,
    strict_dirs: dict[str, Path],
    attacker_listener: AttackerServer,
    tmp_path: Path,
) -> None:
    info = {"backend": "s3", "data": {"filename": "k", "bucketName": "b", "endpoint": attacker_listener.url,
                                      "ETag": '"0"', "size": 1}}  # fmt: skip
    path = crafted_artifact(strict_gme, strict_stack, info, "remote")
    marker = tmp_path / "leaked"
    pipe = import_pipeline(strict_gme, leak_pipeline("remote", marker))
    creds = {path: {"accessKeyId": "AKIAVICTIM", "secretAccessKey": "victim-secret"}}  # the reader's own keys
    dialog = {"name": "fetch", "storage": "gme", "compute": "local", "inputs": creds}
    result = strict_gme.run("ExecutePipeline", pipe, dialog)
    refused(result, "storage.s3.endpoint", attacker_listener.url, str(strict_dirs["policy"]))
    assert attacker_listener.requests == []  # on main the job on the server host asked the attacker for the object
    assert executions(strict_gme) == [] and not marker.exists()


def test_an_invalid_policy_file_is_refused_naming_file_and_key(
    strict_gme: GmeProject, strict_dirs: dict[str, Path]
) -> None:
    pipe = import_pipeline(strict_gme, mark_pipeline(strict_dirs["work"] / "never"))
    policy = strict_dirs["policy"]
    good = policy.read_text()
    try:
        policy.write_text(good.replace('allow = ["gme", "local"]', 'allow = ["gme", "local", "mainframe"]'))
        result = strict_gme.run("SetExecutionTargets", pipe, {"compute": "gme"})
        refused(result, f"policy file {policy}", "compute.allow", "mainframe")
    finally:
        policy.write_text(good)
    assert strict_gme.run("SetExecutionTargets", pipe, {"compute": "gme"})["success"]


# ------------------------------------------------------------------------------------------- dialogs
def _dialog(stack: Any, plugin: str = "ExecutePipeline") -> dict[str, dict[str, Any]]:
    """The dialog fields the server gives the UI for ``plugin``."""
    r = GmeProject(stack.url, "none").http.get(f"{stack.url}/api/plugins/{plugin}/metadata")
    r.raise_for_status()
    return {f["name"]: f for f in r.json()["configStructure"]}


def test_the_dialogs_offer_only_what_the_policy_allows(
    open_stack: Any, webgme_stack_factory: Any, secret_key: str, strict_dirs: dict[str, Path], tmp_path: Path
) -> None:
    for plugin in ("ExecutePipeline", "ExecuteJob", "SetExecutionTargets", "UploadArtifact", "CancelExecution"):
        fields = _dialog(open_stack, plugin)  # the committed dialogs: no policy
        for kind in ("storage", "compute"):
            assert "local" not in fields.get(kind, {}).get("valueItems", []), (plugin, kind)
        assert not [n for n in fields if n.startswith(("storage.local.", "compute.local."))], plugin
        assert "compute.gme.host" not in fields and "storage.gme.host" not in fields  # this server, always

    # A server that loads the plugins deployed for its policy (what `make dev` does).
    strict_dirs["policy"].write_text(strict_policy(strict_dirs))
    strict_stack = _stack(webgme_stack_factory, secret_key, str(strict_dirs["policy"]), tmp_path / "plugins")
    fields = _dialog(strict_stack)
    assert fields["storage"]["valueItems"] == ["gme", "local", "s3"]
    assert fields["compute"]["valueItems"] == ["gme", "local"]
    assert "storage.local.root" not in fields and "compute.local.workDir" not in fields  # the operator's
    assert fields["storage.s3.endpoint"]["valueItems"] == ["http://127.0.0.1:9"]
    assert _dialog(strict_stack, "SetExecutionTargets")["storage"]["valueItems"] == ["", "gme", "local", "s3"]
