"""Issue 18 item 9: nothing we write is overwritten later, and a read pinned to what was recorded says what changed.

DeepForge writes ``<project>/executions/<job>/<name>`` and ``<project>/artifacts/<name>`` again on every run;
our reads are pinned to the recorded identity (S3 ``If-Match`` on the ETag, local sha256/size), so an older
artifact whose key was overwritten became unreadable (HTTP 412).  Now:

* our writers put every artifact under a fresh key segment (``<dir>/<UTC time>-<hex>/<name>``): the runner's
  outputs (two runs of one job), the Output operation (two executions saving the same name) and
  UploadArtifact (two uploads of one name) all leave the earlier artifact readable;
* a DeepForge S3 dataInfo without an ETag reads as DeepForge reads it: what the key holds now;
* a pinned read that fails names the bucket and key, when it was overwritten and what it holds now.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import storage
from deepforge_adapters.errors import IntegrityError
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.storage import DataInfo, fresh_key, fresh_segment
from deepforge_adapters.storage.cache import WorkerCache
from deepforge_adapters.webgme.blob import BlobClient

from tests.fixtures.jobs import run_runner

pytestmark = pytest.mark.integration

FRESH = r"\d{8}T\d{6}Z-[0-9a-f]{8}"

RANDOM_MAIN = """
import os
os.makedirs("outputs/model", exist_ok=True)
with open("outputs/model/data", "wb") as f:
    f.write(os.urandom(64))
"""


def read(client: storage.StorageClient, info: DataInfo | dict[str, Any] | str) -> bytes:
    with client.get_file_stream(DataInfo.from_json(info)) as f:
        return f.read()


def test_fresh_keys_are_unique_and_say_when() -> None:
    assert re.fullmatch(FRESH, fresh_segment())
    assert fresh_segment(0).startswith("19700101T000000Z-")
    keys = {fresh_key("guest+p/artifacts", "model") for _ in range(200)}
    assert len(keys) == 200 and all(re.fullmatch(rf"guest\+p/artifacts/{FRESH}/model", k) for k in keys)
    assert re.fullmatch(rf"{FRESH}/model", fresh_key("", "model"))


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_rerun_job_never_overwrites_the_outputs_of_the_earlier_run(
    request: Any, tmp_path: Path, job_env: dict[str, str], backend: str
) -> None:
    config = {"root": str(tmp_path / "store")} if backend == "local" else request.getfixturevalue("s3_config")
    client = storage.get_client(backend, config)
    if backend == "s3":
        client.ensure_bucket()  # type: ignore[attr-defined]
    infos, contents = [], []
    for run in range(2):  # the same job twice: same storage dir, as ExecuteJob's re-run or a requeued job
        bundle = build_bundle(
            tmp_path / f"bundle{run}",
            storage_id=backend,
            storage_dir="guest+proj/executions/ex/_K_1",
            storage_config=config,
            outputs=["model"],
            main_py=RANDOM_MAIN,
        )
        done = run_runner(bundle, job_env)
        assert done.returncode == 0, done.stdout + done.stderr
        info = json.loads((bundle / "results.json").read_text())["model"]["dataInfo"]
        infos.append(info)
        contents.append(read(client, info))
    keys = [DataInfo.from_json(i).data["filename"] for i in infos]
    assert keys[0] != keys[1]
    assert all(re.fullmatch(rf"guest\+proj/executions/ex/_K_1/{FRESH}/model", k) for k in keys), keys
    # The first run's dataInfo still reads the first run's bytes (before the fix: HTTP 412 / sha256 mismatch).
    assert read(client, infos[0]) == contents[0] != contents[1] == read(client, infos[1])


def test_a_deepforge_datainfo_without_an_etag_reads_what_the_key_holds_now(
    s3_config: dict[str, Any], tmp_path: Path, job_env: dict[str, str]
) -> None:
    s3 = storage.get_client("s3", s3_config)
    s3.put_file_stream("guest+proj/artifacts/data", io.BytesIO(pickle.dumps("first")))
    latest = s3.put_file_stream("guest+proj/artifacts/data", io.BytesIO(pickle.dumps("second, as DeepForge reuses")))
    # DeepForge's shape without the identity fields (what a hand-made or an older record holds)
    data = {k: v for k, v in latest.data.items() if k not in ("ETag", "VersionId", "LastModified")}
    data["size"] = data["ContentLength"] = 3  # stale, as DeepForge never checks it either
    deepforge_info = DataInfo("s3", data)

    assert read(s3, deepforge_info) == pickle.dumps("second, as DeepForge reuses")
    cached = WorkerCache(tmp_path / "cache").fetch(s3, deepforge_info)  # before: "no ETag ... no cache key"
    assert pickle.loads(cached.read_bytes()) == "second, as DeepForge reuses"

    main = "import pickle\nprint('input is', pickle.load(open('artifacts/data', 'rb')))\n"
    bundle = build_bundle(
        tmp_path / "bundle",
        storage_id="s3",
        storage_dir="guest+proj/executions/ex/_K_2",
        storage_config=s3_config,
        inputs={"data": (deepforge_info, None)},
        main_py=main,
    )
    done = run_runner(bundle, job_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "input is second, as DeepForge reuses" in done.stdout


def test_a_pinned_s3_read_that_fails_says_which_artifact_changed_and_when(
    s3_config: dict[str, Any], tmp_path: Path
) -> None:
    s3 = storage.get_client("s3", s3_config)
    first = s3.put_file_stream("guest+proj/artifacts/model", io.BytesIO(b"weights of run 1"))
    second = s3.put_file_stream("guest+proj/artifacts/model", io.BytesIO(b"weights of run 2 (DeepForge's)"))
    for attempt in (lambda: read(s3, first), lambda: s3.get_file(first, tmp_path / "model")):
        with pytest.raises(IntegrityError) as err:
            attempt()
        message = str(err.value)
        assert "guest+proj/artifacts/model" in message and s3_config["bucketName"] in message
        assert f"was overwritten at {second.data['LastModified']}" in message, message
        assert f"now holds ETag {second.data['ETag']}" in message and f"names ETag {first.data['ETag']}" in message
        assert f"last modified {first.data['LastModified']}" in message
        assert "HTTP 412" in message


def test_a_changed_local_file_says_when(tmp_path: Path) -> None:
    local = storage.get_client("local", {"root": str(tmp_path)})
    info = local.put_file_stream("guest+proj/artifacts/model", io.BytesIO(b"run 1"))
    (tmp_path / "guest+proj/artifacts/model").write_bytes(b"run 2!")  # as DeepForge's writer would
    with pytest.raises(IntegrityError, match=r"it changed \(modified at \d{4}-\d\d-\d\dT.*Z, after the dataInfo"):
        read(local, info)


# ---------------------------------------------------------------------------------- through the plugins
# Our seed (``gme``): the plugins cannot run on DeepForge's project.webgmex until item 2 (fidmodel) lands.

PRODUCE = """
import os


class Produce:
    def execute(self):
        return os.urandom(32)
"""


@pytest.mark.e2e
def test_output_and_upload_never_overwrite_an_earlier_artifact(gme: Any, tmp_path: Path, plugin_stack: Any) -> None:
    dialog = {
        "storage": "local",
        "storage.local.root": str(tmp_path / "store"),
        "compute": "local",
        "compute.local.workDir": str(tmp_path / "work"),
    }
    local = storage.get_client("local", {"root": str(tmp_path / "store")})
    spec = {
        "name": "saver",
        "operations": [
            {"name": "Produce", "code": PRODUCE, "outputs": ["x"]},
            {"name": "save", "output": True, "saveName": "model"},
        ],
        "connections": [["Produce.x", "save.saveData"]],
    }
    imported = gme.run("ImportPipeline", "", {"pipeline": json.dumps(spec)})
    assert imported["success"], imported.get("error")
    pipe = imported["messages"][0]["message"]
    for name in ("run1", "run2"):  # two executions save an artifact of the same name
        result = gme.run("ExecutePipeline", pipe, {"name": name, **dialog})
        assert result["success"], result.get("error")

    blob = BlobClient(plugin_stack.url)
    for n in (1, 2):  # two uploads of one name
        raw = f"upload {n}".encode()
        blob_hash, _ = blob.create_file("numbers", io.BytesIO(raw), size=len(raw))
        upload = {"file": blob_hash, "name": "numbers", **{k: v for k, v in dialog.items() if "storage" in k}}
        result = gme.run("UploadArtifact", "", upload)
        assert result["success"], result.get("error")

    m = gme.tree("")
    artifacts = [m.attrs(p) for p in m.children(m.find("", "MyArtifacts"))]
    saved = [a["data"] for a in artifacts if a.get("name") == "model"]
    uploaded = [a["data"] for a in artifacts if a.get("name") == "numbers"]
    assert len(saved) == 2 and len(uploaded) == 2
    for infos, where in ((saved, "artifacts"), (uploaded, "artifacts")):
        keys = {DataInfo.from_json(i).data["filename"] for i in infos}
        assert len(keys) == 2 and all(re.search(rf"/{where}/{FRESH}/", k) for k in keys), keys
    model_bytes = [pickle.loads(read(local, i)) for i in saved]  # both still readable
    assert len(set(model_bytes)) == 2
    assert sorted(read(local, i) for i in uploaded) == [b"upload 1", b"upload 2"]
    shutil.rmtree(tmp_path / "work", ignore_errors=True)


def test_a_changed_sciserver_file_says_when(sciserver: Any) -> None:
    files = storage.get_client("sciserver-files", sciserver.config())
    first = files.put_file_stream("guest+proj/artifacts/model", io.BytesIO(b"run 1"))
    second = files.put_file_stream("guest+proj/artifacts/model", io.BytesIO(b"run 2, longer"))
    with pytest.raises(IntegrityError) as err:
        read(files, first)
    message = str(err.value)
    assert "guest+proj/artifacts/model" in message
    assert f"modified at {second.data['lastModified']} and now holds 13 bytes" in message, message
    assert f"names the version of {first.data['lastModified']} (5 bytes)" in message
