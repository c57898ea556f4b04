"""Local compute end to end: detached supervisors, slots, cancel, restart survival, watch."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, JobUpdate, get_client
from deepforge_adapters.compute.local import LocalCompute
from deepforge_adapters.errors import ComputeError
from deepforge_adapters.jobs.archive import bundle_hash, zip_bundle
from deepforge_adapters.process import descendants
from deepforge_adapters.storage.base import StorageClient

from tests.fixtures.jobs import STUBBORN, last_line, pid_gone, put_pickle, read_pickle
from tests.fixtures.waiting import run_to_end, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def local_compute(tmp_path: Path, job_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> LocalCompute:
    monkeypatch.delenv("DEEPFORGE_WORKER_CACHE")  # jobs share <workDir>/cache
    client = get_client("local", {"workDir": str(tmp_path / "compute"), "processes": 1})
    assert isinstance(client, LocalCompute)
    return client


SQUARE = """
import os, pickle
numbers = pickle.load(open("artifacts/numbers", "rb"))
os.makedirs("outputs/squares")
pickle.dump([n * n for n in numbers], open("outputs/squares/data", "wb"))
open("outputs/squares/metadata.json", "w").write('{"type": "list"}')
print("squared", len(numbers), "numbers")
"""


def test_runs_a_bundle_with_inputs_and_outputs(
    local_compute: LocalCompute, local_storage: StorageClient, make_bundle: Callable[..., Path]
) -> None:
    numbers = put_pickle(local_storage, "data/numbers", [3, 4])
    bundle = make_bundle(SQUARE, inputs={"numbers": numbers}, outputs=["squares"])

    info = local_compute.start_job(ComputeJob(bundle=bundle, name="square"))
    updates, output = run_to_end(local_compute, info)

    assert json.loads(json.dumps(info)) == info  # storable as Job.jobInfo
    assert [u.status for u in updates if u.kind == "status"][-1] == JobStatus.RUNNING
    assert updates[-1] == JobUpdate("end", status=JobStatus.SUCCESS)
    assert "squared 2 numbers" in output
    assert output == local_compute.get_console_output(info)
    results = local_compute.get_results_info(info)
    assert read_pickle(local_storage, results["squares"]["dataInfo"]) == [9, 16]
    # inputs go through the work dir's shared cache
    assert any((Path(info["workDir"]) / "cache").rglob("*"))


def test_a_zip_bundle_runs_and_is_keyed_by_its_hash(
    local_compute: LocalCompute, make_bundle: Callable[..., Path]
) -> None:
    zipped = zip_bundle(make_bundle("print('from a zip')"))
    info = local_compute.start_job(ComputeJob(bundle=zipped))
    updates, output = run_to_end(local_compute, info)
    assert updates[-1].status == JobStatus.SUCCESS
    assert "from a zip" in output
    assert info["hash"] == bundle_hash(zipped)


def test_failed_job_reports_the_reason(local_compute: LocalCompute, make_bundle: Callable[..., Path]) -> None:
    info = local_compute.start_job(ComputeJob(bundle=make_bundle("raise RuntimeError('out of cheese')")))
    updates, _ = run_to_end(local_compute, info)
    end = updates[-1]
    assert end.status == JobStatus.FAILED
    assert end.reason == "deepforge: operation (python main.py) exited with code 1: RuntimeError: out of cheese"
    assert local_compute.get_failure_reason(info) == end.reason
    with pytest.raises(ComputeError, match=r"no results\.json"):
        local_compute.get_results_info(info)


TIMESTAMPS = """
import json, os, sys, time
log = os.environ["SLOT_TEST_LOG"]
start = time.time()
time.sleep(0.3)
with open(log, "a") as f:
    f.write(json.dumps([start, time.time()]) + "\\n")
"""


def test_one_slot_runs_jobs_one_after_another(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOT_TEST_LOG", str(tmp_path / "intervals.jsonl"))
    infos = [local_compute.start_job(ComputeJob(bundle=make_bundle(TIMESTAMPS))) for _ in range(3)]
    for info in infos:
        assert run_to_end(local_compute, info)[0][-1].status == JobStatus.SUCCESS
    intervals = sorted(json.loads(line) for line in (tmp_path / "intervals.jsonl").read_text().splitlines())
    assert len(intervals) == 3
    for (_, end), (next_start, _) in itertools.pairwise(intervals):
        assert end <= next_start, f"jobs overlapped: {intervals}"


RENDEZVOUS = """
import os, sys, time
me, other = sys.argv[1], sys.argv[2]
open(os.path.join(os.environ["RENDEZVOUS_DIR"], me), "w").close()
deadline = time.time() + 60
while not os.path.exists(os.path.join(os.environ["RENDEZVOUS_DIR"], other)):
    if time.time() > deadline:
        sys.exit("never saw the other job running")
    time.sleep(0.05)
print("met", other)
"""


def test_two_slots_run_two_jobs_at_once(
    tmp_path: Path, job_env: dict[str, str], make_bundle: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job waits until the other has started: only possible if both hold a slot at the same time."""
    monkeypatch.setenv("RENDEZVOUS_DIR", str(tmp_path))
    client = get_client("local", {"workDir": str(tmp_path / "compute"), "processes": 2})
    a = client.start_job(ComputeJob(bundle=make_bundle(RENDEZVOUS, command=["python", "main.py", "a", "b"])))
    b = client.start_job(ComputeJob(bundle=make_bundle(RENDEZVOUS, command=["python", "main.py", "b", "a"])))
    for info, other in ((a, "b"), (b, "a")):
        updates, output = run_to_end(client, info)  # type: ignore[arg-type]
        assert updates[-1].status == JobStatus.SUCCESS, output
        assert f"met {other}" in output


def start_stubborn(
    client: LocalCompute, make_bundle: Callable[..., Path], kill_leftovers: list[int]
) -> tuple[dict[str, Any], Path, list[int]]:
    """Start a job whose processes ignore SIGINT; wait until it runs. Returns (job_info, job dir, its pids)."""
    info = client.start_job(ComputeJob(bundle=make_bundle(STUBBORN)))
    job_dir = Path(info["jobDir"])
    wait_for(lambda: (job_dir / "work" / "pids.json").exists(), what="the operation to start")
    pids: list[int] = json.loads((job_dir / "work" / "pids.json").read_text())
    kill_leftovers.extend(pids)
    return info, job_dir, pids


def test_cancel_kills_everything_even_what_ignores_sigint(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], kill_leftovers: list[int]
) -> None:
    info, job_dir, pids = start_stubborn(local_compute, make_bundle, kill_leftovers)
    pids.append(json.loads((job_dir / "state.json").read_text())["pgid"])  # the runner

    local_compute.cancel_job(info)
    updates, output = run_to_end(local_compute, info)

    assert updates[-1].status == JobStatus.CANCELED
    assert "ready" in output
    assert last_line(output) == "deepforge: job canceled"
    wait_for(lambda: all(pid_gone(p) for p in pids), timeout=10, what="every job process to be gone")
    assert local_compute.get_status(info) == JobStatus.CANCELED


def test_cancel_a_queued_job(local_compute: LocalCompute, make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    blocker = local_compute.start_job(ComputeJob(bundle=make_bundle(STUBBORN)))
    wait_for(lambda: local_compute.get_status(blocker) == JobStatus.RUNNING, what="the first job to run")
    queued = local_compute.start_job(ComputeJob(bundle=make_bundle("open('ran', 'w')")))
    assert local_compute.get_status(queued) == JobStatus.QUEUED
    local_compute.cancel_job(queued)
    assert run_to_end(local_compute, queued)[0][-1].status == JobStatus.CANCELED
    local_compute.cancel_job(blocker)
    assert run_to_end(local_compute, blocker)[0][-1].status == JobStatus.CANCELED
    assert not (Path(queued["jobDir"]) / "work" / "ran").exists()


def flock_pids(path: Path) -> tuple[list[int], list[int]]:
    """The pids holding and the pids waiting for an ``flock`` on ``path``, from ``/proc/locks``."""
    st = path.stat()
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    held: list[int] = []
    waiting: list[int] = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()[1:]  # "1: [->] FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        blocked = fields[0] == "->"
        fields = fields[1:] if blocked else fields
        if fields[0] == "FLOCK" and fields[4] == ident:
            (waiting if blocked else held).append(int(fields[3]))
    return held, waiting


def test_only_the_head_of_the_queue_polls_the_slots(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], kill_leftovers: list[int]
) -> None:
    """Queued supervisors wait in the kernel for their turn at the head of the queue instead of each trying
    every slot ten times a second (a 500-operation fan-out queues 499 of them: issue 14), and one that waits
    there is still canceled."""
    blocker, _, _ = start_stubborn(local_compute, make_bundle, kill_leftovers)
    queued = [local_compute.start_job(ComputeJob(bundle=make_bundle(f"open('ran', 'w')  # {i}"))) for i in range(3)]
    queue_lock = local_compute.work_dir / "slots" / "queue.lock"
    wait_for(
        lambda: queue_lock.exists() and sum(map(len, flock_pids(queue_lock))) == 3,
        what="the three queued supervisors at the queue lock",
    )
    held, waiting = flock_pids(queue_lock)
    assert len(held) == 1
    assert len(waiting) == 2
    pids = {json.loads((Path(info["jobDir"]) / "state.json").read_text())["supervisorPid"]: info for info in queued}
    assert set(pids) == {*held, *waiting}

    behind = pids[waiting[0]]
    local_compute.cancel_job(behind)
    assert run_to_end(local_compute, behind)[0][-1].status == JobStatus.CANCELED
    local_compute.cancel_job(blocker)
    assert run_to_end(local_compute, blocker)[0][-1].status == JobStatus.CANCELED
    for info in queued:
        if info is not behind:
            assert run_to_end(local_compute, info)[0][-1].status == JobStatus.SUCCESS
    assert not (Path(behind["jobDir"]) / "work" / "ran").exists()


OWNER = """
import json, sys, time
from pathlib import Path
from deepforge_adapters.compute import ComputeJob, get_client
client = get_client("local", {"workDir": sys.argv[1], "processes": 1})
infos = [client.start_job(ComputeJob(bundle=Path(b))) for b in sys.argv[2:]]
print(json.dumps(infos), flush=True)
time.sleep(600)
"""


def test_queue_survives_the_owner_being_killed(
    tmp_path: Path, job_env: dict[str, str], make_bundle: Callable[..., Path]
) -> None:
    slow = "import time; time.sleep(0.5); print('first done')"
    bundles = [make_bundle(slow), make_bundle("print('second done')")]
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OWNER), str(tmp_path / "compute"), *map(str, bundles)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        infos = json.loads(owner.stdout.readline())
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()

    fresh = get_client("local", {"workDir": str(tmp_path / "compute")})
    outputs = []
    for info in infos:
        updates, output = run_to_end(fresh, info)  # type: ignore[arg-type]
        assert updates[-1].status == JobStatus.SUCCESS, output
        outputs.append(output)
    assert "first done" in outputs[0]
    assert "second done" in outputs[1]


def test_dead_supervisor_is_reported_as_failed(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], kill_leftovers: list[int]
) -> None:
    info, job_dir, _ = start_stubborn(local_compute, make_bundle, kill_leftovers)
    supervisor = json.loads((job_dir / "supervisor.pid").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: pid_gone(supervisor), what="the supervisor to die")

    assert local_compute.get_status(info) == JobStatus.FAILED
    reason = local_compute.get_failure_reason(info)
    assert reason is not None and f"supervisor (pid {supervisor}) died" in reason
    local_compute.cancel_job(info)  # cleans up the orphaned job group
    assert local_compute.get_status(info) == JobStatus.CANCELED


def test_start_job_records_a_supervisor_that_is_neither_its_child_nor_in_its_session(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], kill_leftovers: list[int]
) -> None:
    """start_job no longer waits for the supervisor to fork itself away (a /bin/sh starts it in the background):
    the pid file is still written before start_job returns, names the supervisor itself, and that process is
    an orphan (the submitter, which holds the key, is not its parent) in a session of its own."""
    info = local_compute.start_job(ComputeJob(bundle=make_bundle(STUBBORN)))
    job_dir = Path(info["jobDir"])
    recorded = json.loads((job_dir / "supervisor.pid").read_text())  # there as soon as start_job returns
    supervisor = recorded["pid"]
    kill_leftovers.append(supervisor)
    wait_for(lambda: (job_dir / "work" / "pids.json").exists(), what="the operation to start")
    kill_leftovers.extend(json.loads((job_dir / "work" / "pids.json").read_text()))

    with open(f"/proc/{supervisor}/cmdline", "rb") as f:
        assert b"deepforge_adapters.compute.local_supervisor" in f.read()
    assert _ppid(supervisor) != os.getpid()
    assert os.getsid(supervisor) != os.getsid(0)
    assert recorded["start"]  # the kernel start time, read when it was recorded (guards against pid reuse)
    local_compute.cancel_job(info)
    assert run_to_end(local_compute, info)[0][-1].status == JobStatus.CANCELED


def test_same_bundle_is_the_same_job_and_purge_removes_it(
    local_compute: LocalCompute, make_bundle: Callable[..., Path]
) -> None:
    bundle = make_bundle("print('once')", enable_job_caching=True)
    first = local_compute.start_job(ComputeJob(bundle=bundle))
    run_to_end(local_compute, first)
    again = local_compute.start_job(ComputeJob(bundle=bundle))
    assert again["hash"] == first["hash"]
    assert local_compute.get_console_output(again).count("once") == 1  # not run twice

    local_compute.purge_job(first)
    assert not Path(first["jobDir"]).exists()
    assert local_compute.get_status(first) == JobStatus.NOT_FOUND


def test_a_failed_job_runs_again_when_restarted(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "fixed"
    monkeypatch.setenv("FLAG_FILE", str(flag))
    bundle = make_bundle("import os, sys\nsys.exit(0 if os.path.exists(os.environ['FLAG_FILE']) else 'not yet')\n")
    first = local_compute.start_job(ComputeJob(bundle=bundle))
    assert run_to_end(local_compute, first)[0][-1].status == JobStatus.FAILED
    flag.touch()
    again = local_compute.start_job(ComputeJob(bundle=bundle))
    assert again["hash"] == first["hash"]
    updates, output = run_to_end(local_compute, again)
    assert updates[-1].status == JobStatus.SUCCESS
    assert "not yet" not in output  # a fresh job directory, not the old output


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_a_killed_runner_does_not_leave_its_operation_running(
    local_compute: LocalCompute, make_bundle: Callable[..., Path], kill_leftovers: list[int]
) -> None:
    info, job_dir, pids = start_stubborn(local_compute, make_bundle, kill_leftovers)
    shim = json.loads((job_dir / "state.json").read_text())["pgid"]  # the job shim (deepforge_adapters.process)
    runner = next(p for p in descendants(shim) if _ppid(p) == shim)

    os.kill(runner, signal.SIGKILL)  # the runner cannot clean up; the job's shim must
    updates, _ = run_to_end(local_compute, info)

    assert updates[-1].status == JobStatus.FAILED
    wait_for(lambda: all(pid_gone(p) for p in pids), timeout=10, what="the orphaned operation to be killed")
