"""``make demo`` really runs: three generated bundles through local storage and local compute."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from deepforge_dev.demo import run_pipeline

pytestmark = pytest.mark.integration


def test_demo_pipeline_computes_the_sum_of_squares(tmp_path: Path, job_env: dict[str, str]) -> None:
    out = io.StringIO()
    assert run_pipeline(tmp_path, out=out) == 385
    text = out.getvalue()
    assert "generated 10 numbers" in text
    assert "fetching input 'numbers' from local storage" in text
    assert "sum of 10 squares = 385" in text
    assert [p.is_file() for p in (tmp_path / "storage" / "demo/executions/Sum").glob("*/total")] == [True]
