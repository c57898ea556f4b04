"""The worker as an operator runs it: under a real supervisord, as a systemd unit, scraped by Prometheus.

* ``supervisor-conf`` run as ``.venv/bin/deepforge-worker`` (not on PATH) gives a section a real
  ``supervisord`` starts (RUNNING), whose ``supervisorctl stop`` drains a running job to SUCCESS, and
  supervisord then shuts down;
* ``systemd-unit`` gives a unit ``systemd-analyze verify`` accepts;
* ``start --metrics-port`` serves Prometheus text that counts the real jobs it ran, and ``status`` prints
  what the running daemon is doing from its work dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient
from deepforge_dev.stack import free_port, kill_group
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.waiting import run_to_end, wait_for
from tests.fixtures.worker import python_config, upload_bundle, wait_for_worker

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
#: PATH without the venv: the worker script is only reachable by its path, as after `make install`.
BARE_PATH = "/usr/local/bin:/usr/bin:/bin"

#: A job that runs until the file ``release`` appears in the worker's work dir (one level up), then succeeds.
WAIT_FOR_RELEASE = (
    "import os, time\n"
    "print('started', flush=True)\n"
    "while not os.path.exists('../release'):\n"
    "    time.sleep(0.1)\n"
    "print('released', flush=True)\n"
)


def _worker_cli(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "deepforge-worker"), *args],
        env={**os.environ, "PATH": BARE_PATH},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def supervisord(conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [str(BIN / "supervisord"), "-n", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            kill_group(proc.pid, grace=5)
            proc.wait(timeout=10)


def test_supervisord_runs_and_drains_the_generated_section(webgme_server: Any) -> None:
    base = Path(tempfile.mkdtemp(prefix="dfw-sv-"))  # short: the control socket's path has a length limit
    work_dir = base / "jobs"
    started: list[int] = []
    try:
        section = _worker_cli(
            "supervisor-conf", "--host", webgme_server.url, "--work-dir", str(work_dir),
            "--cache-dir", str(base / "cache"), "--drain-timeout", "120", "--cancel-grace", "2", "--name", "dfw",
        )  # fmt: skip
        assert f"command={BIN / 'deepforge-worker'} start " in section  # separate tokens, not one quoted string
        conf = base / "supervisord.conf"
        conf.write_text(
            textwrap.dedent(f"""\
                [supervisord]
                logfile={base}/supervisord.log
                pidfile={base}/supervisord.pid
                childlogdir={base}
                [unix_http_server]
                file={base}/sv.sock
                [rpcinterface:supervisor]
                supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
                [supervisorctl]
                serverurl=unix://{base}/sv.sock
            """)
            + section
        )

        def ctl(*args: str) -> str:
            done = subprocess.run(
                [str(BIN / "supervisorctl"), "-c", str(conf), *args], capture_output=True, text=True, check=False
            )
            return done.stdout + done.stderr

        with supervisord(conf) as sv:
            wait_for(lambda: "RUNNING" in ctl("status", "dfw"), 60, "supervisord to report dfw RUNNING")
            pid = int(ctl("pid", "dfw").strip())
            started.append(pid)
            wait_for_worker(webgme_server.url, f"{os.uname().nodename}_{pid}")

            compute = get_client("gme", {"host": webgme_server.url})
            bundle = upload_bundle(BlobClient(webgme_server.url), {}, python_config(WAIT_FOR_RELEASE))
            job_info = compute.start_job(ComputeJob(hash=bundle))
            executor = ExecutorClient(webgme_server.url)
            wait_for(lambda: executor.get_info(bundle).get("status") == "RUNNING", 60, "the job to run")
            wait_for(lambda: (work_dir / bundle / "job_stdout.txt").is_file(), 60, "the job to start")

            # `supervisorctl stop` sends TERM and waits: the daemon drains, so release the job meanwhile.
            stopping = subprocess.Popen([str(BIN / "supervisorctl"), "-c", str(conf), "stop", "dfw"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
            wait_for(lambda: "STOPPING" in ctl("status", "dfw"), 60, "supervisord to stop the worker")
            (work_dir / "release").touch()
            out, _ = stopping.communicate(timeout=180)
            assert b"stopped" in out, out
            assert "STOPPED" in ctl("status", "dfw")
            started.clear()  # gone: its pid is not ours to signal any more
            updates, output = run_to_end(compute, job_info, poll_interval=0.2)
            assert updates[-1].status == JobStatus.SUCCESS, (output, (base / "dfw.log").read_text())
            assert "released" in output
            log = (base / "dfw.log").read_text()
            assert "stop requested: draining 1 running job(s)" in log and "stopped" in log

            ctl("shutdown")
            assert sv.wait(timeout=60) == 0
    finally:
        for pid in started:  # supervisord runs the worker in a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd): the unit cannot be verified here")
    key = tmp_path / "secret.key"
    key.write_text("k")
    unit = _worker_cli(
        "systemd-unit", "--host", "http://127.0.0.1:8888", "--work-dir", str(tmp_path / "jobs"),
        "--user", "root", "--key-file", str(key), "--drain-timeout", "100", "--cancel-grace", "5",
    )  # fmt: skip
    assert f"ExecStart={BIN / 'deepforge-worker'} start --host http://127.0.0.1:8888" in unit
    assert "TimeoutStopSec=165" in unit and "KillSignal=SIGTERM" in unit and "Restart=on-failure" in unit
    assert f"Environment=DEEPFORGE_SECRET_KEY_FILE={key}" in unit
    path = tmp_path / "deepforge-worker.service"
    path.write_text(unit)
    done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "deepforge-worker.service" not in done.stderr, done.stderr


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_and_status_of_a_real_worker(webgme_server: Any, worker_factory: Any, tmp_path: Path) -> None:
    port = free_port()
    work_dir = tmp_path / "jobs"
    worker = worker_factory(webgme_server, metrics_port=port, metrics_addr="127.0.0.1", work_dir=work_dir)
    compute = get_client("gme", {"host": webgme_server.url})
    blob = BlobClient(webgme_server.url)
    payload = "x" * 5000
    ok = upload_bundle(blob, {"data.txt": payload}, python_config("open('out.txt', 'w').write('y' * 3000)",
                       [{"name": "out", "resultPatterns": ["out.txt"]}]))  # fmt: skip
    bad = upload_bundle(blob, {}, python_config("raise SystemExit(3)"))
    url = f"http://127.0.0.1:{port}/metrics"
    busy = ("deepforge_worker_running_jobs", (("gpus", ""), ("slot", "0")))
    held = upload_bundle(blob, {}, python_config(WAIT_FOR_RELEASE))
    held_info = compute.start_job(ComputeJob(hash=held))
    wait_for(lambda: (work_dir / held / "job_stdout.txt").is_file(), 60, "the held job to start")
    assert _samples(url)[busy] == 1
    running = subprocess.run([str(BIN / "deepforge-worker"), "status", "--work-dir", str(work_dir)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert f"slot 0: {held}" in running.stdout, running.stdout + running.stderr
    (work_dir / "release").touch()
    updates, _ = run_to_end(compute, held_info, poll_interval=0.2)
    assert updates[-1].status == JobStatus.SUCCESS
    for bundle, status in ((ok, JobStatus.SUCCESS), (bad, JobStatus.FAILED)):
        updates, _ = run_to_end(compute, compute.start_job(ComputeJob(hash=bundle)), poll_interval=0.2)
        assert updates[-1].status == status

    # The final report is posted before the daemon counts the job: wait for both to be counted.
    wait_for(lambda: _samples(url).get(("deepforge_worker_job_duration_seconds_count", ())) == 3, 30, "3 jobs")
    samples = _samples(url)
    assert samples[("deepforge_worker_jobs_total", (("status", "SUCCESS"),))] == 2
    assert samples[("deepforge_worker_jobs_total", (("status", "FAILED_TO_EXECUTE"),))] == 1
    assert samples[busy] == 0
    assert samples[("deepforge_worker_polls_total", ())] >= 2
    assert samples[("deepforge_worker_poll_errors_total", ())] == 0
    assert samples[("deepforge_worker_bytes_downloaded_total", ())] > len(payload)  # the zipped bundles
    assert samples[("deepforge_worker_bytes_uploaded_total", ())] >= 3000  # out.txt and the two stdouts

    status = subprocess.run([str(BIN / "deepforge-worker"), "status", "--work-dir", str(work_dir)],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"worker {worker.client_id} (pid {worker.pid}): running" in status.stdout
    assert "last poll: " in status.stdout and " ok (" in status.stdout
    assert "slot 0: idle" in status.stdout
    assert "jobs ended: FAILED_TO_EXECUTE 1, SUCCESS 2" in status.stdout

    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    stopped = subprocess.run([str(BIN / "deepforge-worker"), "status", "--work-dir", str(work_dir)],
                             capture_output=True, text=True, check=False)  # fmt: skip
    assert "NOT RUNNING" in stopped.stdout
