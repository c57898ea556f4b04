"""deepforge_plugins.model.language_meta: the pipeline language is found whatever the namespace (issue 18 item 2)."""

from __future__ import annotations

import pytest
from deepforge_plugins.model import LANGUAGE_MARKERS, language_meta

LANGUAGE = (*LANGUAGE_MARKERS, "Input", "Output", "ExecutedJob")


def meta(namespace: str, extra: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    prefix = f"{namespace}." if namespace else ""
    nodes = {f"{prefix}{name}": {"id": f"{prefix}{name}"} for name in LANGUAGE}
    nodes.update({name: {"id": name} for name in ("FCO", "MyPipelines", *extra)})
    return nodes


@pytest.mark.parametrize(
    ("names", "namespace", "pipeline_is"),
    [
        (meta("pipeline"), "", "pipeline.Pipeline"),  # REST: no namespace, names fully qualified
        (meta("pipeline"), "pipeline", "pipeline.Pipeline"),  # DeepForge's UI
        (meta(""), "", "Pipeline"),  # a project that defines the language at its root
        (meta("lib"), "", "lib.Pipeline"),  # the library under another name
        ({**meta("pipeline"), **meta("other")}, "other", "other.Pipeline"),  # the plugin's namespace wins
        ({**meta("pipeline"), **meta("other")}, "", "pipeline.Pipeline"),  # else DeepForge's name
    ],
)
def test_short_names_resolve_to_the_language(names: dict, namespace: str, pipeline_is: str) -> None:
    resolved = language_meta(names, namespace)
    assert resolved["Pipeline"]["id"] == pipeline_is
    assert resolved["ExecutedJob"]["id"] == pipeline_is.replace("Pipeline", "ExecutedJob")
    assert resolved["MyPipelines"]["id"] == "MyPipelines"  # the project's own nodes stay reachable
    assert all(name in resolved for name in names)  # and every fully qualified name


def test_a_project_without_the_language_is_named_in_the_error() -> None:
    names = {"FCO": {}, "lib.Pipeline": {}}  # a Pipeline alone is not the language
    with pytest.raises(LookupError, match=r"no pipeline language.*Execution.*'lib'"):
        language_meta(names, "")
