"""``ray`` compute's reading of Ray's driver log (no server: the log as Ray writes it, in chunks).

Ray's own "Running entrypoint" line may land before our start mark or anywhere in the job's first output;
the results line ends the log and never reaches the output; chunk boundaries fall anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from deepforge_adapters.compute import get_client
from deepforge_adapters.compute.ray import (
    READ_LIMIT,
    RESULTS_MARK,
    START_MARK,
    entrypoint,
    job_stream,
    ray_line,
    read_output,
    read_results,
    resources_from_labels,
)
from deepforge_adapters.errors import ComputeError

RAY = ray_line("deepforge-" + "a" * 40, "printf start; run")
PREAMBLE = b"2026-12-01 14:17:23,050\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
RESULTS = {"out": {"type": "int", "dataInfo": {"backend": "local", "data": {"filename": "x"}}}}


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    return iter([data[i : i + size] for i in range(0, len(data), size)])


def output(log: bytes, size: int = 7, finished: bool = True) -> bytes:
    return read_output(job_stream(chunked(log, size), RAY, finished), 0, finished)[0]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 100_000])
@pytest.mark.parametrize(
    "log",
    [
        PREAMBLE + RAY + START_MARK + b"hello\nworld\n",  # Ray's line first
        PREAMBLE + START_MARK + RAY + b"hello\nworld\n",  # after our mark
        PREAMBLE + START_MARK + b"hello\n" + RAY + b"world\n",  # after the job's first line
    ],
)
def test_the_output_is_the_jobs_alone_wherever_rays_line_lands(log: bytes, size: int) -> None:
    assert output(log + RESULTS_MARK + json.dumps(RESULTS).encode() + b"\n", size) == b"hello\nworld\n"
    assert output(log, size) == b"hello\nworld\n"
    assert read_results(job_stream(chunked(log + RESULTS_MARK + b'{"a": 1}\n', size), RAY, True)) == b'{"a": 1}'


def test_nothing_is_output_before_the_command_starts_or_while_rays_line_is_still_to_come() -> None:
    assert output(PREAMBLE, finished=False) == b""
    assert output(PREAMBLE + START_MARK + b"early\n", finished=False) == b""  # Ray's line may still come first
    assert output(PREAMBLE + START_MARK + b"early\n", finished=True) == b"early\n"


def test_a_running_jobs_tail_that_could_start_the_results_line_is_held_back() -> None:
    log = PREAMBLE + RAY + START_MARK + b"line one\n"
    data, offset, more = read_output(job_stream(chunked(log, 5), RAY, False), 0, False)
    assert (data, offset, more) == (b"line one", 8, False)
    rest = log + b"line two\n"
    data, offset, more = read_output(job_stream(chunked(rest, 5), RAY, False), offset, False)
    assert (data, offset) == (b"\nline two", 17)
    final = rest + RESULTS_MARK + b"{}\n"
    assert read_output(job_stream(chunked(final, 5), RAY, True), offset, True) == (b"\n", 18, False)


def test_a_large_output_comes_in_capped_parts() -> None:
    body = b"x" * (READ_LIMIT + 10)
    log = RAY + START_MARK + body
    first, offset, more = read_output(job_stream(iter([log]), RAY, True), 0, True)
    assert len(first) == READ_LIMIT and more
    second, offset, more = read_output(job_stream(iter([log]), RAY, True), offset, True)
    assert first + second == body and not more and offset == len(body)


def test_the_last_results_line_counts_and_a_mark_the_job_printed_does_not() -> None:
    forged = RESULTS_MARK + b'{"forged": 1}\n'
    log = RAY + START_MARK + forged + b"more output\n" + RESULTS_MARK + b'{"real": 1}\n'
    assert read_results(job_stream(chunked(log, 4), RAY, True)) == b'{"real": 1}'
    assert read_results(job_stream(iter([RAY + START_MARK + b"no results\n"]), RAY, True)) is None


def test_the_entrypoint_hands_the_credentials_on_fd_3_and_removes_the_file() -> None:
    plain = entrypoint(["python3", "job.py", "a b"], with_credentials=False)
    assert "'a b'" in plain and "CREDENTIALS" not in plain and plain.endswith("exit $s")
    secret = entrypoint(["python3", "-m", "deepforge_adapters.jobs.runner"], with_credentials=True)
    assert "{ rm -f .deepforge-credentials.json; DEEPFORGE_CREDENTIALS_FD=3 python3 -m" in secret
    assert secret.count("3< .deepforge-credentials.json") == 1


def test_labels_are_custom_resources() -> None:
    assert resources_from_labels("ray", ["a100", "slots=2.5"]) == {"a100": 1.0, "slots": 2.5}
    for bad in (["=1"], ["GPU"], ["x=many"], ["x=0"], ["x=-1"]):
        with pytest.raises(ComputeError, match="label"):
            resources_from_labels("ray", bad)


def test_job_info_it_did_not_make_is_refused_before_any_request() -> None:
    client = get_client("ray", {"dashboardUrl": "http://127.0.0.1:9"})
    for bad in ({"hash": "../x"}, {"hash": "a" * 40, "attempt": "1"}, {"hash": "a" * 40, "attempt": -1}):
        with pytest.raises(ComputeError, match="job_info"):
            client.get_status(bad)
