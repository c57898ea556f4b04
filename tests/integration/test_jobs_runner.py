"""The in-job runner end to end: real subprocesses, real local storage, real signals."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.config import ConfigSchema
from deepforge_adapters.jobs.layout import JOB_FILE
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage.base import StorageClient
from deepforge_adapters.storage.registry import registry as storage_registry

from tests.fixtures.jobs import RUNNER, STUBBORN, last_line, pid_gone, put_pickle, read_pickle, run_runner
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

SQUARE = """
import os, pickle
with open("artifacts/numbers", "rb") as f:
    numbers = pickle.load(f)
print("squaring", numbers)
os.makedirs("outputs/squares")
with open("outputs/squares/data", "wb") as f:
    pickle.dump([n * n for n in numbers], f)
with open("outputs/squares/metadata.json", "w") as f:
    f.write('{"type": "list"}')
"""


def test_inputs_fetched_outputs_uploaded_results_written(
    job_env: dict[str, str], local_storage: StorageClient, make_bundle: Callable[..., Path], tmp_path: Path
) -> None:
    numbers = put_pickle(local_storage, "data/numbers", [1, 2, 3])
    bundle = make_bundle(SQUARE, inputs={"numbers": numbers}, outputs=["squares"])

    result = run_runner(bundle, job_env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "squaring [1, 2, 3]" in result.stdout
    link = bundle / "artifacts" / "numbers"
    assert link.is_symlink()
    assert Path(os.readlink(link)).is_relative_to(tmp_path / "cache")  # served from the worker cache
    results = json.loads((bundle / "results.json").read_text())
    assert list(results) == ["squares"]
    assert results["squares"]["type"] == "list"
    info = DataInfo.from_json(results["squares"]["dataInfo"])
    assert info.backend == "local"
    # under a fresh segment of the storage dir: a re-run never overwrites it (docs/jobs.md)
    assert re.fullmatch(r"proj/executions/op/\d{8}T\d{6}Z-[0-9a-f]{8}/squares", info.data["filename"])
    assert read_pickle(local_storage, info) == [1, 4, 9]


def test_long_transfers_report_progress(
    job_env: dict[str, str], local_storage: StorageClient, make_bundle: Callable[..., Path]
) -> None:
    big = local_storage.put_file_stream("data/big", io.BytesIO(b"x" * (3 * 1024 * 1024)))
    bundle = make_bundle(
        "import os, shutil\nos.makedirs('outputs/copy')\nshutil.copy('artifacts/big', 'outputs/copy/data')\n",
        inputs={"big": big},
        outputs=["copy"],
    )
    result = run_runner(bundle, {**job_env, "DEEPFORGE_PROGRESS_INTERVAL": "0"})
    assert result.returncode == 0, result.stdout
    assert "deepforge: input 'big': 3.0 of 3.0 MiB" in result.stdout
    assert "deepforge: output 'copy': 3.0 of 3.0 MiB" in result.stdout


def test_stdout_and_stderr_are_merged_in_order(job_env: dict[str, str], make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle(
        """
        import sys
        for i in range(50):
            (sys.stdout if i % 2 == 0 else sys.stderr).write(f"line {i}\\n")
            (sys.stdout if i % 2 == 0 else sys.stderr).flush()
        """
    )
    result = run_runner(bundle, job_env)
    assert result.returncode == 0, result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(50)]
    assert result.stderr == ""


def test_missing_input_names_input_and_backend(
    job_env: dict[str, str], storage_root: Path, make_bundle: Callable[..., Path]
) -> None:
    ghost = DataInfo("local", {"filename": "data/ghost", "size": 3, "sha256": "a" * 64, "mtime": 1.0})
    bundle = make_bundle("print('never runs')", inputs={"numbers": ghost}, outputs=["x"])
    result = run_runner(bundle, job_env)
    assert result.returncode == 1
    line = last_line(result.stdout)
    assert line.startswith("deepforge: input 'numbers' from local storage"), line
    assert "data/ghost" in line
    assert "never runs" not in result.stdout
    assert not (bundle / "results.json").exists()


def test_operation_failure_reason_is_the_last_line(job_env: dict[str, str], make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("raise ValueError('bad hyperparameter')", outputs=["x"])
    result = run_runner(bundle, job_env)
    assert result.returncode == 1
    assert "Traceback" in result.stdout  # the operation's stderr reached our stdout
    assert last_line(result.stdout) == (
        "deepforge: operation (python main.py) exited with code 1: ValueError: bad hyperparameter"
    )
    assert not (bundle / "results.json").exists()


def test_declared_output_missing_after_success_is_a_failure(
    job_env: dict[str, str], make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle("print('forgot to write outputs')", outputs=["model", "metrics"])
    result = run_runner(bundle, job_env)
    assert result.returncode == 1
    assert last_line(result.stdout) == (
        "deepforge: declared output 'model' was not written (outputs/model/data is missing); also missing: metrics"
    )
    assert not (bundle / "results.json").exists()


def seal_storage_root(bundle: Path, key: str) -> str:
    """Seal the storage ``root`` in job.json as if it were a secret field; returns its plain value."""
    job = json.loads((bundle / JOB_FILE).read_text())
    root = job["storage"]["config"]["root"]
    local = storage_registry.get_class("local").schema
    root_secret = ConfigSchema("local", tuple(replace(f, is_auth=f.name == "root") for f in local.fields))
    job["storage"]["config"] = secrets.seal(job["storage"]["config"], root_secret, key, project=job.get("project", ""))
    for entry in job["inputs"]:
        entry["config"] = job["storage"]["config"]
    (bundle / JOB_FILE).write_text(json.dumps(job))
    return str(root)


def test_sealed_config_needs_the_key(
    job_env: dict[str, str], local_storage: StorageClient, make_bundle: Callable[..., Path]
) -> None:
    numbers = put_pickle(local_storage, "data/numbers", [2])
    bundle = make_bundle(SQUARE, inputs={"numbers": numbers}, outputs=["squares"])
    secret = seal_storage_root(bundle, job_env[secrets.KEY_ENV])
    assert secret.encode() not in (bundle / JOB_FILE).read_bytes()

    no_key = {k: v for k, v in job_env.items() if k != secrets.KEY_ENV}
    result = run_runner(bundle, no_key)
    assert result.returncode == 1
    assert last_line(result.stdout) == (
        "deepforge: input 'numbers': cannot open the sealed config of local storage: no secret key: set "
        "DEEPFORGE_SECRET_KEY or DEEPFORGE_SECRET_KEY_FILE (create one with `deepforge secrets keygen`)"
    )

    wrong_key = {**job_env, secrets.KEY_ENV: secrets.generate_key()}
    result = run_runner(bundle, wrong_key)
    assert result.returncode == 1
    assert "cannot unseal config field 'root' of local: it was sealed under key" in last_line(result.stdout)
    assert "not in the keyring" in last_line(result.stdout)

    key_file = bundle.parent / "key"
    key_file.write_text(job_env[secrets.KEY_ENV])
    with_file = {**no_key, secrets.KEY_FILE_ENV: str(key_file)}
    result = run_runner(bundle, with_file)
    assert result.returncode == 0, result.stdout
    assert read_pickle(local_storage, json.loads((bundle / "results.json").read_text())["squares"]["dataInfo"]) == [4]


def test_unsealed_secret_never_reaches_the_output(
    job_env: dict[str, str], make_bundle: Callable[..., Path], storage_root: Path
) -> None:
    ghost = DataInfo("local", {"filename": "data/ghost", "size": 3, "sha256": "a" * 64, "mtime": 1.0})
    bundle = make_bundle("print('x')", inputs={"numbers": ghost})
    secret = seal_storage_root(bundle, job_env[secrets.KEY_ENV])
    result = run_runner(bundle, job_env)
    assert result.returncode == 1
    # the local backend's not-found message names the root, which is "secret" here: it must be redacted
    assert secret not in result.stdout + result.stderr
    assert "[REDACTED]" in last_line(result.stdout)


def test_the_operation_does_not_see_the_secret_key(job_env: dict[str, str], make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("import os; print('key visible:', 'DEEPFORGE_SECRET_KEY' in os.environ)")
    result = run_runner(bundle, job_env)
    assert "key visible: False" in result.stdout


def start_runner(bundle: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(RUNNER, cwd=bundle, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cancel_kills_the_whole_group_even_if_it_ignores_sigint(
    job_env: dict[str, str], make_bundle: Callable[..., Path], kill_leftovers: list[int], sig: int
) -> None:
    bundle = make_bundle(STUBBORN, outputs=["x"])
    proc = start_runner(bundle, job_env)
    try:
        wait_for(lambda: (bundle / "pids.json").exists(), what="the operation to start")
        pids: list[Any] = json.loads((bundle / "pids.json").read_text())
        kill_leftovers.extend(pids)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert last_line(out) == "deepforge: job canceled"
    wait_for(lambda: all(pid_gone(p) for p in pids), timeout=10, what="the operation's processes to be gone")
    assert not (bundle / "results.json").exists()
