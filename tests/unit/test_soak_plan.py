"""The soak run's seeded plans (no server): the same seed, the same workload and fault schedule."""

from __future__ import annotations

from pathlib import Path

from deepforge_dev.soak.faults import KINDS, schedule
from deepforge_dev.soak.report import percentiles
from deepforge_dev.soak.workload import WorkloadOptions, pipeline_spec, plan


def test_a_seed_replays_its_fault_schedule_and_every_kind_is_in_it() -> None:
    first, again, other = schedule(7, 50), schedule(7, 50), schedule(8, 50)
    assert first == again
    assert first != other
    assert len(first) == 50
    assert set(KINDS) <= {f.kind for f in first}
    assert sorted(f.kind for f in schedule(7, len(KINDS))) == sorted(KINDS)


def test_a_seed_replays_its_workload_of_exactly_the_jobs_asked() -> None:
    options = WorkloadOptions(jobs=1000)
    runs = plan(3, options)
    assert [(r.name, r.shape, r.compute, r.storage, r.operations) for r in runs] == [
        (r.name, r.shape, r.compute, r.storage, r.operations) for r in plan(3, options)
    ]
    regular = [r for r in runs if not r.hold]
    assert sum(len(r.operations) for r in regular) == 1000
    assert len([r for r in runs if r.hold]) == options.holds
    assert {r.shape for r in regular} == {"chain", "fanout"}
    assert {r.compute for r in regular} == {"gme", "local"} and {r.storage for r in regular} == {"gme", "s3"}
    ops = [op for r in regular for op in r.operations]
    assert any(op.fail for op in ops) and any(op.size for op in ops) and any(op.lines for op in ops)
    assert any(op.sleep for op in ops)


def test_operations_fail_on_purpose_only_where_nothing_is_downstream() -> None:
    for run in plan(11, WorkloadOptions(jobs=2000)):
        upstream = {name for op in run.operations for name in op.inputs}
        assert not [op.name for op in run.operations if op.fail and op.name in upstream]


def test_the_pipeline_spec_connects_every_input_and_logs_to_the_job_log(tmp_path: Path) -> None:
    run = plan(5, WorkloadOptions(jobs=30))[-1]
    spec = pipeline_spec(run, tmp_path / "jobs.log", tmp_path / "done")
    names = {op["name"] for op in spec["operations"]}
    for src, dst in spec["connections"]:
        assert src.split(".")[0] in names and dst.split(".")[0] in names
    assert sum(len(op["inputs"]) for op in spec["operations"]) == len(spec["connections"])
    assert {op["attributes"]["log"] for op in spec["operations"]} == {str(tmp_path / "jobs.log")}


def test_percentiles_are_nearest_rank() -> None:
    assert percentiles([]) == {"n": 0}
    assert percentiles([3.0, 1.0, 2.0, 4.0]) == {"n": 4, "p50": 2.0, "p95": 4.0, "max": 4.0}
