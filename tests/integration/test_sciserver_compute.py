"""``sciserver-compute`` end to end against the contract server, which runs the submitted command locally.

The bundle here is a generic one (an ``executor_config.json`` whose command prints and writes
``results.json``), the same shape the job runner's bundles have.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import compute
from deepforge_adapters.compute import ComputeJob, JobStatus, JobUpdate
from deepforge_adapters.compute.sciserver_compute import SciServerCompute
from deepforge_adapters.errors import ComputeError

from tests.fixtures.sciserver import SciServerHandle

pytestmark = pytest.mark.integration

JOB_PY = """\
import json, os, sys, time
print("starting job", flush=True)
print("héllo ünïcode", flush=True)
if os.environ.get("WAIT_FOR_GO") or os.path.exists("wait"):
    while not os.path.exists("go"):
        time.sleep(0.05)
print("after go", flush=True)
print("to stderr", file=sys.stderr, flush=True)
if os.path.exists("fail"):
    print("Error: the operation failed on purpose", flush=True)
    sys.exit(2)
if os.path.exists("sleep"):
    time.sleep(60)
with open("results.json", "w") as f:
    json.dump({"model": {"type": "pickle", "dataInfo": {"backend": "sciserver-files", "data": {"x": 1}}}}, f)
print("done", flush=True)
"""


def executor_bundle(root: Path, *flags: str) -> Path:
    """A raw executor bundle (``executor_config.json`` + ``job.py``), not an operation bundle (``make_bundle``)."""
    bundle = root / "bundle"
    (bundle / "sub").mkdir(parents=True)
    (bundle / "job.py").write_text(JOB_PY)
    (bundle / "sub" / "data.txt").write_text("nested file\n")
    (bundle / "executor_config.json").write_text(json.dumps({"cmd": "python3", "args": ["job.py"]}))
    for flag in flags:
        (bundle / flag).write_text("")
    return bundle


def client(sciserver: SciServerHandle, **overrides: Any) -> SciServerCompute:
    made = compute.get_client("sciserver-compute", sciserver.config(racmUrl=sciserver.racm_url, **overrides))
    assert isinstance(made, SciServerCompute)
    made.poll_interval = 0.05
    made.max_poll_interval = 0.2
    return made


def scratch_dir(sciserver: SciServerHandle, job_info: dict[str, Any]) -> Path:
    return sciserver.volume_path("Temporary", "scratch") / job_info["scratchDir"]


def output_of(updates: list[JobUpdate]) -> str:
    return "".join(u.output for u in updates if u.kind == "output")


def test_registry_and_schema() -> None:
    cls = compute.registry.get_class("sciserver-compute")
    assert cls is SciServerCompute and cls.name == "SciServer Compute"
    fields = {f["name"]: f for f in cls.schema.to_config_structure()}
    assert fields["token"]["isAuth"] and fields["password"]["isAuth"]
    assert fields["computeDomain"]["value"] == "Small Jobs Domain"
    assert fields["racmUrl"]["value"] == "https://apps.sciserver.org/racm"


def test_bundle_runs_end_to_end(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path), hash="abc123", name="train"))
    assert job_info["hash"] == "abc123" and isinstance(job_info["id"], int)
    assert json.loads(json.dumps(job_info)) == job_info
    uploaded = scratch_dir(sciserver, job_info)
    assert (uploaded / "sub" / "data.txt").read_text() == "nested file\n"
    updates = list(runner.watch(job_info))
    assert updates[-1] == JobUpdate("end", status=JobStatus.SUCCESS, reason=None)
    statuses = [u.status for u in updates if u.kind == "status"]
    assert statuses[0] == JobStatus.QUEUED and set(statuses) <= {JobStatus.QUEUED, JobStatus.RUNNING}
    assert output_of(updates) == "starting job\nhéllo ünïcode\nafter go\nto stderr\ndone\n"
    assert runner.get_status(job_info) == JobStatus.SUCCESS
    assert runner.get_results_info(job_info)["model"]["type"] == "pickle"
    assert runner.get_console_output(job_info) == output_of(updates)
    assert not uploaded.exists()  # scratch folder cleaned
    polls = [r for r in sciserver.requests() if r["path"].startswith("/racm/jobm/rest/")]
    assert not any(r["path"].endswith("/dockerjobs") or r["path"].endswith("/jobs") for r in polls)
    assert any(r["path"] == f"/racm/jobm/rest/jobs/{job_info['id']}" for r in polls)


def test_output_streams_while_running_and_survives_token_expiry(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path, "wait"), name="stream"))
    seen = ""
    updates = []
    released = False
    for update in runner.watch(job_info):
        updates.append(update)
        seen += update.output
        if "héllo" in seen and not released:
            assert update.kind == "output"  # streamed while the job is still blocked, not at the end
            assert "after go" not in seen
            sciserver.expire_tokens()
            (scratch_dir(sciserver, job_info) / "go").write_text("")
            released = True
    assert updates[-1].status == JobStatus.SUCCESS
    assert seen.endswith("after go\nto stderr\ndone\n")


def test_zip_bundle(sciserver: SciServerHandle, tmp_path: Path) -> None:
    folder = executor_bundle(tmp_path)
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in folder.rglob("*"):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=archive, hash="zipped"))
    assert list(runner.watch(job_info))[-1].status == JobStatus.SUCCESS


def test_failed_job_reports_server_message_and_last_line(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path, "fail")))
    end = list(runner.watch(job_info))[-1]
    assert end.status == JobStatus.FAILED
    assert end.reason is not None
    assert "non-zero status 2" in end.reason and "Error: the operation failed on purpose" in end.reason
    assert runner.get_status(job_info) == JobStatus.FAILED


def test_success_without_results_json_is_a_failure(sciserver: SciServerHandle, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "executor_config.json").write_text(json.dumps({"cmd": "echo", "args": ["no results here"]}))
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=bundle))
    end = list(runner.watch(job_info))[-1]
    assert end.status == JobStatus.FAILED and "no results.json" in (end.reason or "")
    with pytest.raises(ComputeError, match=r"no results\.json"):
        runner.get_results_info(job_info)


def test_cancel_running_job(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path, "sleep")))
    updates = []
    for update in runner.watch(job_info):
        updates.append(update)
        if "done" not in output_of(updates) and "after go" in output_of(updates):
            runner.cancel_job(job_info)
            runner.cancel_job(job_info)  # idempotent
    assert updates[-1] == JobUpdate("end", status=JobStatus.CANCELED, reason="the job was canceled")
    assert not scratch_dir(sciserver, job_info).exists()
    runner.cancel_job(job_info)  # finished: a 200 no-op


def test_cancel_pending_job_is_immediate(sciserver: SciServerHandle, tmp_path: Path) -> None:
    sciserver.settings(pending_seconds=30)
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path)))
    assert runner.get_status(job_info) == JobStatus.QUEUED
    runner.cancel_job(job_info)
    assert runner.get_status(job_info) == JobStatus.CANCELED


def test_unknown_domain_and_image_errors(sciserver: SciServerHandle, tmp_path: Path) -> None:
    bundle = executor_bundle(tmp_path)
    with pytest.raises(ComputeError, match=r"unknown compute domain 'Nowhere'.*'Small Jobs Domain'"):
        client(sciserver, computeDomain="Nowhere").start_job(ComputeJob(bundle=bundle))
    with pytest.raises(ComputeError, match="offers you no images"):
        client(sciserver, computeDomain="Large Jobs Domain").start_job(ComputeJob(bundle=bundle))
    with pytest.raises(ComputeError, match=r"image 'Nope' is not available.*DeepForge"):
        client(sciserver, image="Nope").start_job(ComputeJob(bundle=bundle))
    assert not any(r["method"] == "PUT" for r in sciserver.requests())  # nothing uploaded


def test_unknown_job_reports_server_message(sciserver: SciServerHandle) -> None:
    with pytest.raises(ComputeError, match=r"get job 999999999 failed: HTTP 500: Unknown error"):
        client(sciserver).get_status({"id": 999999999, "hash": "x"})
    with pytest.raises(ComputeError, match="Error canceling job"):
        client(sciserver).cancel_job({"id": 999999999, "hash": "x"})


def test_bad_bundles(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver)
    with pytest.raises(ComputeError, match="does not exist"):
        runner.start_job(ComputeJob(bundle=tmp_path / "missing"))
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ComputeError, match=r"'\.\./escape\.txt' contains '\.\.'"):
        runner.start_job(ComputeJob(bundle=evil))
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "main.py").write_text("print(1)")
    with pytest.raises(ComputeError, match=r"executor_config\.json: missing"):
        runner.start_job(ComputeJob(bundle=no_config))
    with pytest.raises(ComputeError, match="has no bundle path"):
        runner.start_job(ComputeJob(hash="only-a-hash"))
    assert not any(r["method"] in ("PUT", "POST") for r in sciserver.requests() if "keystone" not in r["path"])


def test_token_only_config(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver, password=None, username=None, token=sciserver.login())
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path)))
    assert "username" not in job_info  # an auth field: job_info is stored in the model while the job runs
    assert list(runner.watch(job_info))[-1].status == JobStatus.SUCCESS


def test_secrets_stay_out_of_job_info_command_and_errors(sciserver: SciServerHandle, tmp_path: Path) -> None:
    runner = client(sciserver)
    job_info = runner.start_job(ComputeJob(bundle=executor_bundle(tmp_path)))
    list(runner.watch(job_info))
    job = runner.get_job(job_info)
    text = json.dumps(job_info) + json.dumps(job) + repr(runner)
    with pytest.raises(ComputeError) as exc:
        client(sciserver, password="definitely-wrong-pw").get_status(job_info)
    text += str(exc.value)
    assert sciserver.password not in text and "definitely-wrong-pw" not in text
    assert runner.session.token() not in text
