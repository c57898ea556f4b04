"""``slurm`` compute against a real Slurm (tests/fixtures/slurm.py): every terminal state for the CLI (here and
over a real sshd) and REST transports, GPUs through gres, resume from a stored job_info, bad input.

The jobs are a small Python program that waits for signal files in the cluster's shared directory (no test
depends on timing); nothing here asserts a duration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, JobUpdate, get_client
from deepforge_adapters.compute.slurm import SlurmCompute
from deepforge_adapters.errors import ComputeError
from deepforge_adapters.policy import Policy, PolicyError

from tests.fixtures.slurm import SlurmCluster, SlurmRest, SshLogin
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.integration

PROGRAM = """\
import os, signal, sys, time
mode, shared = sys.argv[1], sys.argv[2]
if mode == "stubborn":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("started", flush=True)
print("CVD=" + os.environ.get("CUDA_VISIBLE_DEVICES", "none"), flush=True)
deadline = time.monotonic() + 240
while mode in ("wait", "cancel", "hold") and not os.path.exists(os.path.join(shared, "go")):
    if time.monotonic() > deadline:
        sys.exit(90)
    time.sleep(0.05)
if mode == "fail":
    print("Error: out of cheese", flush=True)
    sys.exit(3)
if mode in ("sleep", "stubborn"):
    time.sleep(600)
open("results.json", "w").write('{"answer": {"type": "int", "dataInfo": {"backend": "local", "data": {}}}}')
print("done", flush=True)
"""


@pytest.fixture(params=["cli", "ssh", "rest"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def slurm_config(request: pytest.FixtureRequest, transport: str, slurm_cluster: SlurmCluster) -> dict[str, Any]:
    if transport == "ssh":
        login: SshLogin = request.getfixturevalue("slurm_sshd")
        return login.config(slurm_cluster)
    if transport == "rest":
        rest: SlurmRest = request.getfixturevalue("slurm_rest")
        return rest.config(slurm_cluster)
    return slurm_cluster.config()


@pytest.fixture
def signals(slurm_cluster: SlurmCluster, tmp_path: Path) -> Path:
    path = slurm_cluster.shared / f"signals-{tmp_path.name}"
    path.mkdir(mode=0o777)
    return path


class Jobs:
    def __init__(self, tmp_path: Path, signals: Path) -> None:
        self.tmp_path = tmp_path
        self.signals = signals
        self.count = 0

    def job(self, mode: str, labels: Sequence[str] = ()) -> ComputeJob:
        self.count += 1
        root = self.tmp_path / f"bundle{self.count}"
        root.mkdir()
        (root / "job.py").write_text(PROGRAM)
        (root / "nonce").write_text(f"{self.tmp_path}-{self.count}")
        argv = [sys.executable, "job.py", mode, str(self.signals)]
        (root / "executor_config.json").write_text(json.dumps({"cmd": argv[0], "args": argv[1:]}))
        return ComputeJob(bundle=root, name=f"test-{mode}", labels=tuple(labels))

    def go(self) -> None:
        (self.signals / "go").touch()


@pytest.fixture
def jobs(tmp_path: Path, signals: Path, job_env: dict[str, str]) -> Jobs:
    return Jobs(tmp_path, signals)


def client(config: dict[str, Any]) -> SlurmCompute:
    made = get_client("slurm", config)
    assert isinstance(made, SlurmCompute)
    made.poll_interval, made.max_poll_interval = 0.1, 0.5
    return made


def follow(compute: SlurmCompute, info: dict[str, Any]) -> list[JobUpdate]:
    return list(compute.watch(json.loads(json.dumps(info))))


def output(updates: Sequence[JobUpdate]) -> str:
    return "".join(u.output for u in updates if u.kind == "output")


def wait_state(cluster: SlurmCluster, job_id: str, state: str) -> None:
    wait_for(lambda: cluster.state(job_id) == state, timeout=120, what=f"job {job_id} to be {state}")


# ---------------------------------------------------------------------------------------------- terminal states
def test_success_streams_output_and_results(slurm_config: dict[str, Any], jobs: Jobs) -> None:
    compute = client(slurm_config)
    info = compute.start_job(jobs.job("ok"))
    assert info["cluster"] == slurm_config["cluster"] and info["jobId"].isdecimal()
    updates = follow(compute, info)
    assert updates[-1] == JobUpdate("end", status=JobStatus.SUCCESS), updates[-1]
    assert output(updates) == "started\nCVD=none\ndone\n"
    assert compute.get_results_info(info)["answer"]["type"] == "int"
    assert compute.get_status(info) == JobStatus.SUCCESS


def test_failure_names_the_exit_code_and_the_last_line(slurm_config: dict[str, Any], jobs: Jobs) -> None:
    compute = client(slurm_config)
    info = compute.start_job(jobs.job("fail"))
    end = follow(compute, info)[-1]
    assert end.status == JobStatus.FAILED
    assert end.reason == "FAILED: exit code 3: Error: out of cheese", end.reason
    assert compute.get_failure_reason(info) == end.reason


def test_cancel_while_pending_and_while_running_ends_canceled(
    slurm_config: dict[str, Any], slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    compute = client(slurm_config)
    running = compute.start_job(jobs.job("cancel", labels=["gpus=2"]))  # holds both GPUs
    wait_state(slurm_cluster, running["jobId"], "RUNNING")
    pending = compute.start_job(jobs.job("ok", labels=["gpu"]))  # waits for a GPU
    wait_for(lambda: "Resources" in slurm_cluster.run("squeue", "-h", "-j", pending["jobId"], "-o", "%r").stdout,
             timeout=60, what="the second job to wait for resources")  # fmt: skip
    assert compute.get_status(pending) == JobStatus.QUEUED
    compute.cancel_job(pending)
    assert follow(compute, pending)[-1] == JobUpdate("end", status=JobStatus.CANCELED)
    assert slurm_cluster.state(pending["jobId"]) == "CANCELLED"

    watch = compute.watch(running)
    seen = ""
    for update in watch:
        seen += update.output
        if "CVD=" in seen:
            break
    compute.cancel_job(running)  # SIGINT to the batch step; Slurm records FAILED (exit 130)
    rest = list(watch)
    assert rest[-1] == JobUpdate("end", status=JobStatus.CANCELED), rest[-1]
    assert compute.get_status(running) == JobStatus.CANCELED
    assert "CVD=0,1" in seen


def test_a_job_that_ignores_the_interrupt_is_killed_after_the_grace_and_ends_canceled(
    slurm_config: dict[str, Any], slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    compute = client(slurm_config)  # job_env sets DEEPFORGE_CANCEL_GRACE=1; the batch script passes it on
    info = compute.start_job(jobs.job("stubborn"))
    watch = compute.watch(info)
    seen = ""
    for update in watch:
        seen += update.output
        if "CVD=" in seen:
            break
    compute.cancel_job(info)
    assert list(watch)[-1] == JobUpdate("end", status=JobStatus.CANCELED)
    assert slurm_cluster.state(info["jobId"]) in ("FAILED", "COMPLETED")  # Slurm's view: the batch step exited


def test_timeout_says_which_limit(
    transport: str, slurm_cluster: SlurmCluster, slurm_config: dict[str, Any], jobs: Jobs
) -> None:
    if transport == "ssh":
        pytest.skip("the same CLI code as the cli transport; one TIMEOUT per transport kind (CLI, REST) is enough")
    compute = client({**slurm_config, "timeLimit": "1"})  # Slurm's smallest limit: one minute
    info = compute.start_job(jobs.job("sleep"))
    end = follow(compute, info)[-1]
    assert end.status == JobStatus.FAILED
    assert end.reason == "TIMEOUT: the job hit its 00:01:00 limit", end.reason
    assert slurm_cluster.state(info["jobId"]) == "TIMEOUT"


# ---------------------------------------------------------------------------------------------- GPUs
def test_one_of_two_gpus_is_visible(slurm_config: dict[str, Any], jobs: Jobs) -> None:
    compute = client({**slurm_config, "gpus": 1})
    info = compute.start_job(jobs.job("ok"))
    updates = follow(compute, info)
    assert updates[-1].status == JobStatus.SUCCESS
    assert "CVD=0\n" in output(updates)


def test_three_gpus_are_refused_with_slurms_message(
    slurm_config: dict[str, Any], slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    before = slurm_cluster.jobs()
    with pytest.raises(ComputeError) as raised:
        client(slurm_config).start_job(jobs.job("ok", labels=["gpus=3"]))
    message = str(raised.value)
    assert "Requested node configuration is not available" in message, message
    assert f"cluster {slurm_cluster.cluster!r}" in message
    # Slurm 22.05 keeps a record of the refused job, FAILED with BadConstraints before it ever started
    for job_id in [j for j in slurm_cluster.jobs() if j not in before]:
        record = slurm_cluster.run("scontrol", "show", "job", "-o", job_id).stdout
        assert "JobState=FAILED Reason=BadConstraints" in record and "NodeList= " in record, record


# ---------------------------------------------------------------------------------------------- resume
def test_a_new_watcher_resumes_from_the_stored_job_info(slurm_config: dict[str, Any], jobs: Jobs) -> None:
    first = client(slurm_config)
    info = first.start_job(jobs.job("wait"))
    stored = json.dumps(info)  # what the plugin keeps in Job.jobInfo
    seen: list[JobUpdate] = []
    watch = first.watch(info)
    for update in watch:
        seen.append(update)
        if "started" in output(seen):
            break
    watch.close()  # the watcher dies mid-job
    cursor = json.loads(json.dumps(seen[-1].cursor))
    jobs.go()
    rest = list(client(slurm_config).watch(json.loads(stored), cursor=cursor))
    assert rest[-1] == JobUpdate("end", status=JobStatus.SUCCESS)
    assert output(seen) + output(rest) == "started\nCVD=none\ndone\n"


# ---------------------------------------------------------------------------------------------- bad input
def test_a_missing_partition_is_one_clear_error_and_nothing_is_submitted(
    slurm_config: dict[str, Any], slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    before = slurm_cluster.jobs()
    with pytest.raises(ComputeError) as raised:
        client({**slurm_config, "partition": "nosuch"}).start_job(jobs.job("ok"))
    message = str(raised.value)
    assert message.startswith(f"slurm compute: cluster {slurm_cluster.cluster!r}: "), message
    assert "Invalid partition name specified" in message, message
    assert slurm_cluster.jobs() == before


def test_a_wrong_token_is_one_clear_error_and_nothing_is_submitted(
    slurm_rest: SlurmRest, slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    before = slurm_cluster.jobs()
    config = slurm_rest.config(slurm_cluster, restToken="not-a-token")
    with pytest.raises(ComputeError) as raised:
        client(config).start_job(jobs.job("ok"))
    message = str(raised.value)
    assert f"cluster {slurm_cluster.cluster!r}" in message and "slurmrestd answered HTTP" in message, message
    assert "not-a-token" not in message
    assert slurm_cluster.jobs() == before


def test_an_unreachable_login_node_is_one_clear_error_and_nothing_is_submitted(
    slurm_sshd: SshLogin, slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    from tests.fixtures.slurm import free_port

    before = slurm_cluster.jobs()
    config = slurm_sshd.config(slurm_cluster, sshPort=free_port())  # nothing listens there
    with pytest.raises(ComputeError) as raised:
        client(config).start_job(jobs.job("ok"))
    message = str(raised.value)
    assert "cannot reach login node" in message and slurm_sshd.host in message, message
    assert "Connection refused" in message, message
    assert slurm_cluster.jobs() == before


def test_extra_directives_need_the_operator_policy(slurm_cluster: SlurmCluster, jobs: Jobs, tmp_path: Path) -> None:
    asked = {"extraDirectives": "--comment=hello"}
    with pytest.raises(PolicyError, match=r"compute\.slurm\.extraDirectives = '--comment=hello' is not allowed"):
        # what the plugins check before anything starts: allowing slurm does not allow extra lines
        Policy.from_mapping({"compute": {"allow": ["slurm"]}}, "test").apply("compute", "slurm", asked)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[compute]\nallow = ["slurm"]\n[compute.slurm]\nextraDirectives = { allowed = ["--comment=hello"] }\n'
        f"sharedDir = {{ under = [{json.dumps(str(slurm_cluster.shared))}] }}\n"
    )
    with pytest.raises(PolicyError, match="not allowed by the operator policy"):
        Policy.from_file(policy).apply("compute", "slurm", {"extraDirectives": "--exclusive"})
    permitted = Policy.from_file(policy).apply("compute", "slurm", slurm_cluster.config(**asked))
    compute = client(permitted)
    info = compute.start_job(jobs.job("ok"))
    assert "Comment=hello" in slurm_cluster.run("scontrol", "show", "job", "-o", info["jobId"]).stdout
    assert follow(compute, info)[-1].status == JobStatus.SUCCESS
    with pytest.raises(ComputeError, match="not an sbatch option"):
        client(slurm_cluster.config(extraDirectives="hello\n#SBATCH --exclusive"))


@pytest.fixture(autouse=True)
def _no_leftover_jobs(slurm_cluster: SlurmCluster) -> Iterator[None]:
    yield
    active = slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.split()
    if active:
        slurm_cluster.run("scancel", *active, check=False)


# ---------------------------------------------------------------------------------------------- deepforge run
DOUBLE = """
import os, pickle
value = pickle.load(open("artifacts/value", "rb"))
print("doubling", value)
os.makedirs("outputs/doubled")
pickle.dump(value * 2, open("outputs/doubled/data", "wb"))
open("outputs/doubled/metadata.json", "w").write('{"type": "int"}')
"""


@pytest.mark.parametrize("via", ["cli", "rest"])
def test_deepforge_run_on_slurm_through_the_jobs_storage(
    request: pytest.FixtureRequest,
    via: str,
    slurm_cluster: SlurmCluster,
    job_env: dict[str, str],
    local_storage: Any,
    make_bundle: Any,
) -> None:
    """The runner fetches the input and uploads the output through the job's storage, and the output stream
    comes back through that storage too: no sharedDir."""
    from tests.fixtures.jobs import put_pickle, read_pickle

    value = put_pickle(local_storage, "data/value", 21)
    bundle = make_bundle(DOUBLE, inputs={"value": value}, outputs=["doubled"])
    config = slurm_cluster.config() if via == "cli" else request.getfixturevalue("slurm_rest").config(slurm_cluster)
    config.pop("sharedDir")
    argv = [sys.executable, "-m", "deepforge_adapters.cli", "run", str(bundle), "--compute", "slurm"]
    done = subprocess.run(
        [*argv, "--config", json.dumps(config)], env=job_env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "doubling 21" in done.stdout
    results = json.loads(done.stdout[done.stdout.rindex("\n{\n") + 1 :])
    assert read_pickle(local_storage, results["doubled"]["dataInfo"]) == 42
    channel = Path(local_storage.config["root"]) / "proj/executions/op/deepforge-slurm"
    assert any(channel.glob("*/out/*")) and any(channel.glob("*/end.json"))  # the stream went through storage


def test_jobs_the_controller_forgot_are_read_from_the_job_completion_log(
    slurm_cluster: SlurmCluster, jobs: Jobs
) -> None:
    """``scontrol`` forgets a job after MinJobAge; then ``sacct`` (here ``sacct -c``: no slurmdbd) answers."""
    from deepforge_adapters.compute.slurm_transport import CliTransport

    compute = client(slurm_cluster.config())
    info = compute.start_job(jobs.job("fail"))
    assert follow(compute, info)[-1].status == JobStatus.FAILED
    transport = CliTransport(slurm_cluster.cluster)
    record = wait_for(lambda: transport._sacct(info["jobId"]), timeout=60, what="the job in the completion log")
    assert record is not None and (record.state, record.exit_code) == ("FAILED", 3)
    assert transport._sacct("999999") is None
