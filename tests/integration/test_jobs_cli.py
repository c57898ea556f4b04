"""``deepforge run``: a bundle end to end through local compute, exit codes, Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.jobs.archive import zip_bundle
from deepforge_adapters.jobs.layout import JOB_FILE
from deepforge_adapters.storage import get_client
from deepforge_adapters.storage.base import StorageClient

from tests.fixtures.jobs import last_line, pid_gone, put_pickle, read_pickle
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

DEEPFORGE = [sys.executable, "-m", "deepforge_adapters.cli"]

DOUBLE = """
import os, pickle
value = pickle.load(open("artifacts/value", "rb"))
print("doubling", value)
os.makedirs("outputs/doubled")
pickle.dump(value * 2, open("outputs/doubled/data", "wb"))
open("outputs/doubled/metadata.json", "w").write('{"type": "int"}')
"""


@pytest.fixture
def compute_config(tmp_path: Path) -> str:
    return json.dumps({"workDir": str(tmp_path / "compute")})


def deepforge_run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEEPFORGE, "run", *args], env=env, capture_output=True, text=True, timeout=120)


def results_of(stdout: str) -> Any:
    return json.loads(stdout[stdout.rindex("\n{\n") + 1 :])


@pytest.mark.parametrize("zipped", [False, True])
def test_run_prints_output_then_results(
    job_env: dict[str, str],
    local_storage: StorageClient,
    make_bundle: Callable[..., Path],
    compute_config: str,
    zipped: bool,
) -> None:
    value = put_pickle(local_storage, "data/value", 21)
    bundle = make_bundle(DOUBLE, inputs={"value": value}, outputs=["doubled"])
    target = zip_bundle(bundle) if zipped else bundle

    result = deepforge_run(str(target), "--compute", "local", "--config", compute_config, env=job_env)

    assert result.returncode == 0, result.stderr
    assert "doubling 21" in result.stdout
    results = results_of(result.stdout)
    assert results["doubled"]["type"] == "int"
    assert read_pickle(local_storage, results["doubled"]["dataInfo"]) == 42
    assert "started on local compute" in result.stderr


def test_run_with_another_storage(
    job_env: dict[str, str],
    local_storage: StorageClient,
    make_bundle: Callable[..., Path],
    compute_config: str,
    tmp_path: Path,
) -> None:
    value = put_pickle(local_storage, "data/value", 5)
    bundle = make_bundle(DOUBLE, inputs={"value": value}, outputs=["doubled"])
    # the input keeps its own config (the job's original storage): give it explicitly
    job = json.loads((bundle / JOB_FILE).read_text())
    job["inputs"][0]["config"] = {"root": str(local_storage.config["root"])}
    (bundle / JOB_FILE).write_text(json.dumps(job))
    other = tmp_path / "other-store"
    config_file = tmp_path / "storage.json"
    config_file.write_text(json.dumps({"root": str(other)}))

    result = deepforge_run(
        str(bundle),
        "--storage",
        "local",
        "--storage-config",
        f"@{config_file}",
        "--config",
        compute_config,
        env=job_env,
    )

    assert result.returncode == 0, result.stderr
    info = results_of(result.stdout)["doubled"]["dataInfo"]
    assert read_pickle(get_client("local", {"root": str(other)}), info) == 10
    assert [p.is_file() for p in (other / "proj/executions/op").glob("*/doubled")] == [True]


def test_failed_job_exits_1_with_the_reason(
    job_env: dict[str, str], make_bundle: Callable[..., Path], compute_config: str
) -> None:
    bundle = make_bundle("raise SystemExit('no data today')")
    result = deepforge_run(str(bundle), "--config", compute_config, env=job_env)
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("deepforge: error: job ")
    assert last_line(result.stderr).endswith("failed: operation (python main.py) exited with code 1: no data today")
    assert last_line(result.stderr).count("deepforge:") == 1  # the runner's own prefix is not repeated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "{not json"], "not valid JSON"),
        (["--config", "[1]"], "expected a JSON object"),
        (["--config", '{"processes": 0}'], "'processes': must be >= 1"),
        (["--compute", "nope"], "unknown compute backend 'nope'"),
        (["--storage", "nope"], "unknown storage backend 'nope'"),
        (["--storage-config", '{"bogus": 1}'], "'bogus': unknown field"),
    ],
)
def test_usage_errors_exit_2(
    job_env: dict[str, str], make_bundle: Callable[..., Path], args: list[str], message: str
) -> None:
    result = deepforge_run(str(make_bundle("print(1)")), *args, env=job_env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_malformed_bundle_exits_2_naming_the_field(
    job_env: dict[str, str], make_bundle: Callable[..., Path], compute_config: str
) -> None:
    bundle = make_bundle("print(1)")
    job = json.loads((bundle / JOB_FILE).read_text())
    del job["outputs"]
    (bundle / JOB_FILE).write_text(json.dumps(job))
    result = deepforge_run(str(bundle), "--config", compute_config, env=job_env)
    assert result.returncode == 2
    assert "field 'outputs': is missing" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sigint_at_start", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_ctrl_c_cancels_the_job(
    job_env: dict[str, str],
    make_bundle: Callable[..., Path],
    compute_config: str,
    kill_leftovers: list[int],
    sigint_at_start: signal.Handlers,
) -> None:
    """SIGINT cancels the job, also when the CLI starts with SIGINT ignored (``cmd &`` in a script); the
    child's SIGINT is set here, not inherited from whatever started pytest (``setsid make test &``)."""
    bundle = make_bundle(
        "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nprint('working', flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [*DEEPFORGE, "run", str(bundle), "--config", compute_config],
        env=job_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint_at_start),
    )
    try:
        assert proc.stdout is not None
        while "working" not in proc.stdout.readline():
            pass
        pid_files = list(Path(json.loads(compute_config)["workDir"]).glob("jobs/*/work/pid"))
        operation_pid = int(pid_files[0].read_text())
        kill_leftovers.append(operation_pid)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert "canceling job" in err
    assert last_line(err).endswith("canceled")
    wait_for(lambda: pid_gone(operation_pid), timeout=10, what="the operation to be gone")


def test_run_on_gme_compute_uploads_the_bundle(
    job_env: dict[str, str],
    local_storage: StorageClient,
    make_bundle: Callable[..., Path],
    webgme_stack_factory: Any,
    worker_factory: Any,
) -> None:
    """``--compute gme`` without a hash: the CLI's bundle is uploaded as the blob artifact the job runs from."""
    stack = webgme_stack_factory(worker_refresh_ms=250)
    worker_factory(stack)
    value = put_pickle(local_storage, "data/value", 21)
    bundle = zip_bundle(make_bundle(DOUBLE, inputs={"value": value}, outputs=["doubled"]))
    config = json.dumps({"host": stack.url})

    result = deepforge_run(str(bundle), "--compute", "gme", "--config", config, env=job_env)

    assert result.returncode == 0, result.stderr
    assert "doubling 21" in result.stdout
    assert "started on gme compute" in result.stderr
    assert read_pickle(local_storage, results_of(result.stdout)["doubled"]["dataInfo"]) == 42
