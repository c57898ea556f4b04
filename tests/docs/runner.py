"""Run (or parse) one doc block: the rules are in CONTRIBUTING.md, "Docs are tested".

* A doc's blocks run in document order in one **session** per doc: one temp working directory (seeded with
  :data:`SAMPLE_FILES`), one environment, one Python interpreter (a subprocess, never the test's own).
  So a ``put`` in one block and a ``get`` of its output in a later one work, and a Python block sees the
  names an earlier Python block of the same doc defined.  A block that is run alone (``-k``) first runs
  the earlier blocks of its doc.
* Shell blocks (``sh``/``bash``) run as ``bash -e -o pipefail`` scripts: the first failing command fails the
  block; ``console`` blocks run their ``$ `` lines.  Whatever a block leaves running (``cmd &``) is stopped
  when the block ends (SIGTERM to its process group, then SIGKILL).
* Placeholders: the servers the docs name are rewritten to the ones the suite started (:data:`URLS`).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.docs.blocks import PARSED, SHELL, Block

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Read-only folders of the repository a doc's commands name relative to its root, linked into the work dir.
REPO_DIRS = ("bench",)
BLOCK_TIMEOUT = 240.0  # s, one block; a loaded 2-core machine

#: The URLs the docs write, and which server the suite puts in their place.  ``dev``: ``make dev``'s own
#: command (``python -m deepforge_dev.stack dev``: WebGME server with the demo project ``Demo``, its operator
#: policy, a ``deepforge-worker``) on a free port; ``s3``: the suite's moto server; ``sciserver``: the
#: SciServer contract server (its login, files and RACM URLs also go into the backends' environment variables).
URLS: dict[str, str] = {
    "http://127.0.0.1:8888": "dev",
    "https://deepforge.example.org": "dev",
    "http://127.0.0.1:9000": "s3",
    "http://minio:9000": "s3",
    ".run/dev": "dev_run",  # make dev's state dir: the docs test's dev server's run dir
    "/etc/deepforge": "etc",  # an operator's config dir: a directory in the doc's working dir
}
#: The server (fixture) each placeholder kind comes from.
SERVER_OF: dict[str, str | None] = {"dev": "dev", "dev_run": "dev", "s3": "s3", "etc": None}
#: A doc whose runnable blocks mention this word gets the SciServer contract server.
SCISERVER_WORD = re.compile(r"sciserver", re.IGNORECASE)

#: Files every doc's working directory starts with: the inputs the examples read.
SAMPLE_FILES: dict[str, bytes] = {
    "data.csv": b"x,y\n1,2\n3,4\n",
    "model.bin": bytes(range(256)) * 64,
}


class BlockFailed(AssertionError):
    """A documented command or snippet failed; the message holds the block, its exit status and its output."""


def needs(blocks: list[Block]) -> set[str]:
    """Which servers a doc's runnable blocks need (keys of the fixtures: ``dev``, ``s3``, ``sciserver``)."""
    wanted: set[str] = set()
    for block in blocks:
        if block.skip or block.lang not in SHELL | {"python"}:
            continue
        wanted |= {SERVER_OF[kind] or "" for url, kind in URLS.items() if url in block.text} - {""}
        if SCISERVER_WORD.search(block.text):
            wanted.add("sciserver")
    return wanted


def substitute(text: str, servers: Mapping[str, str]) -> str:
    """The block with every documented URL replaced by the started server's (``servers``: kind -> URL)."""
    for url, kind in URLS.items():
        if kind in servers:
            text = re.sub(rf"{re.escape(url)}(?![\w.-])", servers[kind].rstrip("/"), text)
    return text


@dataclass
class DocSession:
    """The shared state of one doc's blocks."""

    workdir: Path
    env: dict[str, str]
    servers: dict[str, str] = field(default_factory=dict)
    python: subprocess.Popen[str] | None = None  #: the interpreter of its Python blocks, started on first use
    done: int = 0  #: how many of the doc's blocks have run
    failed: str | None = None  #: the id of an earlier block that failed

    def close(self) -> None:
        """Stop the doc's interpreter and whatever it left running."""
        if self.python is not None:
            if self.python.stdin is not None:
                with contextlib.suppress(OSError):
                    self.python.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.python.wait(timeout=10)
            _stop_group(self.python.pid)
            self.python.wait()
            self.python = None

    @classmethod
    def create(cls, workdir: Path, servers: Mapping[str, str], extra_env: Mapping[str, str]) -> DocSession:
        workdir.mkdir(parents=True, exist_ok=True)
        for name, data in SAMPLE_FILES.items():
            (workdir / name).write_bytes(data)
        for name in REPO_DIRS:  # commands a doc shows run from the repository root (``python bench/...``)
            (workdir / name).symlink_to(REPO_ROOT / name, target_is_directory=True)
        home = workdir / ".home"
        home.mkdir(exist_ok=True)
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "HOME": str(home),  # nothing a doc runs writes to the real ~/.local/share or ~/.aws
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "DEEPFORGE_REPO": str(REPO_ROOT),
            **extra_env,
        }
        if "dev" in servers:
            env["DEEPFORGE_HOST"] = servers["dev"]
        etc = workdir / "etc" / "deepforge"
        etc.mkdir(parents=True, exist_ok=True)
        return cls(workdir, env, {**servers, "etc": str(etc)})


def run_block(session: DocSession, block: Block) -> str:
    """Run or check one block in its doc's session; returns what it printed; raises :class:`BlockFailed`."""
    text = substitute(block.text, session.servers)
    if block.lang in SHELL:
        return run_shell(block, text, session.workdir, session.env)
    if block.lang == "python":
        return run_python(block, text, session)
    if block.lang in PARSED:
        check_parsed(block)
    return ""  # text: an output sample


def console_commands(text: str) -> str:
    """The commands of a ``console`` block: its ``$ `` lines (with their ``\\`` continuations)."""
    out: list[str] = []
    continuing = False
    for line in text.splitlines():
        if line.startswith("$ "):
            out.append(line[2:])
            continuing = line.rstrip().endswith("\\")
        elif continuing:
            out.append(line)
            continuing = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def run_shell(block: Block, text: str, cwd: Path, env: Mapping[str, str], timeout: float = BLOCK_TIMEOUT) -> str:
    script = console_commands(text) if block.lang == "console" else text
    log_path = cwd / f".block-{block.line}.log"  # a file, not a pipe: what the block leaves running keeps it
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script, block.id],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: what it leaves running is stopped below
        )
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc.pid)
        proc.wait()
        raise BlockFailed(
            _report(block, script, f"did not finish within {timeout:.0f} s", log_path.read_bytes())
        ) from None
    finally:
        _stop_group(proc.pid)
    output = log_path.read_bytes()
    log_path.unlink()
    if proc.returncode != 0:
        raise BlockFailed(_report(block, script, f"exited with status {proc.returncode}", output))
    return output.decode(errors="replace")


def _stop_group(pgid: int, grace: float = 30.0) -> None:
    """SIGTERM to a block's process group (a daemon it started drains and exits), SIGKILL after ``grace``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _report(block: Block, script: str, what: str, output: bytes | str) -> str:
    shown = output.decode(errors="replace") if isinstance(output, bytes) else output
    return (
        f"{block.id}: the documented {block.lang} block {what}\n"
        f"--- block ---\n{textwrap.indent(script.rstrip(), '  ')}\n"
        f"--- output (last 4000 characters) ---\n{shown[-4000:]}"
    )


#: The interpreter a doc's Python blocks run in, one per doc: it execs each block into one namespace, with
#: the doc's working directory and environment, its stdout and stderr (and its children's) in a log file;
#: it answers each block on the pipe it was started with.
_PYTHON_DRIVER = r"""
import json, os, sys, traceback
reply = os.fdopen(os.dup(1), "w")
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
os.dup2(log, 1)
os.dup2(log, 2)
sys.stdout = os.fdopen(1, "w", buffering=1)
sys.stderr = os.fdopen(2, "w", buffering=1)
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    request = json.loads(line)
    try:
        exec(compile(request["code"], request["id"], "exec"), namespace)
        error = None
    except BaseException:
        error = traceback.format_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    reply.write(json.dumps({"error": error}) + "\n")
    reply.flush()
"""


def _python(session: DocSession) -> subprocess.Popen[str]:
    if session.python is None or session.python.poll() is not None:
        session.python = subprocess.Popen(
            [sys.executable, "-c", _PYTHON_DRIVER, str(session.workdir / ".python.log")],
            cwd=session.workdir,
            env=session.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    return session.python


def run_python(block: Block, text: str, session: DocSession, timeout: float = BLOCK_TIMEOUT) -> str:
    """Run a block in the doc's own interpreter (not the test's: a snippet cannot change the suite's process)."""
    try:
        compile(text, block.id, "exec")
    except SyntaxError as exc:
        raise BlockFailed(_report(block, text, f"is not valid Python: {exc}", "")) from None
    proc = _python(session)
    log_path = session.workdir / ".python.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"code": text, "id": block.id}) + "\n")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    answer = proc.stdout.readline() if ready else ""
    with open(log_path, "rb") as log:
        log.seek(offset)
        printed = log.read().decode(errors="replace")
    if not answer:
        session.close()
        what = f"did not finish within {timeout:.0f} s" if not ready else "ended its interpreter"
        raise BlockFailed(_report(block, text, what, printed))
    error = json.loads(answer)["error"]
    if error is not None:
        raise BlockFailed(_report(block, text, "raised", printed + error))
    return printed


# ------------------------------------------------------------------------------------------ parsed blocks
_JSONC_COMMENT = re.compile(r'("(?:[^"\\]|\\.)*")|//[^\n]*')


def json_values(text: str) -> list[Any]:
    """The JSON values of a ``jsonc`` block: ``//`` comments dropped (not inside strings), one value or more."""
    stripped = _JSONC_COMMENT.sub(lambda m: m.group(1) or "", text)
    decoder = json.JSONDecoder()
    values: list[Any] = []
    i = 0
    while True:
        while i < len(stripped) and stripped[i].isspace():
            i += 1
        if i >= len(stripped):
            return values
        value, i = decoder.raw_decode(stripped, i)
        values.append(value)


def check_parsed(block: Block) -> None:
    """A ``json``/``jsonc``/``toml``/``ini`` block must parse; a dataInfo must read as one; a policy must load."""
    try:
        if block.lang == "json":
            values = [json.loads(block.text)]
        elif block.lang == "jsonc":
            values = json_values(block.text)
        elif block.lang == "toml":
            doc = tomllib.loads(block.text)
            if any(isinstance(doc.get(kind), dict) and "allow" in doc[kind] for kind in ("storage", "compute")):
                _load_policy(block.text)
            return
        elif block.lang == "ini":
            configparser.ConfigParser(interpolation=None).read_string(block.text)
            return
        else:
            raise AssertionError(f"no check for {block.lang!r}")
    except (ValueError, tomllib.TOMLDecodeError, configparser.Error) as exc:
        raise BlockFailed(_report(block, block.text, f"does not parse as {block.lang}: {exc}", "")) from None
    except Exception as exc:  # the policy loader's PolicyError names the key
        raise BlockFailed(_report(block, block.text, f"is refused: {exc}", "")) from None
    for value in values:
        if isinstance(value, dict) and set(value) == {"backend", "data"}:
            from deepforge_adapters.storage import DataInfo

            try:
                DataInfo.from_json(value)
            except ValueError as exc:
                raise BlockFailed(
                    _report(block, block.text, f"holds a dataInfo that does not read: {exc}", "")
                ) from None


def _load_policy(text: str) -> None:
    """A policy TOML block loads with the policy loader (as ``$DEEPFORGE_POLICY`` would)."""
    import tempfile

    from deepforge_adapters.policy import POLICY_ENV, load

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_text(text)
        load({POLICY_ENV: str(path)})


# ------------------------------------------------------------------------------------------ skipped blocks
CLI_NAMES = ("deepforge", "deepforge-worker")


def command_lines(script: str) -> Iterator[list[str]]:
    """Each simple command of a shell script (``&&``, ``|``, ``;`` split), as argv, comments dropped."""
    joined = script.replace("\\\n", " ")
    for line in joined.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        with contextlib.suppress(ValueError):
            for token in lexer:
                if token and set(token) <= set(";&|<>"):
                    if words:
                        yield words
                    words = []
                    if token in (">", ">>", "<"):
                        words = ["<redirect>"]
                    continue
                if words == ["<redirect>"]:
                    words = []  # the redirection's target
                    continue
                words.append(token)
        if words and words != ["<redirect>"]:
            yield words


def check_cli_usage(argv: list[str]) -> str | None:
    """For ``deepforge ...`` / ``deepforge-worker ...``: an error if the real CLI does not know its
    subcommands or options (the arguments are not checked: a skipped block's values are placeholders)."""
    import click

    name = Path(argv[0]).name
    command: click.Command
    if name == "deepforge":
        from deepforge_adapters.cli.app import main as deepforge_main

        command = deepforge_main
    elif name == "deepforge-worker":
        from deepforge_worker.cli import main as worker_main

        command = worker_main
    else:
        return None
    args = [a for a in argv[1:] if a not in ("-h", "--help", "--version")]
    current: click.Command = command
    ctx: click.Context | None = None
    try:
        while True:
            if isinstance(current, click.Group) and not args:
                break  # `deepforge-worker --version`: nothing more to check
            ctx = current.make_context(name, args, parent=ctx)
            if not isinstance(current, click.Group):
                break
            with warnings.catch_warnings():  # click 8.2 deprecates the name, not the list
                warnings.simplefilter("ignore", DeprecationWarning)
                rest = [*ctx.protected_args, *ctx.args]
            if not rest:
                break
            sub = current.get_command(ctx, rest[0])
            if sub is None:
                return f"{' '.join(argv)}: no command {rest[0]!r} in {ctx.command_path}"
            current, name, args = sub, rest[0], rest[1:]
    except (click.MissingParameter, click.BadParameter):
        return None  # a placeholder value, or one left out: the values of a skipped block are not checked
    except click.UsageError as exc:
        return f"{' '.join(argv)}: {exc.format_message()}"
    return None


def make_targets(makefile: Path = REPO_ROOT / "Makefile") -> set[str]:
    """The targets the checkout's Makefile defines (rules and ``.PHONY`` names)."""
    targets: set[str] = set()
    for line in makefile.read_text().splitlines():
        rule = re.match(r"^([A-Za-z0-9_.$()/ -]+?)\s*:(?!=)", line)
        if rule and not line.startswith("\t"):
            targets |= {t for t in rule.group(1).split() if "$" not in t}
        if line.startswith(".PHONY:"):
            targets |= set(line.split(":", 1)[1].split())
    return targets


def check_skipped_shell(block: Block) -> list[str]:
    """What can be checked of a skipped shell block without running it: bash syntax, that the
    ``deepforge``/``deepforge-worker`` commands in it name subcommands and options that exist, and that its
    ``make`` targets are the Makefile's."""
    script = console_commands(block.text) if block.lang == "console" else block.text
    problems = []
    syntax = subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True, check=False)
    if syntax.returncode != 0:
        problems.append(f"not valid bash: {syntax.stderr.decode(errors='replace').strip()}")
    for argv in command_lines(script):
        while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
            argv = argv[1:]
        if argv and Path(argv[0]).name in CLI_NAMES:
            problem = check_cli_usage(argv)
            if problem:
                problems.append(problem)
        elif argv and argv[0] == "make":
            targets = make_targets()
            for target in argv[1:]:
                if not target.startswith("-") and "=" not in target and target not in targets:
                    problems.append(f"{' '.join(argv)}: the Makefile has no target {target!r}")
    return problems
