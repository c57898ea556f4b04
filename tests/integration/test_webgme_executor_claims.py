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
