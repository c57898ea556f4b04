"""WebGME's REST tree API reads below a node whose overlay is sharded (webgme-config/rest_tree_shards.js).

Once the root of a project holds more pointer entries than ``core.overlayShardSize`` (10,000 by default: a
project that ran a few hundred jobs), webgme-engine 2.31.0 answers 404 "Path does not exist" for every path
below it, though the model is intact.  The soak run (seed 15, 250 jobs) lost sight of all its Executions so.
Here the server shards at 1,000 entries (the least WebGME accepts) and one ImportPipeline passes that.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.plugins import TEST_PLUGINS, GmeProject, plugin_stack_env

pytestmark = pytest.mark.integration

#: 50 operations with 20 output ports each: about 1,100 pointer entries in the root's overlay.
OPERATIONS, PORTS = 50, 20


def test_every_node_below_a_sharded_root_reads_over_rest(
    webgme_stack_factory: Callable[..., Any], secret_key: str, plugin_policy: Path
) -> None:
    stack = webgme_stack_factory(
        plugin_paths=(str(TEST_PLUGINS),),
        env=plugin_stack_env(secret_key, plugin_policy, DEEPFORGE_OVERLAY_SHARD_SIZE="1000"),
    )
    project = GmeProject(stack.url, f"shards_{uuid.uuid4().hex[:10]}").create()
    operations = [
        {"name": f"Op{i}", "code": "class Op:\n    def execute(self):\n        return 1\n",
         "outputs": [f"y{j}" for j in range(PORTS)]}
        for i in range(OPERATIONS)
    ]  # fmt: skip
    imported = project.run("ImportPipeline", "", {"pipeline": json.dumps({"name": "big", "operations": operations})})
    assert imported["success"], imported.get("error")

    model = project.tree("")  # through the core (DumpModel), which reads shards itself: the truth
    pipeline = model.find("", "MyPipelines", "big")
    op = model.find(pipeline, "Op7")
    port = next(p for p in model.children(op) for p in model.children(p) if model.attrs(p).get("name") == "y3")
    for path in [*model.children(""), pipeline, op, port]:
        assert project.raw(path)["atr"]["name"] == model.attrs(path)["name"], path
