"""Issue 16, "Also": outputs that are not files, non-finite grace periods, unverified bytes on stdout.

* A FIFO or a directory declared as an output is named for what it is (and the FIFO is never opened: the
  runner would block on it forever), instead of "was not written".
* ``cancelGrace = nan`` (or ``inf``, or a negative number) is refused with an error naming the field: in the
  worker's settings (command line and config file), in the runner's ``DEEPFORGE_CANCEL_GRACE`` and in
  ``local`` compute, which hands that variable to its supervisor.
* ``deepforge storage get DATAINFO -`` of a blob that was changed on the server writes the bytes as they come
  and then fails: exit 1 and a last line that says how many unverified bytes were written.  To a file,
  nothing (not even a temporary file) is left behind.

Real processes throughout: the runner, ``deepforge-worker``, ``deepforge`` and a WebGME server.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.compute import get_client as get_compute
from deepforge_adapters.errors import ComputeError

from tests.fixtures.jobs import last_line, run_runner

pytestmark = pytest.mark.integration

WORKER = [sys.executable, "-m", "deepforge_worker.cli"]
DEEPFORGE = [sys.executable, "-m", "deepforge_adapters.cli"]

NOT_FILES = """
import os
os.makedirs("outputs/pipe")
os.mkfifo("outputs/pipe/data")
os.makedirs("outputs/tree/data")
open("outputs/tree/data/inside.txt", "w").write("x")
"""


def test_fifo_and_directory_outputs_say_what_they_are(
    job_env: dict[str, str], make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle(NOT_FILES, outputs=["pipe", "tree"])
    result = run_runner(bundle, job_env, timeout=60)  # a FIFO opened for reading would block until the timeout
    assert result.returncode == 1, result.stdout + result.stderr
    message = last_line(result.stdout)
    assert "declared output 'pipe' is not a regular file (outputs/pipe/data is a FIFO, not a regular file)" in message
    assert "also: outputs/tree/data is a directory, not a regular file" in message, message
    assert "was not written" not in message


def test_directory_output_alone(job_env: dict[str, str], make_bundle: Callable[..., Path]) -> None:
    bundle = make_bundle("import os\nos.makedirs('outputs/tree/data')\n", outputs=["tree"])
    result = run_runner(bundle, job_env, timeout=60)
    assert result.returncode == 1
    assert "outputs/tree/data is a directory, not a regular file" in last_line(result.stdout)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_worker_refuses_a_grace_that_is_not_a_finite_duration(value: str, tmp_path: Path) -> None:
    argv = [*WORKER, "check", "--host", "http://127.0.0.1:9", "--work-dir", str(tmp_path / "jobs"),
            f"--cancel-grace={value}"]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'cancelGrace'" in result.stderr, result.stderr

    config = tmp_path / "worker.toml"
    config.write_text(f"cancelGrace = {value.replace('-1', '-1.0')}\ndrainTimeout = 5\n")
    argv = [*WORKER, "check", "--config", str(config), "--host", "http://127.0.0.1:9"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'cancelGrace'" in result.stderr, result.stderr


def test_worker_refuses_a_nan_drain_timeout_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "DEEPFORGE_WORKER_DRAIN_TIMEOUT": "nan"}
    argv = [*WORKER, "check", "--host", "http://127.0.0.1:9", "--work-dir", str(tmp_path / "jobs")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and "'drainTimeout'" in result.stderr, result.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-3"])
def test_runner_refuses_a_non_finite_cancel_grace(
    value: str, job_env: dict[str, str], make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle("print('never runs')")
    result = run_runner(bundle, {**job_env, "DEEPFORGE_CANCEL_GRACE": value}, timeout=60)
    assert result.returncode == 1
    assert "never runs" not in result.stdout
    assert "DEEPFORGE_CANCEL_GRACE" in last_line(result.stdout), result.stdout


def test_local_compute_refuses_a_nan_grace_before_starting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEEPFORGE_CANCEL_GRACE", "nan")
    with pytest.raises(ComputeError, match="DEEPFORGE_CANCEL_GRACE"):
        get_compute("local", {"workDir": str(tmp_path / "compute")})
    assert not (tmp_path / "compute").exists()


def _gme_put(url: str, path: Path) -> dict[str, Any]:
    put = subprocess.run(
        [*DEEPFORGE, "storage", "put", "-q", "-b", "gme", "--config", json.dumps({"host": url}), str(path), "x.bin"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(json.loads(put.stdout))


def test_storage_get_of_a_changed_blob(webgme_server: Any, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    info = _gme_put(webgme_server.url, src)
    # Change the stored content in place (same size), as a compromised or broken blob store would.
    sha1 = hashlib.sha1(data).hexdigest()
    stored = webgme_server.blob_dir / "wg-content" / sha1[:2] / sha1[2:]
    changed = bytearray(data)
    changed[-1] ^= 0xFF
    stored.write_bytes(bytes(changed))

    get = [*DEEPFORGE, "storage", "get", "-q", "--config", json.dumps({"host": webgme_server.url}), json.dumps(info)]
    to_stdout = subprocess.run([*get, "-"], capture_output=True, timeout=120)
    assert to_stdout.returncode == 1
    assert len(to_stdout.stdout) > 0  # streamed before the hash could be checked: that is why it must say so
    stderr_last = last_line(to_stdout.stderr.decode())
    assert "NOT verified" in stderr_last and f"{len(to_stdout.stdout)} byte(s)" in stderr_last, stderr_last

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    to_file = subprocess.run([*get, str(out_dir / "copy.bin")], capture_output=True, text=True, timeout=120)
    assert to_file.returncode == 1
    assert "sha1" in last_line(to_file.stderr).lower() or "hash" in last_line(to_file.stderr).lower(), to_file.stderr
    assert list(out_dir.iterdir()) == []  # no file, no temporary file

    stored.write_bytes(data)  # the unchanged blob still reads back whole, to both destinations
    ok = subprocess.run([*get, "-"], capture_output=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout == data
