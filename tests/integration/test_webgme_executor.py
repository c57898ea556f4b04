"""ExecutorClient against a real WebGME server: the whole job/worker protocol, and its errors."""

from __future__ import annotations

import hashlib
import os

import pytest
from deepforge_adapters.errors import WebGMEError
from deepforge_adapters.webgme import ExecutorClient, is_finished
from deepforge_dev.stack import WebGMEStack

from tests.fixtures.webgme import StackFactory

pytestmark = pytest.mark.integration


def new_hash() -> str:
    return hashlib.sha1(os.urandom(16)).hexdigest()


@pytest.fixture
def executor(webgme_server: WebGMEStack) -> ExecutorClient:
    return ExecutorClient(webgme_server.url)


def test_job_lifecycle_create_claim_output_update(executor: ExecutorClient) -> None:
    job = new_hash()
    info = executor.create_job(job)
    assert info["status"] == "CREATED" and info["hash"] == job and info["secret"]
    again = executor.create_job(job)
    assert again["status"] == "CREATED" and "secret" not in again  # existing job: returned as cached
    assert executor.get_info(job)["status"] == "CREATED"
    assert job in executor.list_jobs(status="CREATED")

    worker = f"w-{job[:6]}"
    claimed: list[str] = []
    for _ in range(5):  # other tests' jobs may be queued too; claim until ours comes
        answer = executor.poll_worker(worker, 10, [], claimed)
        claimed += answer["jobsToStart"]
        if job in claimed:
            break
    assert job in claimed and answer["refreshPeriod"] == 250
    assert executor.get_info(job)["status"] == "RUNNING" and executor.get_info(job)["worker"] == worker
    assert worker in executor.get_workers()

    executor.post_output(job, 0, "line 1\n")
    executor.post_output(job, 1, "line 2\n")
    executor.post_output(job, 1, "line 2 again\n")  # same number: overwritten, not duplicated
    outputs = executor.get_output(job)
    assert [(o["outputNumber"], o["output"]) for o in outputs] == [(0, "line 1\n"), (1, "line 2 again\n")]
    assert [o["outputNumber"] for o in executor.get_output(job, start=1)] == [1]
    assert [o["outputNumber"] for o in executor.get_output(job, start=0, end=1)] == [0]

    executor.update_job(job, {"status": "SUCCESS", "resultHashes": {"stdout": new_hash()}, "outputNumber": 1})
    final = executor.get_info(job)
    assert final["status"] == "SUCCESS" and is_finished(final["status"]) and final["resultHashes"]
    assert job in executor.list_jobs(status="SUCCESS")


def test_labels_only_reach_workers_that_have_them(executor: ExecutorClient) -> None:
    job = new_hash()
    executor.create_job(job, labels=["gpu-label-test"])
    plain = executor.poll_worker("plain-worker", 10, [], [])
    assert job not in plain["jobsToStart"]
    gpu = executor.poll_worker("gpu-worker", 10, ["gpu-label-test"], [])
    assert job in gpu["jobsToStart"]


def test_cancel_needs_the_secret_and_reaches_the_worker(executor: ExecutorClient) -> None:
    job = new_hash()
    secret = executor.create_job(job, labels=["cancel-test"])["secret"]
    assert job in executor.poll_worker("canceler", 1, ["cancel-test"], [])["jobsToStart"]
    with pytest.raises(WebGMEError) as err:
        executor.cancel_job(job, "wrong-secret")
    assert err.value.status_code == 403 and "cancel" in str(err.value)
    executor.cancel_job(job, secret)
    assert executor.poll_worker("canceler", 0, ["cancel-test"], [job])["jobsToCancel"] == [job]


def test_unknown_job_errors(executor: ExecutorClient) -> None:
    missing = new_hash()
    # get_output first: the server stores a posted chunk even when it then answers 404 (no such job)
    for call in (lambda: executor.get_output(missing), lambda: executor.get_info(missing),
                 lambda: executor.post_output(missing, 0, "x")):  # fmt: skip
        with pytest.raises(WebGMEError) as err:
            call()
        assert err.value.status_code == 404 and missing in str(err.value)


def test_nonce_is_required_when_configured(webgme_stack_factory: StackFactory) -> None:
    stack: WebGMEStack = webgme_stack_factory(nonce="n0nce-s3cret")
    with pytest.raises(WebGMEError) as err:
        ExecutorClient(stack.url, nonce="wrong").list_jobs()
    assert err.value.status_code == 403
    assert "n0nce-s3cret" not in str(err.value) and "wrong" not in str(err.value)
    with pytest.raises(WebGMEError) as err:
        ExecutorClient(stack.url).poll_worker("w", 1, [], [])
    assert err.value.status_code == 403
    good = ExecutorClient(stack.url, nonce="n0nce-s3cret")
    job = new_hash()
    assert good.create_job(job)["status"] == "CREATED"
    assert job in good.poll_worker("w", 1, [], [])["jobsToStart"]


def test_executor_auth_refuses_guests(webgme_stack_factory: StackFactory) -> None:
    stack: WebGMEStack = webgme_stack_factory(executor_auth=True)
    with pytest.raises(WebGMEError) as err:
        ExecutorClient(stack.url).list_jobs()
    assert err.value.status_code in (401, 403)


def test_api_token_authenticates_against_executor_auth(webgme_stack_factory: StackFactory) -> None:
    stack = webgme_stack_factory(webgme_auth=True, executor_auth=True)
    stack.add_user("alice", "pw-alice")
    token = stack.create_token("alice", "pw-alice")
    alice = ExecutorClient(stack.url, api_token=token)
    job = new_hash()
    info = alice.create_job(job)
    assert info["userId"] == ["alice"] and job in alice.list_jobs()
    assert job in alice.poll_worker("alice-worker", 1, [], [])["jobsToStart"]
    with pytest.raises(WebGMEError) as err:
        ExecutorClient(stack.url).list_jobs()  # a guest
    assert err.value.status_code == 403
    # webgme-engine 2.31.0 quirk: an unknown x-api-token is not refused; it becomes a user without an id,
    # who owns (and so sees and claims) nothing.
    stranger = ExecutorClient(stack.url, api_token="not-a-token")
    assert job not in stranger.list_jobs()
    assert stranger.poll_worker("stranger", 1, [], [])["jobsToStart"] == []
