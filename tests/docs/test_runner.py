"""The docs runner itself: a documented command that fails fails its test, and the convention is enforced."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.docs.blocks import DOCS_ROOT_ENV, REPO_ROOT, Block, DocsError, parse
from tests.docs.runner import (
    BlockFailed,
    DocSession,
    check_cli_usage,
    check_parsed,
    check_skipped_shell,
    needs,
    run_block,
    substitute,
)

DOC = """\
# A doc

```sh
printf 'hello\\n' > greeting.txt
```

Some text.

<!-- docs-test: skip (needs a GPU box) -->
```sh
nvidia-smi
```

```python
text = open("greeting.txt").read()
```

```python
assert text == "hello\\n", text
```

```text
output sample $(not run)
```
"""


@pytest.fixture
def sessions() -> Iterator[list[DocSession]]:
    made: list[DocSession] = []
    yield made
    for session in made:
        session.close()


@pytest.fixture
def new_session(tmp_path: Path, sessions: list[DocSession]) -> Callable[[], DocSession]:
    def make() -> DocSession:
        session = DocSession.create(tmp_path / f"work{len(sessions)}", {}, {})
        sessions.append(session)
        return session

    return make


def _block(lang: str, text: str, tmp_path: Path) -> Block:
    return Block(tmp_path / "doc.md", 3, lang, text)


def test_blocks_are_found_with_their_line_language_and_skip_reason(tmp_path: Path) -> None:
    blocks = parse(tmp_path / "doc.md", DOC)
    assert [(b.line, b.lang, b.skip) for b in blocks] == [
        (3, "sh", None),
        (10, "sh", "needs a GPU box"),
        (14, "python", None),
        (18, "python", None),
        (22, "text", None),
    ]
    assert blocks[0].text == "printf 'hello\\n' > greeting.txt\n"
    assert blocks[0].id.endswith("doc.md:3")


def test_blocks_of_one_doc_share_files_and_the_python_namespace(
    tmp_path: Path, new_session: Callable[[], DocSession]
) -> None:
    session = new_session()
    for block in parse(tmp_path / "doc.md", DOC):
        if block.skip is None:
            run_block(session, block)
    out = run_block(session, _block("python", "import os\nprint(text.strip(), os.getcwd())\n", tmp_path))
    assert out == f"hello {session.workdir}\n"


def test_python_blocks_run_in_the_docs_own_interpreter(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    session = new_session()
    run_block(session, _block("python", "import os\nos.environ['DOCS_X'] = '1'\n", tmp_path))
    assert "DOCS_X" not in os.environ
    out = run_block(
        session, _block("python", "import subprocess\nsubprocess.run(['echo', 'from a child'])\n", tmp_path)
    )
    assert out == "from a child\n"


def test_a_failing_command_fails_its_block(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    broken = _block("sh", "echo before\nfalse\necho after\n", tmp_path)
    with pytest.raises(BlockFailed, match=r"doc.md:3: the documented sh block exited with status 1") as info:
        run_block(new_session(), broken)
    output = str(info.value).split("--- output (last 4000 characters) ---\n")[1]
    assert output == "before\n"


def test_a_failing_command_inside_a_pipeline_fails_its_block(
    tmp_path: Path, new_session: Callable[[], DocSession]
) -> None:
    with pytest.raises(BlockFailed, match="exited with status"):
        run_block(new_session(), _block("bash", "deepforge storage get @missing.json - | cat\n", tmp_path))


def test_an_unknown_command_fails_its_block(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    with pytest.raises(BlockFailed, match="status 127"):
        run_block(new_session(), _block("sh", "deepforge-no-such-command --flag\n", tmp_path))


def test_a_raising_python_block_fails_with_its_traceback(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    with pytest.raises(BlockFailed, match=r"(?s)raised.*ZeroDivisionError"):
        run_block(new_session(), _block("python", "x = 1\n1 / 0\n", tmp_path))


def test_console_blocks_run_their_dollar_lines_only(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    session = new_session()
    out = run_block(session, _block("console", "$ echo one\none\n$ echo two \\\n  three\ntwo three\n", tmp_path))
    assert out == "one\ntwo three\n"
    with pytest.raises(BlockFailed):
        run_block(session, _block("console", "$ false\n", tmp_path))


def test_what_a_block_leaves_running_is_stopped(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    session = new_session()
    run_block(session, _block("sh", "sleep 600 &\necho $! > pid\n", tmp_path))
    pid = int((session.workdir / "pid").read_text())

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie until its parent (init) reaps it
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")

    deadline = time.monotonic() + 30
    while not gone():
        assert time.monotonic() < deadline, f"the block's background process {pid} still runs"
        time.sleep(0.1)


def test_nothing_a_block_runs_writes_to_the_real_home(tmp_path: Path, new_session: Callable[[], DocSession]) -> None:
    session = new_session()
    out = run_block(session, _block("sh", 'echo "$HOME"\n', tmp_path))
    assert Path(out.strip()).is_relative_to(session.workdir)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("```\nls\n```\n", "fence without an info string"),
        ("```rust\nfn main() {}\n```\n", "unknown info string 'rust'"),
        ("<!-- docs-test: skip -->\n```sh\nls\n```\n", "unknown docs-test marker"),
        ("<!-- docs-test: skip () -->\n```sh\nls\n```\n", "unknown docs-test marker"),
        ("<!-- docs-test: skip (why) -->\ntext\n```sh\nls\n```\n", "not right above a fence"),
        ("```sh\nls\n", "never closed"),
    ],
)
def test_the_convention_is_enforced(tmp_path: Path, doc: str, message: str) -> None:
    with pytest.raises(DocsError, match=message):
        parse(tmp_path / "doc.md", doc)


def test_indented_fences_in_lists_are_found(tmp_path: Path) -> None:
    doc = "1. step\n\n   ```sh\n   echo a\n     echo b\n   ```\n"
    (block,) = parse(tmp_path / "doc.md", doc)
    assert block.text == "echo a\n  echo b\n"


def test_parsed_blocks_must_parse(tmp_path: Path) -> None:
    check_parsed(_block("json", '{"a": 1}', tmp_path))
    check_parsed(_block("jsonc", '{"a": 1}   // one\n{"b": "// not a comment"}\n', tmp_path))
    check_parsed(_block("toml", "[x]\ny = 1\n", tmp_path))
    check_parsed(_block("ini", "[program:x]\ncommand=a b\n", tmp_path))
    for lang, text in [("json", "{...}"), ("jsonc", '{"a": 1, …}'), ("toml", "x = "), ("ini", "no section")]:
        with pytest.raises(BlockFailed, match="does not parse"):
            check_parsed(_block(lang, text, tmp_path))


def test_a_data_info_sample_must_read_as_one(tmp_path: Path) -> None:
    check_parsed(_block("json", '{"backend": "local", "data": {"filename": "a"}}', tmp_path))
    with pytest.raises(BlockFailed, match="dataInfo"):
        check_parsed(_block("json", '{"backend": "", "data": {}}', tmp_path))


def test_a_policy_sample_is_loaded_by_the_policy_loader(tmp_path: Path) -> None:
    check_parsed(_block("toml", '[compute]\nallow = ["gme"]\n', tmp_path))
    with pytest.raises(BlockFailed, match="mainframe"):
        check_parsed(_block("toml", '[compute]\nallow = ["mainframe"]\n', tmp_path))


def test_skipped_blocks_still_use_the_real_cli(tmp_path: Path) -> None:
    assert check_cli_usage(["deepforge-worker", "start", "--host", "h", "--gpus", "0,1"]) is None
    assert check_cli_usage(["deepforge", "storage", "put", "a", "b", "--backend", "local"]) is None
    assert "--no-such" in (check_cli_usage(["deepforge-worker", "start", "--no-such", "1"]) or "")
    assert "frobnicate" in (check_cli_usage(["deepforge", "storage", "frobnicate"]) or "")
    block = _block(
        "sh", "FOO=1 deepforge-worker start --bogus && deepforge storage put a b # --not-an-option\n", tmp_path
    )
    (problem,) = check_skipped_shell(block)
    assert "--bogus" in problem
    assert check_skipped_shell(_block("sh", "if then fi\n", tmp_path))[0].startswith("not valid bash")
    assert check_skipped_shell(_block("sh", "make browser install node DEEPFORGE_WEBGME_PORT=1 -j2\n", tmp_path)) == []
    (problem,) = check_skipped_shell(_block("sh", "make tset\n", tmp_path))
    assert "no target 'tset'" in problem


def test_documented_urls_become_the_suites_servers(tmp_path: Path) -> None:
    blocks = [_block("sh", "curl http://127.0.0.1:8888/api && aws --endpoint http://minio:9000\n", tmp_path)]
    assert needs(blocks) == {"dev", "s3"}
    assert needs([_block("json", '"http://127.0.0.1:8888"', tmp_path)]) == set()
    text = substitute(blocks[0].text, {"dev": "http://127.0.0.1:4321/", "s3": "http://127.0.0.1:5555"})
    assert text == "curl http://127.0.0.1:4321/api && aws --endpoint http://127.0.0.1:5555\n"


def test_the_docs_test_fails_for_a_doc_whose_command_fails(tmp_path: Path) -> None:
    """The whole docs test (tests/docs/test_docs.py) over a tree with one broken and one working block."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# R\n\n```sh\ndeepforge storage get @no-such-info.json out\n```\n")
    (tmp_path / "docs" / "new.md").write_text("# N\n\n```sh\ndeepforge backends --json > backends.json\n```\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/docs/test_docs.py"],
        cwd=REPO_ROOT,
        env={**os.environ, DOCS_ROOT_ENV: str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "FAILED tests/docs/test_docs.py::test_doc_block[README.md:3]" in out, out
    assert "exited with status" in out, out
