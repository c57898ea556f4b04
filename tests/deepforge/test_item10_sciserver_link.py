"""Issue 18, item 10: SciServer as DeepForge does it: a one-time account link and DeepForge's SciServer fields.

The link is ``webgme-config/routers/SciServerAuth`` (DeepForge's ``/routers/SciServerAuth``) on a real WebGME
server with authentication on, logging in to the SciServer contract server.  Through it over HTTP: a user
links an account once (password login, or DeepForge's ``register?token=`` callback), lists and unlinks it;
nobody else sees it; the token route answers the server's plugins only.  Then ExecutePipeline runs a pipeline
with ``sciserver-files`` storage given nothing but the SciServer ``username``: the token comes from the link,
and neither the username nor the token reaches the model.
"""

from __future__ import annotations

import json
import secrets
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_adapters.compute.sciserver_compute import SciServerCompute
from deepforge_adapters.sciserver.session import LINK_KEY_ENV, LINK_KEY_HEADER, LINK_ROUTE
from deepforge_adapters.storage.sciserver_files import SciServerFilesStorage

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject, plugin_stack_env
from tests.fixtures.sciserver import SciServerHandle, SciServerProcess, _new_user

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

PASSWORD = "correct horse battery"


class Users:
    def __init__(self, stack: Any, key: str) -> None:
        self.stack = stack
        self.key = key
        self.url = f"{stack.url}/{LINK_ROUTE}"

    def session(self, user: str) -> requests.Session:
        http = requests.Session()
        http.auth = (user, PASSWORD)
        return http


@pytest.fixture(scope="module")
def linked_stack(
    webgme_stack_factory: Any, secret_key: str, plugin_policy: Path, sciserver_process: SciServerProcess
) -> Iterator[Users]:
    key = secrets.token_hex(16)
    env = plugin_stack_env(
        secret_key,
        plugin_policy,
        DEEPFORGE_SCISERVER_LOGIN_URL=f"{sciserver_process.url}login-portal/keystone/v3/tokens",
        **{LINK_KEY_ENV: key},
    )
    stack = webgme_stack_factory(worker_refresh_ms=250, webgme_auth=True, plugin_paths=(str(TEST_PLUGINS),), env=env)
    for user in ("alice", "bob"):
        stack.add_user(user, PASSWORD)
    yield Users(stack, key)


def _server_log(stack: Any) -> str:
    return "\n".join(p.read_text(errors="replace") for p in Path(stack.run_dir).glob("*.log"))


def test_an_account_is_linked_once_and_only_its_webgme_user_sees_it(
    linked_stack: Users, sciserver: SciServerHandle
) -> None:
    alice, bob = linked_stack.session("alice"), linked_stack.session("bob")
    url = linked_stack.url

    r = alice.post(f"{url}/login", json={"username": sciserver.username, "password": "wrong"})
    assert r.status_code == 401 and "SciServer login failed" in r.json()["error"], r.text
    assert "wrong" not in r.text

    r = alice.post(f"{url}/login", json={"username": sciserver.username, "password": sciserver.password})
    assert r.status_code == 200, r.text
    assert r.json() == {"username": sciserver.username}  # never the token
    assert alice.get(url).json() == [sciserver.username]  # DeepForge's valueItemsURL answer
    assert bob.get(url).json() == []

    # The token route is for the server's plugins (they hold the key), never for a browser.
    assert alice.get(f"{url}/{sciserver.username}/token").status_code == 403
    assert alice.get(f"{url}/{sciserver.username}/token", headers={LINK_KEY_HEADER: "guess"}).status_code == 403
    r = alice.get(f"{url}/{sciserver.username}/token", headers={LINK_KEY_HEADER: linked_stack.key})
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert requests.get(f"{sciserver.login_url}/{token}", timeout=10).json()["token"]["user"]["name"] == (
        sciserver.username
    )
    # Another WebGME user cannot read it, even with the key; nor can a guest.
    assert bob.get(f"{url}/{sciserver.username}/token", headers={LINK_KEY_HEADER: linked_stack.key}).status_code == 404
    guest = requests.get(f"{url}/{sciserver.username}/token", headers={LINK_KEY_HEADER: linked_stack.key}, timeout=10)
    assert guest.status_code == 404
    assert bob.delete(f"{url}/{sciserver.username}").status_code == 404
    assert alice.get(url).json() == [sciserver.username]

    store = Path(linked_stack.stack.data_dir) / "sciserver-links.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    log = _server_log(linked_stack.stack)
    assert token not in log and sciserver.password not in log

    assert alice.delete(f"{url}/{sciserver.username}").status_code == 204
    assert alice.get(url).json() == []
    assert (
        alice.get(f"{url}/{sciserver.username}/token", headers={LINK_KEY_HEADER: linked_stack.key}).status_code == 404
    )


def test_deepforges_register_callback_links_a_token_the_portal_issued(
    linked_stack: Users, sciserver: SciServerHandle
) -> None:
    bob = linked_stack.session("bob")
    r = bob.get(f"{linked_stack.url}/register", params={"token": sciserver.login()})
    assert r.status_code == 200 and sciserver.username in r.text, r.text
    assert bob.get(linked_stack.url).json() == [sciserver.username]
    r = bob.get(f"{linked_stack.url}/register", params={"token": "not-a-token"})
    assert r.status_code == 401
    bob.delete(f"{linked_stack.url}/{sciserver.username}")


def test_deepforges_sciserver_fields() -> None:
    for cls in (SciServerFilesStorage, SciServerCompute):
        fields = {f["name"]: f for f in cls.schema.to_config_structure()}
        assert fields["username"].get("isAuth") is True  # never stored in the model
    files = {f["name"]: f for f in SciServerFilesStorage.schema.to_config_structure()}
    assert files["volume"]["value"] == "USERNAME/deepforge_data"
    domain = {f["name"]: f for f in SciServerCompute.schema.to_config_structure()}["computeDomain"]
    assert domain["valueItems"] == ["Small Jobs Domain", "Large Jobs Domain"]
    assert domain["value"] == "Small Jobs Domain"


PRODUCE = """
class Produce:
    def execute(self):
        print("produced", flush=True)
        return [1, 2, 3]
"""


def _as(project: GmeProject, user: str) -> GmeProject:
    project.http.auth = (user, PASSWORD)
    return project


def test_execute_pipeline_uses_the_linked_account_and_stores_no_username_or_token(
    linked_stack: Users, sciserver: SciServerHandle
) -> None:
    alice = linked_stack.session("alice")
    r = alice.post(f"{linked_stack.url}/login", json={"username": sciserver.username, "password": sciserver.password})
    assert r.status_code == 200, r.text
    token = alice.get(
        f"{linked_stack.url}/{sciserver.username}/token", headers={LINK_KEY_HEADER: linked_stack.key}
    ).json()["token"]

    project = _as(GmeProject(linked_stack.stack.url, f"link_{uuid.uuid4().hex[:8]}"), "alice")
    project.owner, project.project_id = "alice", f"alice+{project.name}"
    project.create()
    spec = {"name": "p", "operations": [{"name": "Produce", "code": PRODUCE, "outputs": ["x"]}], "connections": []}
    imported = project.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    pipe = str(imported["messages"][0]["message"])
    dialog = {
        "storage": "sciserver-files",
        "storage.sciserver-files.username": sciserver.username,  # no password, no token: the link's
        "storage.sciserver-files.loginUrl": sciserver.login_url,
        "storage.sciserver-files.fileServiceUrl": sciserver.files_url,
        # Both SciServer backends take the linked account: the job runs as a SciServer Compute job.
        "compute": "sciserver-compute",
        "compute.sciserver-compute.username": sciserver.username,
        "compute.sciserver-compute.loginUrl": sciserver.login_url,
        "compute.sciserver-compute.fileServiceUrl": sciserver.files_url,
        "compute.sciserver-compute.racmUrl": sciserver.racm_url,
    }
    # SetExecutionTargets stores the choice without the account (an auth field).
    stored = project.run("SetExecutionTargets", pipe, {k: v for k, v in dialog.items() if k.startswith("storage")})
    assert stored["success"], stored.get("error")
    result = project.run("ExecutePipeline", pipe, {"name": "linked", **dialog})
    assert result["success"], result.get("error")

    model = project.tree("")
    job = model.find("", "MyExecutions", "linked", "Produce")
    assert model.attrs(job)["status"] == "success"
    (op,) = model.children(job)
    info = json.loads(model.attrs(model.find(op, "Outputs", "x"))["data"])
    assert info["backend"] == "sciserver-files"
    assert info["data"]["volume"] == f"{sciserver.username}/deepforge_data"  # DeepForge's default volume
    assert (sciserver.volume_path(name="deepforge_data") / info["data"]["filename"]).is_file()
    assert "produced" in model.attrs(job)["stdout"]
    dump = project.dump("")
    assert token not in dump and token not in _server_log(linked_stack.stack)
    assert f'"username": "{sciserver.username}"' not in dump and f'\\"username\\": \\"{sciserver.username}' not in dump

    # bob has linked nothing: the same dialog fails before any job starts, saying what to do.
    bobs = _as(GmeProject(linked_stack.stack.url, project.name), "bob")
    bobs.owner, bobs.project_id = "bob", f"bob+{project.name}"
    bobs.create()
    imported = bobs.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    result = bobs.run("ExecutePipeline", str(imported["messages"][0]["message"]), {"name": "nolink", **dialog})
    assert not result["success"]
    assert "is linked to your WebGME account" in result["error"], result["error"]


def test_another_sciserver_user_can_be_linked_beside(linked_stack: Users, sciserver_process: SciServerProcess) -> None:
    alice = linked_stack.session("alice")
    one, two = _new_user(sciserver_process), _new_user(sciserver_process)
    for handle in (one, two):
        r = alice.post(f"{linked_stack.url}/login", json={"username": handle.username, "password": handle.password})
        assert r.status_code == 200, r.text
    assert {one.username, two.username} <= set(alice.get(linked_stack.url).json())
