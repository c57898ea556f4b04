"""The fenced code blocks of the user docs (README.md and docs/*.md), with where each one is.

The convention (CONTRIBUTING.md, "Docs are tested"): the info string says what a block is.

* ``sh``, ``bash``, ``console``: shell commands, run; ``python``: run.
* ``text``: an output sample or a listing, not run.
* ``json``, ``jsonc`` (``//`` comments, one or more values), ``toml``, ``ini``: parsed.
* The line ``<!-- docs-test: skip (why) -->`` right above a fence skips that block, and the reason is shown.

A fence without an info string, an unknown info string, a skip marker without a reason and a marker that is
not right above a fence are errors (:class:`DocsError`), so every block says what it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

SHELL = frozenset({"sh", "bash", "console"})
RUN = SHELL | {"python"}
SAMPLE = frozenset({"text"})
PARSED = frozenset({"json", "jsonc", "toml", "ini"})
KNOWN = RUN | SAMPLE | PARSED

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip\s*\((?P<why>.*\S.*)\)\s*$")


class DocsError(ValueError):
    """A doc whose blocks do not follow the convention; the message names the file and line."""


@dataclass(frozen=True)
class Block:
    path: Path  #: the doc
    line: int  #: 1-based line of the opening fence
    lang: str  #: the info string's first word, lower-cased
    text: str  #: the content, without the fence's indentation
    skip: str | None = None  #: the reason given by a skip marker

    @property
    def rel(self) -> str:
        root = Path(os.environ.get(DOCS_ROOT_ENV) or REPO_ROOT)
        try:
            return self.path.relative_to(root).as_posix()
        except ValueError:
            return self.path.as_posix()

    @property
    def id(self) -> str:
        return f"{self.rel}:{self.line}"


#: Another tree of docs to test instead of this checkout's (the runner's own tests use it).
DOCS_ROOT_ENV = "DEEPFORGE_DOCS_ROOT"


def doc_files(root: Path | None = None) -> list[Path]:
    """README.md and every docs/*.md, found anew each run: a new doc is picked up without editing the tests."""
    root = root or Path(os.environ.get(DOCS_ROOT_ENV) or REPO_ROOT)
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def parse(path: Path, text: str | None = None) -> list[Block]:
    """Every fenced block of one Markdown file, in order; raises :class:`DocsError` for a broken convention."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    where = Block(path, 0, "", "").rel
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a skip marker waiting for its fence
    i = 0
    while i < len(lines):
        raw = lines[i]
        marker = _MARKER.match(raw)
        if marker:
            if pending is not None:
                raise DocsError(f"{where}:{pending[0]}: docs-test marker not right above a fence")
            skip = _SKIP.match(marker.group("body"))
            if not skip:
                raise DocsError(
                    f"{where}:{i + 1}: unknown docs-test marker {raw.strip()!r}; "
                    "the one marker is '<!-- docs-test: skip (why) -->' with a reason"
                )
            pending = (i + 1, skip.group("why").strip())
            i += 1
            continue
        fence = _FENCE.match(raw)
        if not fence:
            if pending is not None and raw.strip():
                raise DocsError(f"{where}:{pending[0]}: docs-test marker not right above a fence")
            i += 1
            continue
        start = i
        indent, mark = fence.group("indent"), fence.group("fence")
        info = fence.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        close = re.compile(rf"^[ \t]*{re.escape(mark[0])}{{{len(mark)},}}\s*$")
        body: list[str] = []
        i += 1
        while i < len(lines) and not close.match(lines[i]):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i >= len(lines):
            raise DocsError(f"{where}:{start + 1}: fence is never closed")
        i += 1  # the closing fence
        if not lang:
            raise DocsError(
                f"{where}:{start + 1}: fence without an info string: say what the block is "
                f"({', '.join(sorted(RUN))} run; text is an output sample; {', '.join(sorted(PARSED))} are parsed)"
            )
        if lang not in KNOWN:
            raise DocsError(f"{where}:{start + 1}: unknown info string {lang!r}; known: {', '.join(sorted(KNOWN))}")
        reason = None
        if pending is not None:
            reason = pending[1]
            pending = None
        blocks.append(Block(path, start + 1, lang, "\n".join(body) + "\n", reason))
    if pending is not None:
        raise DocsError(f"{where}:{pending[0]}: docs-test marker not right above a fence")
    return blocks


def all_blocks(root: Path | None = None) -> Iterator[Block]:
    for path in doc_files(root):
        yield from parse(path)
