"""Local compute without running jobs: config, status table, job_info validation, results errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, backends, get_client
from deepforge_adapters.compute.local import STATUS_TABLE, LocalCompute, default_work_dir
from deepforge_adapters.errors import ComputeError, ConfigError


def client(tmp_path: Path, **config: object) -> LocalCompute:
    c = get_client("local", {"workDir": str(tmp_path), **config})
    assert isinstance(c, LocalCompute)
    return c


def test_config_defaults_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPFORGE_LOCAL_COMPUTE_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    c = get_client("local")
    assert isinstance(c, LocalCompute)
    assert c.processes == 1
    assert c.work_dir == tmp_path / "xdg" / "deepforge" / "compute" == default_work_dir()
    monkeypatch.setenv("DEEPFORGE_LOCAL_COMPUTE_DIR", str(tmp_path / "env"))
    assert get_client("local").work_dir == tmp_path / "env"  # type: ignore[attr-defined]
    assert client(tmp_path, processes=3).processes == 3


def test_processes_must_be_at_least_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'processes': must be >= 1"):
        client(tmp_path, processes=0)


def test_listed_with_its_config_structure() -> None:
    listing = backends()["local"]
    assert listing["name"] == "Local Compute"
    assert [f["name"] for f in listing["configStructure"]] == ["processes", "workDir"]


def test_status_table_maps_every_local_state() -> None:
    assert {code: STATUS_TABLE[code].status for code in STATUS_TABLE.codes()} == {
        "queued": JobStatus.QUEUED,
        "running": JobStatus.RUNNING,
        "success": JobStatus.SUCCESS,
        "failed": JobStatus.FAILED,
        "canceled": JobStatus.CANCELED,
        "lost": JobStatus.FAILED,
    }
    assert STATUS_TABLE["lost"].reason and "supervisor" in STATUS_TABLE["lost"].reason
    assert STATUS_TABLE["weird"].status == JobStatus.FAILED


def test_a_job_known_only_by_hash_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(ComputeError, match=r"no bundle path.*gme compute backend"):
        client(tmp_path).start_job(ComputeJob(hash="abc123"))


def test_missing_bundle_and_bad_hash(tmp_path: Path) -> None:
    with pytest.raises(ComputeError, match="does not exist"):
        client(tmp_path).start_job(ComputeJob(bundle=tmp_path / "nope"))
    with pytest.raises(ComputeError, match="not a valid job id"):
        client(tmp_path).get_status({"hash": "../../etc"})
    with pytest.raises(ComputeError, match="lacks hash"):
        client(tmp_path).get_status({})


def test_a_bundle_without_executor_config_is_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "main.py").write_text("print(1)")
    with pytest.raises(ComputeError, match=r"executor_config\.json: missing"):
        client(tmp_path / "work").start_job(ComputeJob(bundle=bundle))
    assert not list((tmp_path / "work" / "jobs").iterdir())  # nothing half-started


#: Job ids are 40 lowercase hex (a bundle's sha1); anything else is refused before it becomes a path.
FEEDBEEF = "feedbeef" * 5
ABC = "abc" + "0" * 37


def test_unknown_job(tmp_path: Path) -> None:
    c = client(tmp_path)
    info = {"hash": FEEDBEEF}
    assert c.get_status(info) == JobStatus.NOT_FOUND
    assert c.get_console_output(info) == ""
    with pytest.raises(ComputeError, match=f"cannot cancel: no job '{FEEDBEEF}'"):
        c.cancel_job(info)
    updates = list(c.watch(info))
    assert [u.kind for u in updates] == ["end"]
    assert updates[0].status == JobStatus.NOT_FOUND


def test_results_errors_name_the_job_and_file(tmp_path: Path) -> None:
    c = client(tmp_path)
    job = tmp_path / "jobs" / ABC
    (job / "work").mkdir(parents=True)
    (job / "state.json").write_text(json.dumps({"status": "success"}))
    info = {"hash": ABC}
    with pytest.raises(ComputeError, match=rf"job {ABC}: no results\.json \(status: success\)"):
        c.get_results_info(info)
    (job / "work" / "results.json").write_text("{oops")
    with pytest.raises(ComputeError, match="is not valid JSON"):
        c.get_results_info(info)
    (job / "work" / "results.json").write_text("[]")
    with pytest.raises(ComputeError, match="is not a JSON object"):
        c.get_results_info(info)
    (job / "work" / "results.json").write_text('{"x": {"type": "int", "dataInfo": {}}}')
    assert c.get_results_info(info) == {"x": {"type": "int", "dataInfo": {}}}


def test_purge_refuses_an_unfinished_job(tmp_path: Path) -> None:
    job = tmp_path / "jobs" / ABC
    job.mkdir(parents=True)
    (job / "state.json").write_text(json.dumps({"status": "queued"}))
    with pytest.raises(ComputeError, match="cancel it before purging"):
        client(tmp_path).purge_job({"hash": ABC})
