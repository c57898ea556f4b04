"""The files and links README.md and docs/*.md point to exist (a doc once pointed to files outside the repo)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.blocks import REPO_ROOT, doc_files

#: Top-level directories of the checkout whose files the docs name.
TOP = ("packages", "worker", "tests", "bench", "webgme-config", "plugins", "docs")
#: A repo file named in a doc: under one of TOP, ending in a file extension (directories may be made at run
#: time, e.g. webgme-config/data); ``*`` is a glob that must match something.
_FILE = re.compile(rf"(?<![\w./-])((?:{'|'.join(TOP)})/[\w./+*-]*\.[A-Za-z]+)(?![\w/-])")
_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)\s]+)\)")


def _mentions() -> list[tuple[str, Path, str]]:
    found = []
    for doc in doc_files():
        for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{doc.relative_to(REPO_ROOT) if doc.is_relative_to(REPO_ROOT) else doc}:{number}"
            for match in _FILE.finditer(line):
                if "<" not in match.group(1):
                    found.append((where, REPO_ROOT, match.group(1)))
            for match in _LINK.finditer(line):
                found.append((where, doc.parent, match.group(1).split("#")[0]))
    return found


@pytest.mark.parametrize(("where", "base", "target"), _mentions(), ids=lambda v: v if isinstance(v, str) else "")
def test_named_file_exists(where: str, base: Path, target: str) -> None:
    path = target.split("::")[0]  # tests/x.py::test_name
    matches = list(base.glob(path)) if "*" in path else [base / path] if (base / path).exists() else []
    assert matches, f"{where}: names {target}, which is not in the repository"
