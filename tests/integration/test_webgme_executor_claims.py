"""The executor hands each queued job to one worker only, however many poll at the same moment.

webgme-engine 2.31.0's ``ExecutorMaster.startQueuedJobs`` claims a job with ``updateOne({_id, status:
'CREATED'}, ...)`` and tests the driver's result object (always truthy), so two workers whose polls read the
queue before either claim both got the job and ran it (found by the soak run: one job started on three
workers within 0.2 s).  ``webgme-config/executor_claims.js`` makes a claim count only when it changed the job.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import Counter
from typing import Any

import pytest
from deepforge_adapters.errors import WebGMEError
from deepforge_adapters.webgme.executor import ExecutorClient

pytestmark = pytest.mark.integration

WORKERS = 6
JOBS = 12
ROUNDS = 5


def _poll_at_once(url: str, created: set[str]) -> list[list[str]]:
    """``WORKERS`` polls released together; the jobs of ``created`` each one was handed."""
    barrier = threading.Barrier(WORKERS)
    answers: list[list[str]] = []
    lock = threading.Lock()

    def poll(client_id: str) -> None:
        client = ExecutorClient(url)
        barrier.wait(timeout=30)
        answer = client.poll_worker(client_id, JOBS, [], [])
        with lock:
            answers.append([h for h in answer.get("jobsToStart", []) if h in created])

    threads = [threading.Thread(target=poll, args=(f"claims_{uuid.uuid4().hex[:8]}",)) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_concurrent_polls_never_hand_out_a_job_twice(webgme_server: Any) -> None:
    executor = ExecutorClient(webgme_server.url)
    handed: Counter[str] = Counter()
    created: set[str] = set()
    for _ in range(ROUNDS):
        jobs = [hashlib.sha1(uuid.uuid4().bytes).hexdigest() for _ in range(JOBS)]
        for job in jobs:
            executor.create_job(job)
        created.update(jobs)
        answers = _poll_at_once(webgme_server.url, created)
        for answer in answers:
            handed.update(answer)
    twice = {job: n for job, n in handed.items() if n > 1}
    assert not twice, f"{len(twice)} of {len(created)} jobs were handed to more than one worker: {twice}"
    assert set(handed) == created  # and every job went to someone


def test_a_final_report_is_applied_only_while_the_job_runs_under_its_reporter(webgme_stack_factory: Any) -> None:
    """The 1,000-job soak run counted a job whose first worker's late report was applied after the server had
    requeued it and a second worker had started it.  ``executor_claims.js`` fences ``/update`` by worker."""
    stack = webgme_stack_factory()  # its own server: the polls below claim every queued job
    executor = ExecutorClient(stack.url)
    job = hashlib.sha1(uuid.uuid4().bytes).hexdigest()
    executor.create_job(job)
    assert job in executor.poll_worker("worker_A", 1, [], []).get("jobsToStart", [])

    def refused(body: dict[str, Any]) -> bool:
        try:
            executor.update_job(job, body)
        except WebGMEError as exc:
            return exc.status_code == 404
        return False

    assert refused({"status": "SUCCESS", "worker": "worker_B"})  # not its job
    assert executor.get_info(job)["status"] == "RUNNING"
    executor.update_job(job, {"status": "SUCCESS", "worker": "worker_A", "resultHashes": {"r": "1" * 40}})
    assert executor.get_info(job)["status"] == "SUCCESS"
    assert refused({"status": "FAILED_TO_EXECUTE", "worker": "worker_A"})  # a second, late report
    info = executor.get_info(job)
    assert info["status"] == "SUCCESS" and info["resultHashes"] == {"r": "1" * 40}

    unfenced = hashlib.sha1(uuid.uuid4().bytes).hexdigest()  # the Node worker's updates name no worker
    executor.create_job(unfenced)
    executor.poll_worker("worker_A", 1, [], [])
    executor.update_job(unfenced, {"status": "SUCCESS"})
    assert executor.get_info(unfenced)["status"] == "SUCCESS"
