import pytest
from deepforge_plugins.dag import CycleError, JobState, Scheduler

# produce -> transform -> consume, and produce -> consume (fan-out)
EDGES = [("produce", "transform"), ("transform", "consume"), ("produce", "consume")]


def make() -> Scheduler:
    return Scheduler(["consume", "produce", "transform"], EDGES)


def test_only_sources_are_ready_at_start():
    assert make().ready() == ["produce"]


def test_dependents_start_when_all_inputs_arrived():
    s = make()
    s.start("produce")
    assert s.ready() == []
    s.finish("produce", JobState.SUCCESS)
    assert s.ready() == ["transform"]  # consume still waits for transform
    s.start("transform")
    s.finish("transform", JobState.SUCCESS)
    assert s.ready() == ["consume"]
    s.start("consume")
    assert not s.finished
    s.finish("consume", JobState.SUCCESS)
    assert s.finished and s.outcome() == JobState.SUCCESS


def test_independent_jobs_are_ready_together():
    s = Scheduler(["a", "b", "c"], [("a", "c"), ("b", "c")])
    assert s.ready() == ["a", "b"]
    s.start("a")
    s.start("b")
    assert s.running() == ["a", "b"]


def test_failure_stops_new_starts_but_waits_for_running_jobs():
    s = Scheduler(["a", "b", "c"], [("a", "c")])
    s.start("a")
    s.start("b")
    s.finish("a", JobState.FAILED)
    assert s.ready() == [] and not s.finished  # b still running
    s.finish("b", JobState.SUCCESS)
    assert s.finished and s.outcome() == JobState.FAILED


def test_cancel_request_ends_as_canceled():
    s = make()
    s.start("produce")
    s.request_cancel()
    assert s.ready() == [] and s.running() == ["produce"]
    s.finish("produce", JobState.CANCELED)
    assert s.finished and s.outcome() == JobState.CANCELED


def test_cycles_and_unknown_jobs_are_rejected():
    with pytest.raises(CycleError, match="a, b"):
        Scheduler(["a", "b"], [("a", "b"), ("b", "a")])
    with pytest.raises(CycleError):
        Scheduler(["a"], [("a", "a")])
    with pytest.raises(KeyError, match="ghost"):
        Scheduler(["a"], [("a", "ghost")])


def test_transitions_are_checked():
    s = make()
    with pytest.raises(ValueError, match="pending"):
        s.finish("produce", JobState.PENDING)
    s.start("produce")
    with pytest.raises(ValueError, match="running"):
        s.start("produce")
    s.finish("produce", JobState.SUCCESS)
    with pytest.raises(ValueError, match="already ended"):
        s.finish("produce", JobState.FAILED)


def test_resume_can_record_jobs_that_ended_unwatched():
    s = make()
    s.finish("produce", JobState.SUCCESS)  # found finished in the model
    assert s.ready() == ["transform"]
