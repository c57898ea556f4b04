"""Interop with the peer: one generic bundle under our worker and under the Node webgme-executor-worker 3.1.1.

Both must reach SUCCESS against the same server and produce equivalent ``resultHashes``: the same artifact
names, each with the same relative paths and the same bytes (the bundles differ only by their nonce file,
which keeps the two executor jobs apart).  Patterns exercise minimatch details: ``**``, several patterns,
a dotfile ``*`` must not match, and a pattern matching nothing (an empty artifact).
"""

from __future__ import annotations

from typing import Any

import pytest
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import python_config, upload_bundle

pytestmark = pytest.mark.integration

CODE = (
    "import os\n"
    "os.makedirs('outputs/model', exist_ok=True)\n"
    "open('outputs/model/data', 'w').write('weights')\n"
    "open('outputs/model/metadata.json', 'w').write('{\"type\": \"str\"}')\n"
    "open('results.json', 'w').write('{\"model\": 1}')\n"
    "open('.hidden', 'w').write('not matched by *')\n"
    "print('trained')\n"
)
ARTIFACTS = [
    {"name": "stdout", "resultPatterns": ["job_stdout.txt"]},
    {"name": "results", "resultPatterns": ["results.json"]},
    {"name": "model", "resultPatterns": ["outputs/model/**"]},
    {"name": "top", "resultPatterns": ["*.json", "*.txt"]},
    {"name": "none", "resultPatterns": ["no/such/*"]},
]


def contents(blob: BlobClient, artifact_hash: str) -> dict[str, bytes]:
    out = {}
    for relpath in blob.metadata(artifact_hash)["content"]:
        with blob.open(artifact_hash, subpath=relpath) as fh:
            out[relpath] = fh.read()
    return out


def run_on(stack: Any, start_worker: Any) -> dict[str, dict[str, bytes]]:
    blob = BlobClient(stack.url)
    executor = ExecutorClient(stack.url)
    worker = start_worker(stack)
    bundle = upload_bundle(blob, {}, python_config(CODE, ARTIFACTS))
    executor.create_job(bundle)
    info = wait_for(
        lambda: (i := executor.get_info(bundle))["status"] not in ("CREATED", "RUNNING") and i, 90, "the job to end"
    )
    assert info["status"] == "SUCCESS", worker.log()
    assert info["worker"].endswith(f"_{worker.pid}")
    worker.kill()
    files = {name: contents(blob, h) for name, h in info["resultHashes"].items()}
    for artifact in files.values():
        artifact.pop("nonce.txt", None)
    return files


def test_same_bundle_same_results_under_both_workers(
    webgme_stack_factory: Any, worker_factory: Any, node_worker_factory: Any
) -> None:
    stack = webgme_stack_factory(worker_refresh_ms=250)
    node = run_on(stack, node_worker_factory)
    ours = run_on(stack, worker_factory)
    # Both keep stderr apart in job_stderr.txt (never posted live); this bundle writes nothing to stderr.
    assert node["top"]["job_stderr.txt"] == ours["top"]["job_stderr.txt"] == b""
    assert node == ours
    assert ours["model"] == {"outputs/model/data": b"weights", "outputs/model/metadata.json": b'{"type": "str"}'}
    assert ours["top"] == {
        "results.json": b'{"model": 1}',
        "job_stdout.txt": b"trained\n",
        "job_stderr.txt": b"",
        "executor_config.json": ours["top"]["executor_config.json"],
    }
    assert ours["none"] == {}
