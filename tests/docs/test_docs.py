"""Every fenced block of README.md and docs/*.md, one test each (id = file:line): run, parsed or skipped.

The rules are in CONTRIBUTING.md ("Docs are tested") and tests/docs/runner.py.  New docs are picked up
without editing this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.docs.blocks import SHELL, Block, DocsError, doc_files, parse
from tests.docs.runner import BlockFailed, DocSession, check_skipped_shell, needs, run_block

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _collect() -> tuple[list[Any], dict[Path, list[Block]]]:
    params: list[Any] = []
    by_doc: dict[Path, list[Block]] = {}
    for path in doc_files():
        try:
            blocks = parse(path)
        except DocsError as exc:
            params.append(pytest.param(None, str(exc), id=Block(path, 0, "", "").rel))
            continue
        by_doc[path] = blocks
        params += [pytest.param(block, None, id=block.id) for block in blocks]
    return params, by_doc


PARAMS, BLOCKS = _collect()
_sessions: dict[Path, DocSession] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_sessions() -> Iterator[None]:
    yield
    for session in _sessions.values():
        session.close()
    _sessions.clear()


def _session(request: pytest.FixtureRequest, path: Path) -> DocSession:
    if path not in _sessions:
        servers, env = {}, {}
        wanted = needs(BLOCKS[path])
        if "dev" in wanted:
            servers["dev"], servers["dev_run"] = request.getfixturevalue("docs_dev_server")
        if "s3" in wanted:
            servers["s3"] = request.getfixturevalue("s3_server").url
        if "sciserver" in wanted:
            env.update(request.getfixturevalue("docs_sciserver"))
        workdir = request.getfixturevalue("tmp_path_factory").mktemp(f"docs-{path.stem}")
        _sessions[path] = DocSession.create(workdir, servers, env)
    return _sessions[path]


@pytest.mark.parametrize(("block", "error"), PARAMS)
def test_doc_block(request: pytest.FixtureRequest, block: Block | None, error: str | None) -> None:
    if block is None:
        pytest.fail(error or "unparsable doc")
    if block.skip is not None:
        problems = check_skipped_shell(block) if block.lang in SHELL else []
        assert not problems, f"{block.id} (skipped: {block.skip}):\n" + "\n".join(problems)
        pytest.skip(f"{block.id}: {block.skip}")
    session = _session(request, block.path)
    blocks = BLOCKS[block.path]
    index = blocks.index(block)
    # A block runs after the earlier blocks of its doc (they may create what it uses), also when run alone.
    while session.done < index:
        earlier = blocks[session.done]
        session.done += 1
        if earlier.skip is None and session.failed is None:
            try:
                run_block(session, earlier)
            except BlockFailed:
                session.failed = earlier.id
    if session.done == index:
        session.done += 1
        if session.failed is not None and session.failed != block.id:
            pytest.fail(f"{block.id}: not run: an earlier block of the doc failed ({session.failed})")
        try:
            run_block(session, block)
        except BlockFailed:
            session.failed = block.id
            raise
    else:  # already run as an earlier block of a test selected after it
        assert session.failed != block.id, f"{block.id} failed when it ran as an earlier block"
