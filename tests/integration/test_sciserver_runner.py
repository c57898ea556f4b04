"""A real runner bundle (``deepforge_adapters.jobs``) with ``sciserver-files`` inputs and outputs, run through
``sciserver-compute`` on the contract server.

The bundle carries no secret: inside a SciServer container the runner's ``sciserver-files`` client uses the
user's token from ``/home/idies/keystone.token`` (the contract server maps that file, see its ``jobm``).
"""

from __future__ import annotations

import io
import pickle
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.jobs.archive import bundle_hash, zip_bundle
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage import get_client as get_storage

from tests.fixtures.sciserver import SciServerHandle

pytestmark = pytest.mark.integration

SQUARE = """
import os, pickle
with open("artifacts/numbers", "rb") as f:
    numbers = pickle.load(f)
print("squaring", numbers, flush=True)
os.makedirs("outputs/squares")
with open("outputs/squares/data", "wb") as f:
    pickle.dump([n * n for n in numbers], f)
with open("outputs/squares/metadata.json", "w") as f:
    f.write('{"type": "list"}')
"""


def storage_config(sciserver: SciServerHandle) -> dict[str, Any]:
    """What a plugin would put in job.json: where the data lives, and no secret at all."""
    return {
        "username": sciserver.username,
        "volumePool": "Storage",
        "volume": f"{sciserver.username}/persistent",
        "loginUrl": sciserver.login_url,
        "fileServiceUrl": sciserver.files_url,
    }


def runner_bundle(tmp_path: Path, sciserver: SciServerHandle, main_py: str, inputs: dict[str, DataInfo]) -> Path:
    return build_bundle(
        tmp_path / "bundle",
        storage_id="sciserver-files",
        storage_dir="proj/executions/op",
        storage_config=storage_config(sciserver),
        inputs={name: (info, None) for name, info in inputs.items()},
        outputs=["squares"],
        main_py=textwrap.dedent(main_py),
    )


@pytest.mark.parametrize("as_zip", [False, True])
def test_runner_bundle_through_sciserver_compute(sciserver: SciServerHandle, tmp_path: Path, as_zip: bool) -> None:
    files = get_storage("sciserver-files", sciserver.config())
    numbers = files.put_file_stream("data/numbers", io.BytesIO(pickle.dumps([1, 2, 3])))
    bundle = runner_bundle(tmp_path, sciserver, SQUARE, {"numbers": numbers})
    if as_zip:
        bundle = zip_bundle(bundle, tmp_path / "bundle.zip")
    compute = get_client("sciserver-compute", sciserver.config(racmUrl=sciserver.racm_url))
    job_info = compute.start_job(ComputeJob(bundle=bundle, hash=bundle_hash(bundle), name="square"))

    updates = list(compute.watch(job_info, poll_interval=0.05))

    output = "".join(u.output for u in updates if u.kind == "output")
    assert updates[-1].status == JobStatus.SUCCESS, output
    assert "squaring [1, 2, 3]" in output
    results = compute.get_results_info(job_info)
    assert results["squares"]["type"] == "list"
    info = DataInfo.from_json(results["squares"]["dataInfo"])
    assert info.backend == "sciserver-files"
    assert re.fullmatch(r"proj/executions/op/\d{8}T\d{6}Z-[0-9a-f]{8}/squares", info.data["filename"])
    assert info.data["volume"] == f"{sciserver.username}/persistent"
    with files.get_file_stream(info) as f:
        assert pickle.load(f) == [1, 4, 9]
    bundle_text = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert sciserver.password not in bundle_text  # nothing secret travelled with the job


def test_runner_failure_reason_names_the_input(sciserver: SciServerHandle, tmp_path: Path) -> None:
    ghost = DataInfo(
        "sciserver-files",
        {"filename": "data/never-uploaded", "volume": f"{sciserver.username}/persistent", "volumePool": "Storage"},
    )
    bundle = runner_bundle(tmp_path, sciserver, "print('never runs')", {"numbers": ghost})
    compute = get_client("sciserver-compute", sciserver.config(racmUrl=sciserver.racm_url))
    job_info = compute.start_job(ComputeJob(bundle=bundle, name="ghost"))

    end = list(compute.watch(job_info, poll_interval=0.05))[-1]

    assert end.status == JobStatus.FAILED
    assert "input 'numbers'" in (end.reason or "") and "never-uploaded" in (end.reason or "")
