"""Worker settings precedence (CLI > env > file > default), slots and GPU pinning, supervisor section."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from deepforge_adapters.errors import ConfigError
from deepforge_worker.cli import main, render_supervisor_conf, render_systemd_unit
from deepforge_worker.settings import load_settings
from deepforge_worker.slots import SlotPool, gpu_groups

SAMPLE = Path(__file__).resolve().parents[2] / "worker" / "deepforge_worker" / "worker.sample.toml"


def test_defaults() -> None:
    s = load_settings({}, environ={})
    assert s.host == "http://127.0.0.1:8888"
    assert s.processes == 1 and s.gpus == [] and s.labels == [] and s.token is None


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "w.toml"
    cfg.write_text('[worker]\nhost = "http://file:1"\nlabels = ["a", "b"]\nprocesses = 3\nwork_dir = "/f"\n')
    env = {"DEEPFORGE_WORKER_HOST": "http://env:2", "DEEPFORGE_WORKER_PROCESSES": "4"}
    s = load_settings({"config": str(cfg), "processes": 5}, environ=env)
    assert s.host == "http://env:2"  # env beats file
    assert s.processes == 5  # cli beats env
    assert s.labels == ["a", "b"]  # file beats default
    assert s.work_dir == Path("/f")
    s2 = load_settings({}, environ={**env, "DEEPFORGE_WORKER_CONFIG": str(cfg)})
    assert s2.processes == 4 and s2.labels == ["a", "b"]


def test_deepforge_host_is_a_fallback() -> None:
    assert load_settings({}, environ={"DEEPFORGE_HOST": "http://h:9"}).host == "http://h:9"
    env = {"DEEPFORGE_HOST": "http://h:9", "DEEPFORGE_WORKER_HOST": "http://w:1"}
    assert load_settings({}, environ=env).host == "http://w:1"


def test_sample_config_is_valid() -> None:
    s = load_settings({"config": str(SAMPLE)}, environ={})
    assert s.processes == 2 and s.gpus == ["0", "1", "2", "3"] and s.labels == ["gpu", "cuda12"]


def test_bad_values_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="processes"):
        load_settings({}, environ={"DEEPFORGE_WORKER_PROCESSES": "many"})
    with pytest.raises(ConfigError, match="processes"):
        load_settings({"processes": 3, "gpus": "0,1"}, environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("host = ")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings({"config": str(bad)}, environ={})
    with pytest.raises(ConfigError, match="colour"):
        load_settings({"colour": "red"}, environ={})


def test_secrets_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings({"token": "tok-SECRET-1", "nonce": "nonce-SECRET-2"}, environ={})
    assert s.token == "tok-SECRET-1"
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s", s.config)
    text = repr(s.config) + caplog.text
    assert "SECRET" not in text
    conf = render_supervisor_conf(s, "/usr/bin/deepforge-worker", {"token": "tok-SECRET-1"})
    assert "SECRET" not in conf


def test_gpu_groups_never_share() -> None:
    assert gpu_groups(["0", "1", "2", "3"], 2) == [("0", "1"), ("2", "3")]
    assert gpu_groups(["0", "1", "2"], 2) == [("0", "1"), ("2",)]
    assert gpu_groups([], 3) == [(), (), ()]
    with pytest.raises(ValueError):
        gpu_groups(["0"], 2)


def test_slot_pool_pins_each_job_to_its_gpus() -> None:
    s = load_settings({"gpus": "0,1"}, environ={})
    pool = SlotPool(s.processes, s.gpus)
    a, b = pool.acquire("job-a"), pool.acquire("job-b")
    assert a is not None and b is not None
    assert pool.acquire("job-c") is None and pool.available == 0
    assert {a.env()["CUDA_VISIBLE_DEVICES"], b.env()["CUDA_VISIBLE_DEVICES"]} == {"0", "1"}
    pool.release(a)
    assert pool.available == 1
    c = pool.acquire("job-c")
    assert c is not None and c.env() == {"CUDA_VISIBLE_DEVICES": "0"}
    pool.close()
    assert pool.available == 0 and pool.acquire("job-d") is None


def test_no_gpus_leaves_cuda_visible_devices_alone() -> None:
    slot = SlotPool(2).acquire("x")
    assert slot is not None and slot.env() == {}


def test_supervisor_conf() -> None:
    s = load_settings({"gpus": "0,1", "labels": "gpu", "drainTimeout": 100}, environ={})
    conf = render_supervisor_conf(s, "/opt/bin/deepforge-worker", {}, name="dfw")
    assert "[program:dfw]" in conf
    assert "stopsignal=TERM" in conf and "stopasgroup=false" in conf and "autorestart=true" in conf
    assert "stopwaitsecs=170" in conf
    assert "--gpus 0,1" in conf and "--processes 2" in conf and "--labels gpu" in conf


def test_cli_supervisor_conf_and_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"DEEPFORGE_WORKER_TOKEN": "tok-SECRET-9"}
    result = runner.invoke(
        main,
        ["supervisor-conf", "--gpus", "0,1", "--work-dir", str(tmp_path / "jobs"), "--name", "gpu-worker"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert "[program:gpu-worker]" in result.output and "--processes 2" in result.output
    assert f"--work-dir {tmp_path / 'jobs'}" in result.output
    assert "SECRET" not in result.output
    bad = runner.invoke(main, ["supervisor-conf", "--processes", "3", "--gpus", "0"], env=env)
    assert bad.exit_code == 2 and "never shares a GPU" in bad.output and "SECRET" not in bad.output


def test_service_files_give_each_argv_token_on_its_own() -> None:
    """A worker run as ``python -m deepforge_worker.cli`` (no script on PATH): three tokens, not one."""
    s = load_settings({"workDir": "/srv/dfw/jobs", "drainTimeout": 100, "cancelGrace": 5}, environ={})
    exe = ["/opt/my venv/bin/python", "-m", "deepforge_worker.cli"]
    conf = render_supervisor_conf(s, exe, {}, key_file="/etc/deepforge/secret.key")
    assert "command='/opt/my venv/bin/python' -m deepforge_worker.cli start " in conf
    assert 'environment=DEEPFORGE_SECRET_KEY_FILE="/etc/deepforge/secret.key"' in conf
    unit = render_systemd_unit(s, exe, {}, user="dfw", key_file="/etc/deepforge/secret.key", metrics_port=9400)
    assert 'ExecStart="/opt/my venv/bin/python" -m deepforge_worker.cli start ' in unit
    assert "--work-dir /srv/dfw/jobs" in unit and "--metrics-port 9400" in unit
    assert "User=dfw" in unit and "WorkingDirectory=/srv/dfw" in unit
    assert "KillSignal=SIGTERM" in unit and "KillMode=mixed" in unit and "Restart=on-failure" in unit
    assert "TimeoutStopSec=165" in unit  # the drain + the cancel grace + 60 s, as supervisord's stopwaitsecs
    assert "Environment=DEEPFORGE_SECRET_KEY_FILE=/etc/deepforge/secret.key" in unit
