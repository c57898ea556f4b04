"""``ray`` compute against a real Ray head node (tests/fixtures/ray.py): one session-scoped head, 2 CPUs, 2
logical GPUs, 2 ``dftest`` custom resources.

What the conformance suite does not cover: the exit code in the reason, a canceled job's processes gone, an
impossible request failing instead of PENDING forever, labels as custom resources, output from the first
line, resuming after the watching *process* was killed, a resubmit (and a racing one) not running twice,
our runner with sealed credentials on a cluster that has no key (``deepforge run``), and one clear error
for each bad input: an unreachable dashboard, a wrong token (through a proxy that checks it: a bare head
has no auth), a malformed runtime env.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from deepforge_adapters.compute import ComputeClient, ComputeJob, JobStatus, get_client
from deepforge_adapters.compute.ray import submission_id
from deepforge_adapters.errors import ComputeError, ConfigError
from deepforge_adapters.jobs.archive import bundle_hash
from deepforge_adapters.storage import get_client as get_storage

from tests.fixtures.jobs import pid_gone, put_pickle, read_pickle
from tests.fixtures.waiting import run_to_end, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def make_job(root: Path, script: str, results: Mapping[str, Any] | None = None, **job: Any) -> ComputeJob:
    """A bundle whose command runs ``script`` (Python) in its directory; it writes ``results`` if given."""
    root.mkdir(parents=True)
    (root / "job.py").write_text(textwrap.dedent(script))
    (root / "nonce.txt").write_text(uuid.uuid4().hex)
    if results is not None:
        (root / "results.in.json").write_text(json.dumps(results))
    (root / "executor_config.json").write_text(json.dumps({"cmd": sys.executable, "args": ["-u", "job.py"]}))
    return ComputeJob(bundle=root, name=job.pop("name", "ray test"), **job)


@pytest.fixture
def ray_client(ray_head: Any) -> Callable[..., ComputeClient]:
    def make(**config: Any) -> ComputeClient:
        client = get_client("ray", {"dashboardUrl": ray_head.url, **config})
        client.poll_interval, client.max_poll_interval = 0.05, 0.25
        return client

    return make


@pytest.fixture
def ray(ray_client: Callable[..., ComputeClient]) -> ComputeClient:
    return ray_client()


def ray_status(url: str, job_info: Mapping[str, Any]) -> str:
    return str(requests.get(f"{url}/api/jobs/{job_info['submissionId']}", timeout=10).json()["status"])


# ------------------------------------------------------------------------------------------ the job's life
def test_success_streams_from_the_first_line_and_returns_results(ray: ComputeClient, tmp_path: Path) -> None:
    script = """
    import shutil
    print("first line")
    for i in range(3):
        print("line", i)
    shutil.copy("results.in.json", "results.json")
    """
    results = {"out": {"type": "int", "dataInfo": {"backend": "local", "data": {"filename": "x"}}}}
    info = ray.start_job(make_job(tmp_path / "b", script, results))
    assert info["submissionId"] == submission_id(info["hash"])

    updates, output = run_to_end(ray, info)

    first = next(u for u in updates if u.kind == "output")
    assert first.output.startswith("first line\n"), first  # nothing of Ray's own lines, nothing lost
    assert output == "first line\nline 0\nline 1\nline 2\n"
    assert {u.status for u in updates if u.kind == "status"} <= {JobStatus.QUEUED, JobStatus.RUNNING}
    assert updates[-1].kind == "end" and updates[-1].status == JobStatus.SUCCESS
    assert ray.get_results_info(info) == results
    assert ray.get_console_output(info) == output  # the results line is not part of the output


def test_failure_reports_the_exit_code_and_the_last_line(ray: ComputeClient, tmp_path: Path) -> None:
    info = ray.start_job(
        make_job(tmp_path / "b", "import sys\nprint('working')\nprint('boom: disk on fire')\nsys.exit(7)")
    )

    updates, output = run_to_end(ray, info)

    end = updates[-1]
    assert end.status == JobStatus.FAILED and output == "working\nboom: disk on fire\n"
    assert end.reason == "Ray job failed (exit code 7): boom: disk on fire"
    assert ray.get_failure_reason(info) == end.reason
    with pytest.raises(ComputeError, match=r"wrote no results\.json"):
        ray.get_results_info(info)


def test_cancel_while_running_ends_canceled_and_its_processes_are_gone(
    ray: ComputeClient, tmp_path: Path, ray_head: Any
) -> None:
    script = """
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("pids", os.getpid(), child.pid, flush=True)
    time.sleep(600)
    """
    info = ray.start_job(make_job(tmp_path / "b", script))
    pids: list[int] = []
    updates = []
    for update in ray.watch(info):
        updates.append(update)
        if update.kind == "output" and "pids" in update.output and not pids:
            pids = [int(p) for p in update.output.split()[1:3]]
            ray.cancel_job(info)

    assert pids, updates
    assert updates[-1].status == JobStatus.CANCELED and updates[-1].reason is None, updates[-1]
    assert ray.get_status(info) == JobStatus.CANCELED
    assert ray_status(ray_head.url, info) == "STOPPED"
    for pid in pids:  # the job and what it started (Ray: SIGTERM, then SIGKILL after 3 s)
        wait_for(lambda pid=pid: pid_gone(pid), 30, f"job process {pid} to be gone")
    ray.cancel_job(info)  # canceling a finished job does nothing


def test_an_impossible_gpu_request_is_refused_instead_of_pending_forever(
    ray_client: Callable[..., ComputeClient], tmp_path: Path, ray_head: Any
) -> None:
    client = ray_client(numGpus=3)
    job = make_job(tmp_path / "b", "print('never runs')")
    with pytest.raises(ComputeError) as raised:
        client.start_job(job)
    message = str(raised.value)
    assert "asks for CPU=1, GPU=3" in message and "GPU=2" in message and "PENDING forever" in message, message
    job_hash = bundle_hash(job.bundle)
    assert requests.get(f"{ray_head.url}/api/jobs/{submission_id(job_hash)}", timeout=10).status_code == 404


def test_a_pending_job_no_node_can_run_fails_with_what_it_asked_for(
    ray_client: Callable[..., ComputeClient], tmp_path: Path, ray_head: Any
) -> None:
    """A job already PENDING when no node can run it (submitted to wait, or its node left) ends failed."""
    waiting = ray_client(numGpus=3, waitForResources=True)
    info = waiting.start_job(make_job(tmp_path / "b", "print('never runs')"))
    assert waiting.get_status(info) == JobStatus.QUEUED
    strict = ray_client()

    updates, output = run_to_end(strict, info)

    end = updates[-1]
    assert end.status == JobStatus.FAILED and output == "", updates
    assert end.reason and "asks for CPU=1, GPU=3" in end.reason and "PENDING forever" in end.reason, end.reason
    assert strict.get_status(info) == JobStatus.FAILED  # stays failed, not canceled
    assert strict.get_failure_reason(info) == end.reason


def test_gpus_and_label_resources_that_exist_are_granted(
    ray_client: Callable[..., ComputeClient], tmp_path: Path
) -> None:
    client = ray_client(numGpus=1)
    job = make_job(
        tmp_path / "b", "import os\nprint('gpus', os.environ.get('CUDA_VISIBLE_DEVICES'))", labels=("dftest",)
    )
    info = client.start_job(job)
    updates, output = run_to_end(client, info)
    assert updates[-1].status == JobStatus.SUCCESS, updates[-1]
    assert output.startswith("gpus ") and output.split()[1] in ("0", "1"), output  # Ray bound one logical GPU

    with pytest.raises(ComputeError, match=r"asks for CPU=1, GPU=1, dftest=3; .* dftest=2"):
        client.start_job(make_job(tmp_path / "c", "print('no')", labels=("dftest=3",)))


# ---------------------------------------------------------------------------------- resume, resubmit
WATCHER = """
import json, sys
from deepforge_adapters.compute import ComputeJob, get_client
from pathlib import Path

url, bundle, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
client = get_client("ray", {"dashboardUrl": url})
client.poll_interval = client.max_poll_interval = 0.05
info = client.start_job(ComputeJob(bundle=bundle, name="watched"))
(out / "job_info.json").write_text(json.dumps(info))
seen = ""
for update in client.watch(info):
    seen += update.output
    (out / "cursor.json").write_text(json.dumps({"cursor": update.cursor, "seen": seen}))
"""


def test_a_new_watcher_resumes_from_the_stored_job_info_after_the_watcher_process_dies(
    ray: ComputeClient, tmp_path: Path, ray_head: Any
) -> None:
    signals = tmp_path / "signals"
    signals.mkdir()
    script = f"""
    import os, time
    print("before", flush=True)
    while not os.path.exists({str(signals / "go")!r}):
        time.sleep(0.05)
    print("after", flush=True)
    """
    job = make_job(tmp_path / "b", script)
    out = tmp_path / "watcher"
    out.mkdir()
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, ray_head.url, str(job.bundle), str(out)])
    try:
        wait_for(
            lambda: (
                (out / "cursor.json").exists() and "before" in json.loads((out / "cursor.json").read_text())["seen"]
            ),
            120,
            "the watcher to see the job's first line",
        )
    finally:
        watcher.send_signal(signal.SIGKILL)  # the plugin process dies mid-job
        watcher.wait(timeout=30)
    stored = json.loads((out / "cursor.json").read_text())
    info = json.loads((out / "job_info.json").read_text())
    (signals / "go").touch()

    rest = list(ray.watch(info, cursor=stored["cursor"]))  # a new process, from what the model holds

    assert stored["seen"] + "".join(u.output for u in rest) == "before\nafter\n"
    assert rest[-1].status == JobStatus.SUCCESS
    assert [u for u in rest if u.kind == "status"] == []
    assert run_to_end(ray, info)[1] == "before\nafter\n"  # from the job_info alone: the whole output again


def test_a_resubmitted_job_runs_once(ray: ComputeClient, tmp_path: Path, ray_head: Any) -> None:
    runs = tmp_path / "runs.txt"
    script = f"""
    import os, time
    with open({str(runs)!r}, "a") as f:
        f.write("ran\\n")
    while not os.path.exists({str(tmp_path / "go")!r}):
        time.sleep(0.05)
    """
    job = make_job(tmp_path / "b", script)
    started: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: started.append(ray.start_job(job))) for _ in range(3)]
    for thread in threads:  # racing submits of one job (a retried request, two plugin processes)
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(started) == 3 and all(info == started[0] for info in started), started
    wait_for(runs.exists, 60, "the job to start")
    assert ray.start_job(job) == started[0]  # and once more while it runs
    (tmp_path / "go").touch()
    assert run_to_end(ray, started[0])[0][-1].status == JobStatus.SUCCESS
    assert ray.start_job(job) == started[0]  # a succeeded job is not run again
    assert runs.read_text() == "ran\n"
    listed = requests.get(f"{ray_head.url}/api/jobs/", timeout=10).json()
    assert [j["submission_id"] for j in listed].count(started[0]["submissionId"]) == 1

    ray.purge_job(started[0])
    assert ray.get_status(started[0]) == JobStatus.NOT_FOUND


def test_a_failed_job_started_again_runs_again(ray: ComputeClient, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    script = f"import os, sys\nprint('attempt')\nsys.exit(0 if os.path.exists({str(flag)!r}) else 4)"
    job = make_job(tmp_path / "b", script)
    first = ray.start_job(job)
    assert run_to_end(ray, first)[0][-1].status == JobStatus.FAILED
    flag.touch()
    again = ray.start_job(job)
    assert again["hash"] == first["hash"] and again["attempt"] == first["attempt"] + 1
    assert ray.get_status(first) == JobStatus.FAILED  # the first run stays as it was
    updates, output = run_to_end(ray, again)
    assert updates[-1].status == JobStatus.SUCCESS and output == "attempt\n"


# ------------------------------------------------------------------------------------------- bad input
def test_an_unreachable_dashboard_is_one_clear_error(tmp_path: Path) -> None:
    from deepforge_dev.stack import free_port

    url = f"http://127.0.0.1:{free_port()}"
    client = get_client("ray", {"dashboardUrl": url})
    with pytest.raises(ComputeError) as raised:
        client.start_job(make_job(tmp_path / "b", "print(1)"))
    message = str(raised.value)
    assert message.startswith("ray compute: ") and f"cannot reach the Ray dashboard at {url}" in message, message
    assert "Connection refused" in message and "Max retries" not in message, message


def test_a_dashboard_url_that_is_not_a_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dashboardUrl"):
        get_client("ray", {"dashboardUrl": "head-node:8265"})


class TokenProxy(http.server.ThreadingHTTPServer):
    """A reverse proxy in front of the dashboard that wants ``Authorization: Bearer <token>`` and an
    ``X-Team`` header (what an ingress or an oauth2 proxy does); anything else is a 401."""

    daemon_threads = True

    def __init__(self, upstream: str, token: str, team: str) -> None:
        self.upstream, self.token, self.team = upstream, token, team
        self.refused: list[str] = []
        super().__init__(("127.0.0.1", 0), ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: TokenProxy

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _forward(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {self.server.token}" or self.headers.get("X-Team") != (
            self.server.team
        ):
            self.server.refused.append(self.path)
            self.send_response(401)
            self.send_header("Content-Length", "12")
            self.end_headers()
            self.wfile.write(b"unauthorized")
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type",)}
        upstream = requests.request(
            self.command, self.server.upstream + self.path, data=body, headers=headers, timeout=60
        )
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward


@pytest.fixture
def token_proxy(ray_head: Any) -> Iterator[TokenProxy]:
    # a value no other test uses: header values are secrets, redacted from every later message of this process
    proxy = TokenProxy(ray_head.url, f"tok-{uuid.uuid4().hex}", f"team-{uuid.uuid4().hex[:8]}")
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def test_a_wrong_token_is_one_clear_error_and_the_right_one_runs_the_job(
    token_proxy: TokenProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = json.dumps({"X-Team": token_proxy.team})
    wrong = get_client("ray", {"dashboardUrl": token_proxy.url, "token": "not-the-token", "headers": headers})
    with pytest.raises(ComputeError) as raised:
        wrong.start_job(make_job(tmp_path / "a", "print(1)"))
    message = str(raised.value)
    assert f"the Ray dashboard at {token_proxy.url} refused the request (HTTP 401)" in message, message
    assert "token" in message and "not-the-token" not in message
    assert token_proxy.refused

    right = get_client("ray", {"dashboardUrl": token_proxy.url, "token": token_proxy.token, "headers": headers})
    right.poll_interval = right.max_poll_interval = 0.05
    refused = len(token_proxy.refused)
    info = right.start_job(
        make_job(
            tmp_path / "b",
            "import shutil\nprint('through the proxy')\nshutil.copy('results.in.json', 'results.json')",
            {"r": {}},
        )
    )
    updates, output = run_to_end(right, info)
    assert updates[-1].status == JobStatus.SUCCESS and output == "through the proxy\n"
    assert right.get_results_info(info) == {"r": {}}
    assert len(token_proxy.refused) == refused  # every request (upload, submit, status, logs) carried both
    assert token_proxy.token not in caplog.text and "not-the-token" not in caplog.text


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key: ``(cert.pem, key.pem)``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_is_verified_and_a_ca_bundle_makes_a_private_certificate_trusted(
    token_proxy: TokenProxy, tmp_path: Path
) -> None:
    import ssl

    cert, key = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    token_proxy.socket = context.wrap_socket(token_proxy.socket, server_side=True)
    url = token_proxy.url.replace("http://", "https://")
    config = {"dashboardUrl": url, "token": token_proxy.token, "headers": json.dumps({"X-Team": token_proxy.team})}

    with pytest.raises(ComputeError) as raised:
        get_client("ray", config).start_job(make_job(tmp_path / "a", "print(1)"))
    assert f"TLS verification of the Ray dashboard at {url} failed" in str(raised.value), raised.value
    assert "caBundle" in str(raised.value)

    trusted = get_client("ray", {**config, "caBundle": str(cert)})
    trusted.poll_interval = trusted.max_poll_interval = 0.05
    updates, output = run_to_end(trusted, trusted.start_job(make_job(tmp_path / "b", "print('over tls')")))
    assert updates[-1].status == JobStatus.SUCCESS and output == "over tls\n"


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"runtimeEnv": "{not json"}, "runtimeEnv", "is not valid JSON"),
        ({"runtimeEnv": '["pip"]'}, "runtimeEnv", "must be a JSON object"),
        ({"runtimeEnv": '{"working_dir": "/elsewhere"}'}, "runtimeEnv", "set by the backend"),
        ({"runtimeEnv": '{"env_vars": {"N": 1}}'}, "runtimeEnv", "env_vars must be a JSON object of strings"),
        ({"pip": "numpy", "conda": "base"}, "pip", "cannot both be set"),
        ({"resources": '{"GPU": 1}'}, "resources", "numGpus"),
        ({"resources": '{"dftest": -1}'}, "resources", "positive number"),
        ({"headers": '{"Bad Name": "x"}'}, "headers", "header"),
    ],
)
def test_a_malformed_config_is_a_config_error_naming_the_field(
    ray_head: Any, config: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        get_client("ray", {"dashboardUrl": ray_head.url, **config})
    assert raised.value.field == field and message in str(raised.value), raised.value


def test_a_runtime_env_ray_refuses_fails_the_job_with_rays_words(
    ray_client: Callable[..., ComputeClient], tmp_path: Path
) -> None:
    client = ray_client(runtimeEnv=json.dumps({"py_modules": 5}))
    info = client.start_job(make_job(tmp_path / "b", "print('never')"))
    end = run_to_end(client, info)[0][-1]
    assert end.status == JobStatus.FAILED
    assert end.reason and end.reason.startswith("Ray job failed (") and "py_modules" in end.reason, end.reason


# ------------------------------------------------------------------------- our runner, deepforge run
def test_deepforge_run_on_ray_with_sealed_s3_credentials_on_a_cluster_without_the_key(
    ray_head: Any, tmp_path: Path, s3_config: dict[str, Any], make_bundle: Any, job_env: dict[str, str]
) -> None:
    """The runner on the cluster gets the job's opened credentials (the head has no DEEPFORGE_SECRET_KEY)."""
    s3 = get_storage("s3", s3_config)
    s3.ensure_bucket()
    data = put_pickle(s3, "inputs/x", [1, 2, 3])
    bundle = make_bundle(
        """
        import os, pickle
        x = pickle.load(open("artifacts/x", "rb"))
        print("got", x)
        os.makedirs("outputs/total")
        pickle.dump(sum(x), open("outputs/total/data", "wb"))
        """,
        inputs={"x": data},
        outputs=["total"],
        storage_id="s3",
        storage_config=s3_config,
    )
    assert s3_config["secretAccessKey"] not in (bundle / "job.json").read_text()  # sealed
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "deepforge"),
            "run",
            str(bundle),
            "--compute",
            "ray",
            "--config",
            json.dumps({"dashboardUrl": ray_head.url}),
        ],
        env={**job_env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "got [1, 2, 3]" in result.stdout
    results = json.loads(result.stdout[result.stdout.index("{") :])
    assert read_pickle(s3, results["total"]["dataInfo"]) == 6
    assert s3_config["secretAccessKey"] not in result.stdout + result.stderr
