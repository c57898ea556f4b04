"""Two real processes fetch the same input into one WorkerCache at the same moment: one download."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters.storage import get_client

from tests.fixtures.storage import subprocess_env
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

CHILD = """
import json, pathlib, sys, time
from deepforge_adapters.storage import DataInfo, get_client
from deepforge_adapters.storage.cache import WorkerCache

config, info, cache_root, ready, go = sys.argv[1:]
client = get_client("dftest", json.loads(config))
pathlib.Path(ready).touch()
deadline = time.monotonic() + 30
while not pathlib.Path(go).exists():
    if time.monotonic() > deadline:
        sys.exit("never told to go")
    time.sleep(0.005)
print(WorkerCache(cache_root).fetch(client, DataInfo.from_json(info)))
"""


def _race(dist: Path, tmp_path: Path, cache_roots: list[Path], config: dict[str, object], info: str) -> list[str]:
    """Start one child per cache root, release them together, return what each printed."""
    go = tmp_path / "go"
    children = []
    for i, root in enumerate(cache_roots):
        ready = tmp_path / f"ready-{i}"
        cmd = [sys.executable, "-c", CHILD, json.dumps(config), info, str(root), str(ready), str(go)]
        proc = subprocess.Popen(
            cmd, env=subprocess_env(pythonpath=dist), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        children.append((proc, ready))
    try:

        def started() -> bool:
            assert all(p.poll() is None for p, _ in children), [p.communicate() for p, _ in children]
            return all(ready.exists() for _, ready in children)

        wait_for(started, 60, "the children to start", interval=0.01)
        go.touch()
        outputs = []
        for proc, _ in children:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            outputs.append(out.strip())
        return outputs
    finally:
        for proc, _ in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_two_processes_fetching_one_input_download_it_once(dftest_on_path: Path, tmp_path: Path) -> None:
    counter = tmp_path / "downloads"
    config = {"root": str(tmp_path / "store"), "counter": str(counter), "delay": 0.5}
    client = get_client("dftest", {"root": config["root"]})
    payload = b"shared input " * 50_000
    info = client.put_file_stream("inputs/data", io.BytesIO(payload))

    cache_root = tmp_path / "cache"
    outputs = _race(dftest_on_path, tmp_path, [cache_root, cache_root], config, info.dumps())

    assert outputs[0] == outputs[1]
    assert Path(outputs[0]).read_bytes() == payload
    assert len(counter.read_text().splitlines()) == 1, "both processes downloaded"
    assert list((cache_root / "tmp").iterdir()) == []


def test_the_download_counter_sees_both_when_caches_differ(dftest_on_path: Path, tmp_path: Path) -> None:
    """Control for the test above: with separate caches, both processes do download."""
    counter = tmp_path / "downloads"
    config = {"root": str(tmp_path / "store"), "counter": str(counter), "delay": 0.0}
    info = get_client("dftest", {"root": config["root"]}).put_file_stream("x", io.BytesIO(b"abc"))
    outputs = _race(dftest_on_path, tmp_path, [tmp_path / "c1", tmp_path / "c2"], config, info.dumps())
    assert outputs[0] != outputs[1]
    assert len(counter.read_text().splitlines()) == 2
