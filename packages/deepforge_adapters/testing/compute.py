"""The compute conformance suite: what every compute backend must do, as pytest tests.

A backend, built in or third party, runs it with one fixture, ``compute_backend``, returning a
:class:`ComputeBackend` (how to make a client, how to turn files and a command into a job the backend
can start, the storage results go to, a directory the job's processes can see)::

    import pytest
    from deepforge_adapters.testing.compute import ComputeBackend, ComputeConformance

    class TestMyCompute(ComputeConformance):
        @pytest.fixture
        def compute_backend(self, tmp_path):
            return ComputeBackend("my-compute", {"queue": "debug"}, make_job=..., storage=..., shared_dir=tmp_path)

The jobs are one small Python program (:data:`JOB_PY`, standard library only) that prints, waits for
signal files in ``shared_dir`` (so no test depends on timing), fails or writes ``results.json`` as told.
Every wait in it gives up after :data:`JOB_PATIENCE` seconds, so a broken backend fails a test instead of
hanging it.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..compute import ComputeClient, ComputeJob, JobStatus, JobUpdate, get_client
from ..errors import ComputeError
from ..storage import DataInfo, StorageClient

#: Seconds the job program waits for a signal file before it gives up (exit code 90).
JOB_PATIENCE = 240

#: The job: ``job.py MODE SHARED_DIR``; MODE is ``two-part``, ``fail`` or ``cancel``.
JOB_PY = f"""\
import os, shutil, sys, time

mode, shared = sys.argv[1], sys.argv[2]
out = sys.stdout.buffer


def say(data):
    out.write(data)
    out.flush()


def wait(name):
    deadline = time.monotonic() + {JOB_PATIENCE}
    while not os.path.exists(os.path.join(shared, name)):
        if time.monotonic() > deadline:
            say(b"gave up waiting for " + name.encode() + b"\\n")
            sys.exit(90)
        time.sleep(0.05)


say(b"started\\n")
wait("go")
for i in range(20):
    if i % 3:
        say(b"line %d\\n" % i)
    else:  # stderr, interleaved with stdout in the order written
        sys.stderr.buffer.write(b"line %d\\n" % i)
        sys.stderr.flush()
if mode == "cancel":
    say(b"waiting to be canceled\\n")
    wait("never")
if mode == "fail":
    say(b"Error: out of cheese\\n")
    sys.exit(3)
say(b"part one \\xe2")  # the first byte of a euro sign; the rest comes after "go2"
wait("go2")
say(b"\\x82\\xac part two \\xc3\\xbc\\n")
shutil.copy("results.in.json", "results.json")
say(b"done\\n")
"""

LINES = "".join(f"line {i}\n" for i in range(20))
#: The whole output of a ``two-part`` job.
TWO_PART_OUTPUT = f"started\n{LINES}part one \u20ac part two \u00fc\n" + "done\n"

#: ``make_job(files, argv)``: a job this backend can start whose command ``argv`` runs in a directory
#: holding ``files`` (relative path -> bytes); the ``results.json`` it writes there is the job's results.
MakeJob = Callable[[Mapping[str, bytes], Sequence[str]], ComputeJob]


@dataclass
class ComputeBackend:
    """What the suite needs to know about one backend; the ``compute_backend`` fixture returns one."""

    #: The id the backend is registered under (``deepforge.compute`` entry point or built in).
    backend_id: str
    #: The client's config.
    config: Mapping[str, Any]
    make_job: MakeJob
    #: Where the data a job's results name lives; the suite writes a file there and reads it back.
    storage: StorageClient
    #: A directory the job's processes see at the same path (its signal files are written there).
    shared_dir: Path
    #: The interpreter the job's command starts (it needs the standard library only).
    python: str = sys.executable
    #: Polling for the tests (the backend's own defaults suit production, not a test suite).
    poll_interval: float = 0.05
    max_poll_interval: float = 0.25

    def client(self) -> ComputeClient:
        """A new client, as another process (a restarted plugin) would make one."""
        made = get_client(self.backend_id, dict(self.config))
        made.poll_interval = self.poll_interval
        made.max_poll_interval = self.max_poll_interval
        return made

    def signal(self, name: str) -> None:
        (self.shared_dir / name).touch()

    def start(self, client: ComputeClient, mode: str, results: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Start the job program in ``mode``; returns the job_info, after checking it is storable."""
        files = {
            "job.py": JOB_PY.encode(),
            "results.in.json": json.dumps(results or {}).encode(),
            "nonce.txt": uuid.uuid4().hex.encode(),  # every job is a new one, even on content-addressed backends
        }
        job = self.make_job(files, [self.python, "job.py", mode, str(self.shared_dir)])
        info = client.start_job(job)
        assert json.loads(json.dumps(info)) == info, "job_info must be JSON (it is stored in the model)"
        return info


def _output(updates: Sequence[JobUpdate]) -> str:
    return "".join(u.output for u in updates if u.kind == "output")


def _follow(
    client: ComputeClient,
    info: Mapping[str, Any],
    on_output: Callable[[str], None] | None = None,
    cursor: Any = None,
) -> list[JobUpdate]:
    """All updates of one watch; ``on_output(output so far)`` after each output update."""
    updates: list[JobUpdate] = []
    for update in client.watch(info, cursor=cursor):
        updates.append(update)
        if update.kind == "output" and on_output is not None:
            on_output(_output(updates))
    return updates


def _signaller(backend: ComputeBackend, *steps: tuple[str, str]) -> Callable[[str], None]:
    """Touch each signal file once the output so far contains its marker, in order."""
    pending = list(steps)

    def on_output(text: str) -> None:
        while pending and pending[0][0] in text:
            backend.signal(pending.pop(0)[1])

    return on_output


def _check_events(updates: Sequence[JobUpdate]) -> None:
    """Status updates only with unfinished statuses; exactly one end, the last update."""
    kinds = [u.kind for u in updates]
    assert kinds.count("end") == 1 and kinds[-1] == "end", kinds
    assert set(kinds) <= {"status", "output", "end"}, kinds
    for update in updates[:-1]:
        if update.kind == "status":
            assert update.status is not None and not update.status.finished, update
    statuses = [u.status for u in updates if u.kind == "status"]
    assert all(a != b for a, b in itertools.pairwise(statuses)), f"repeated status: {statuses}"


class ComputeConformance:
    """The tests; a subclass provides the ``compute_backend`` fixture (see the module docstring)."""

    @pytest.fixture
    def compute_backend(self) -> ComputeBackend:
        raise NotImplementedError("provide a compute_backend fixture returning a ComputeBackend")

    @pytest.fixture
    def compute(self, compute_backend: ComputeBackend) -> Iterator[ComputeClient]:
        yield compute_backend.client()

    def test_events_in_order_output_complete_and_results(
        self, compute_backend: ComputeBackend, compute: ComputeClient
    ) -> None:
        payload = b"results are readable\n" * 1000
        data = compute_backend.storage.put_file_stream(f"conformance/{uuid.uuid4().hex}", io.BytesIO(payload))
        results = {"answer": {"type": "bytes", "dataInfo": data.to_json()}}
        info = compute_backend.start(compute, "two-part", results)
        updates = _follow(compute, info, _signaller(compute_backend, ("started", "go"), ("part one", "go2")))

        _check_events(updates)
        # "part one" is printed after the watcher saw "started": the poll that reads it saw the job running
        part_one = next(i for i in range(len(updates)) if "part one" in _output(updates[: i + 1]))
        statuses = [u.status for u in updates[:part_one] if u.kind == "status"]
        assert statuses and statuses[-1] == JobStatus.RUNNING, updates
        assert updates[-1] == JobUpdate("end", status=JobStatus.SUCCESS), updates[-1]
        # in order (stderr merged as written), complete, nothing repeated, the split euro sign whole
        assert _output(updates) == TWO_PART_OUTPUT
        assert sum(u.kind == "output" for u in updates) >= 2, "output is streamed, not given at the end"
        assert compute.get_console_output(info) == TWO_PART_OUTPUT
        assert compute.get_status(info) == JobStatus.SUCCESS
        assert compute.get_failure_reason(info) is None

        got = compute.get_results_info(info)
        assert got == results
        with compute_backend.storage.get_file_stream(DataInfo.from_json(got["answer"]["dataInfo"])) as f:
            assert f.read() == payload
        compute.purge_job(info)

    def test_failure_has_a_readable_reason(self, compute_backend: ComputeBackend, compute: ComputeClient) -> None:
        info = compute_backend.start(compute, "fail")
        updates = _follow(compute, info, _signaller(compute_backend, ("started", "go")))

        _check_events(updates)
        end = updates[-1]
        assert end.status == JobStatus.FAILED, end
        assert end.reason and "out of cheese" in end.reason, end.reason
        assert "Error: out of cheese" in _output(updates)
        assert compute.get_status(info) == JobStatus.FAILED
        assert compute.get_failure_reason(info) == end.reason
        compute.purge_job(info)

    def test_cancel_while_running_ends_canceled(self, compute_backend: ComputeBackend, compute: ComputeClient) -> None:
        info = compute_backend.start(compute, "cancel")
        canceled: list[bool] = []

        def on_output(text: str) -> None:
            if "started" in text:
                compute_backend.signal("go")
            if "waiting to be canceled" in text and not canceled:
                compute.cancel_job(info)
                canceled.append(True)

        updates = _follow(compute, info, on_output)

        _check_events(updates)
        assert canceled, _output(updates)
        assert updates[-1].status == JobStatus.CANCELED, updates[-1]  # canceled, not failed
        assert "gave up" not in _output(updates)
        assert compute.get_status(info) == JobStatus.CANCELED
        compute.purge_job(info)

    def test_a_new_watcher_resumes_from_the_cursor(
        self, compute_backend: ComputeBackend, compute: ComputeClient
    ) -> None:
        info = compute_backend.start(compute, "two-part")
        first: list[JobUpdate] = []
        watch = compute.watch(info)
        for update in watch:
            first.append(update)
            if update.kind == "output" and "started" in _output(first):
                compute_backend.signal("go")
            if update.kind == "output" and "part one" in _output(first):
                break
        watch.close()  # the watcher dies mid-job, between the two bytes of the euro sign
        assert first[-1].kind == "output", first
        cursor = json.loads(json.dumps(first[-1].cursor))  # stored with the job_info, read back

        compute_backend.signal("go2")
        again = compute_backend.client()  # another process
        rest = _follow(again, json.loads(json.dumps(info)), cursor=cursor)

        _check_events([*first, *rest])
        assert _output(first) + _output(rest) == TWO_PART_OUTPUT  # the rest, nothing repeated
        assert rest[-1] == JobUpdate("end", status=JobStatus.SUCCESS), rest[-1]
        assert [u for u in rest if u.kind == "status"] == [], "the watcher had seen 'running' already"
        whole = _follow(again, info)  # and a watch from the start replays it all
        assert _output(whole) == TWO_PART_OUTPUT and whole[-1] == rest[-1]
        again.purge_job(info)

    @pytest.mark.parametrize("bad", [{}, {"hash": "../../etc", "id": "../1", "jobDir": "/", "scratchDir": "/"}])
    def test_job_info_it_did_not_make_is_refused(
        self, compute_backend: ComputeBackend, compute: ComputeClient, bad: dict[str, Any]
    ) -> None:
        calls: list[Callable[[Mapping[str, Any]], Any]] = [
            compute.get_status,
            compute.cancel_job,
            compute.get_results_info,
            lambda job_info: list(compute.watch(job_info)),
        ]
        for call in calls:
            with pytest.raises(ComputeError) as raised:
                call(bad)
            message = str(raised.value)
            assert message.startswith(f"{compute.id} compute") and "job_info" in message, message

    def test_a_cursor_it_did_not_make_is_refused(self, compute_backend: ComputeBackend, compute: ComputeClient) -> None:
        with pytest.raises(ComputeError, match="cursor"):
            list(compute.watch({"hash": "0" * 40, "id": 1}, cursor={"poll": None}))
