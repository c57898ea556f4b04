"""Server-side plugins talk to the server they run in, whatever its port and whatever ``DEEPFORGE_HOST`` says.

``DEEPFORGE_HOST`` is the default server of the ``deepforge`` and ``deepforge-worker`` commands; a shell that
exported it for one server and then started another (``make dev --port ...``) used to send the second
server's plugins to the first one (or to ``http://127.0.0.1:8888``).
"""

from __future__ import annotations

import io
import json
import pickle
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.webgme.blob import BlobClient

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject, plugin_stack_env

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture
def elsewhere_stack(webgme_stack_factory: Any, secret_key: str, plugin_policy: Path) -> Any:
    """A plugin stack on a free port whose environment names another (dead) server in ``DEEPFORGE_HOST``."""
    from deepforge_adapters.webgme import HOST_ENV

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    stack = webgme_stack_factory(
        worker_refresh_ms=250,
        plugin_paths=(str(TEST_PLUGINS),),
        env=plugin_stack_env(secret_key, plugin_policy, **{HOST_ENV: dead}),
    )
    assert not stack.url.endswith(":8888")
    return stack


@pytest.fixture
def elsewhere_gme(elsewhere_stack: Any) -> Iterator[GmeProject]:
    yield GmeProject(elsewhere_stack.url, f"plugins_{uuid.uuid4().hex[:10]}").create()


def test_upload_artifact_to_gme_storage_goes_to_this_server(elsewhere_gme: GmeProject, elsewhere_stack: Any) -> None:
    blob = BlobClient(elsewhere_stack.url)
    file_hash, _ = blob.create_file("numbers.pkl", io.BytesIO(pickle.dumps([4, 5])))

    result = elsewhere_gme.run("UploadArtifact", "", {"file": file_hash, "name": "numbers", "storage": "gme"})

    assert result["success"], result.get("error")
    m = elsewhere_gme.tree("")
    info = json.loads(m.attrs(m.find("", "MyArtifacts", "numbers"))["data"])
    assert info["backend"] == "gme"
    with blob.open(info["data"]) as reader:  # the artifact is in this server's blob
        assert pickle.loads(reader.read()) == [4, 5]
