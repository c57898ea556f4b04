"""Issue 18 item 8: a Data node's ``data`` that is a bare blob hash (models older than DeepForge's pipeline
library 0.13) reads as the gme dataInfo DeepForge's own update (``UpdateDataNodesToUserAssets``) makes of it.

Before the fix such a value was refused as "dataInfo is not valid JSON".  Here the hash is a real blob on the
real WebGME server, and a job bundle whose input is that bare hash runs through the in-job runner, which
fetches it through the gme backend.
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.errors import DataInfoError
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.webgme.blob import BlobClient

from tests.fixtures.jobs import last_line, run_runner

HASH = "e93b7917c1fc457e4041cf7d5f0568ef8d91040c"


@pytest.mark.parametrize("text", [HASH, f"{HASH}\n", f"  {HASH} ", HASH.encode()])
def test_a_bare_blob_hash_is_a_gme_datainfo(text: str | bytes) -> None:
    info = DataInfo.from_json(text)
    assert info == DataInfo("gme", HASH)
    assert json.loads(info.dumps()) == {"backend": "gme", "data": HASH}  # what DeepForge's update writes back


@pytest.mark.parametrize(
    "text",
    [
        HASH.upper(),  # WebGME's hashes are lower-case sha1 hex
        HASH[:-1],
        HASH + "0",
        f"{HASH} {HASH}",
        "not-a-hash",
    ],
)
def test_other_text_still_says_it_is_neither_json_nor_a_hash(text: str) -> None:
    with pytest.raises(DataInfoError) as err:
        DataInfo.from_json(text)
    message = str(err.value)
    assert "not valid JSON" in message and "bare WebGME blob hash" in message and "0.13" in message


@pytest.mark.integration
def test_a_job_reads_an_input_whose_datainfo_is_a_bare_hash(
    webgme_server: Any, make_bundle: Callable[..., Path], job_env: dict[str, str]
) -> None:
    blob = BlobClient(webgme_server.url)
    raw = pickle.dumps([3, 4, 5])
    old_data_attribute, _ = blob.create_file("numbers", io.BytesIO(raw), size=len(raw))  # as an old model held it

    info = DataInfo.from_json(old_data_attribute)
    with storage.get_client("gme", {"host": webgme_server.url}).get_file_stream(info) as f:
        assert pickle.loads(f.read()) == [3, 4, 5]

    main = """
    import pickle
    with open("artifacts/numbers", "rb") as f:
        numbers = pickle.load(f)
    print("sum", sum(numbers))
    """
    bundle = make_bundle(main, inputs={"numbers": old_data_attribute})
    job = json.loads((bundle / "job.json").read_text())
    assert job["inputs"][0]["dataInfo"] == {"backend": "gme", "data": old_data_attribute}
    env = {**job_env, "DEEPFORGE_HOST": webgme_server.url}
    done = run_runner(bundle, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sum 12" in done.stdout, done.stdout
    assert "job finished" in last_line(done.stdout)
