"""The run loop's scale helpers: which events a turn records, and how many jobs a run keeps in flight."""

import pytest
from deepforge_adapters.compute import JobStatus, JobUpdate
from deepforge_adapters.errors import ConfigError
from deepforge_plugins.engine import DEFAULT_MAX_RUNNING_JOBS, MAX_RUNNING_JOBS_ENV, coalesce_updates, max_running_jobs


def test_a_status_change_of_a_job_that_ended_in_the_same_turn_is_not_recorded():
    events = [
        ("/a", JobUpdate("status", status=JobStatus.RUNNING)),
        ("/b", JobUpdate("status", status=JobStatus.RUNNING)),
        ("/a", JobUpdate("output", output="hi\n")),
        ("/a", JobUpdate("end", status=JobStatus.SUCCESS)),
    ]
    assert coalesce_updates(events) == [events[1], events[2], events[3]]  # order kept, output kept


def test_max_running_jobs_comes_from_the_environment_and_bad_values_name_the_variable():
    assert max_running_jobs({}) == DEFAULT_MAX_RUNNING_JOBS
    assert max_running_jobs({MAX_RUNNING_JOBS_ENV: " 7 "}) == 7
    for bad in ("0", "-3", "lots", "1.5"):
        with pytest.raises(ConfigError, match=MAX_RUNNING_JOBS_ENV):
            max_running_jobs({MAX_RUNNING_JOBS_ENV: bad})
