"""The one ``executor_config.json`` parser (jobs/layout.py), used by the bundle reader, compute and the worker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.errors import BundleError
from deepforge_adapters.jobs.layout import (
    EXECUTOR_CONFIG_FILE,
    ExecutorConfig,
    ResultArtifact,
    parse_results,
    read_executor_config,
)


def test_a_full_config_is_parsed_into_its_fields() -> None:
    raw = {
        "cmd": "python3",
        "args": ["-m", "runner", 3, 0.5],
        "outputInterval": 1500,
        "outputSegmentSize": 20,
        "resultArtifacts": [{"name": "stdout", "resultPatterns": ["job_stdout.txt"]}, {"name": "all"}],
    }
    config = ExecutorConfig.parse(raw)
    assert config.argv == ["python3", "-m", "runner", "3", "0.5"]
    assert config.result_artifacts == (ResultArtifact("stdout", ("job_stdout.txt",)), ResultArtifact("all", ()))
    assert config.output_interval == 1.5 and config.output_segment_size == 20
    assert config.raw is raw


@pytest.mark.parametrize("off", [None, 0, -1])
def test_live_output_settings_off(off: Any) -> None:
    config = ExecutorConfig.parse({"cmd": "x", "outputInterval": off, "outputSegmentSize": off})
    assert config.output_interval is None and config.output_segment_size is None


def test_result_artifacts_are_required_only_when_asked() -> None:
    assert ExecutorConfig.parse({"cmd": "x"}).result_artifacts == ()
    with pytest.raises(BundleError, match=re.escape("field 'resultArtifacts': must be a list")):
        ExecutorConfig.parse({"cmd": "x"}, require_artifacts=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (["cmd"], "expected a JSON object, got list"),
        ({"args": []}, "field 'cmd': is missing"),
        ({"cmd": "  "}, "field 'cmd': must be a non-empty string"),
        ({"cmd": "x", "args": "-c print(1)"}, "field 'args': must be a list of strings"),
        ({"cmd": "x", "args": [True]}, "field 'args': must be a list of strings"),
        ({"cmd": "x", "resultArtifacts": [{"name": ""}]}, "field 'resultArtifacts[0]': needs a non-empty string"),
        (
            {"cmd": "x", "resultArtifacts": [{"name": "a", "resultPatterns": "*"}]},
            "field 'resultArtifacts[0].resultPatterns': must be a list of strings",
        ),
        ({"cmd": "x", "outputInterval": "1s"}, "field 'outputInterval': must be a number"),
        ({"cmd": "x", "outputSegmentSize": False}, "field 'outputSegmentSize': must be a number"),
    ],
)
def test_a_bad_config_names_the_file_and_the_field(raw: Any, message: str) -> None:
    with pytest.raises(BundleError) as info:
        ExecutorConfig.parse(raw, "bundle/executor_config.json")
    assert str(info.value).startswith(f"bundle/executor_config.json: {message}")


def test_read_names_the_file_as_asked(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=re.escape(f"{tmp_path / EXECUTOR_CONFIG_FILE}: missing")):
        read_executor_config(tmp_path)
    (tmp_path / EXECUTOR_CONFIG_FILE).write_text("{not json")
    with pytest.raises(BundleError, match=f"^{EXECUTOR_CONFIG_FILE}: not valid JSON"):
        read_executor_config(tmp_path, where=EXECUTOR_CONFIG_FILE)
    (tmp_path / EXECUTOR_CONFIG_FILE).write_text(json.dumps({"cmd": "echo", "args": ["hi"]}))
    assert read_executor_config(tmp_path).argv == ["echo", "hi"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "results.json is not valid JSON"),
        (b"\xff", "results.json is not valid JSON"),
        ("[1]", "results.json is not a JSON object"),
    ],
)
def test_results_that_are_not_a_json_object_are_refused_naming_the_file(raw: str | bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_results(raw)


def test_results_are_read_from_text_or_bytes() -> None:
    assert parse_results(b'{"x": {"type": "int"}}') == parse_results('{"x": {"type": "int"}}') == {"x": {"type": "int"}}
