"""The ``deepforge`` console script, run as a real subprocess: output, exit codes 0/1/2, no leaked secrets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

pytestmark = pytest.mark.integration

RunCli = Callable[..., subprocess.CompletedProcess[str]]
TOKEN = "tok-3f9a7c1e5b2d4f6a8c0e"


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr
    return proc


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, click's usage errors included
    assert proc.stderr.startswith("deepforge: error: "), proc.stderr
    assert fragment in proc.stderr


def test_put_stat_get_cp_rm_round_trip(run_cli: RunCli, tmp_path: Path) -> None:
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(4096))
    root = tmp_path / "root"
    config = json.dumps({"root": str(root)})

    info = json.loads(_ok(run_cli("storage", "put", "--config", config, str(src), "proj/in")).stdout)
    assert info["backend"] == "local"
    assert info["data"]["filename"] == "proj/in"
    assert info["data"]["blake3"] == blake3.blake3(src.read_bytes()).hexdigest()
    assert (root / "proj" / "in").read_bytes() == src.read_bytes()

    stat = json.loads(_ok(run_cli("storage", "stat", "-b", "local", "--config", config, "proj/in")).stdout)
    assert stat == info

    info_file = tmp_path / "info.json"
    info_file.write_text(json.dumps(info))
    dest = tmp_path / "out" / "copy.bin"
    _ok(run_cli("storage", "get", "--config", config, f"@{info_file}", str(dest)))
    assert dest.read_bytes() == src.read_bytes()

    copied = json.loads(_ok(run_cli("storage", "cp", "--config", config, json.dumps(info), "proj/copy")).stdout)
    assert copied["data"]["filename"] == "proj/copy"
    assert copied["data"]["blake3"] == info["data"]["blake3"]

    _ok(run_cli("storage", "rm", "--config", config, json.dumps(copied)))
    assert not (root / "proj" / "copy").exists()
    _ok(run_cli("storage", "rm", "-b", "local", "--config", config, "--dir", "proj"))
    assert not (root / "proj").exists()


def test_put_from_stdin_and_get_to_stdout(run_cli: RunCli, tmp_path: Path) -> None:
    info = _ok(run_cli("storage", "put", "-", "piped", input="hello from stdin\n")).stdout
    assert json.loads(info)["data"]["size"] == len("hello from stdin\n")
    assert (tmp_path / "cli-store" / "piped").exists()  # DEEPFORGE_STORAGE_ROOT from the environment
    out = _ok(run_cli("storage", "get", info.strip(), "-"))
    assert out.stdout == "hello from stdin\n"


def test_config_from_file(run_cli: RunCli, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"root": str(tmp_path / "from-file")}))
    _ok(run_cli("storage", "put", "--config", f"@{cfg}", "-", "n", input="x"))
    assert (tmp_path / "from-file" / "n").read_text() == "x"


def test_progress_bar_only_for_big_transfers_and_not_when_quiet(run_cli: RunCli, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(9 * 1024 * 1024)
    small = tmp_path / "small.bin"
    small.write_bytes(b"s")
    assert "put big" in _ok(run_cli("storage", "put", str(big), "big")).stderr
    assert _ok(run_cli("storage", "put", "--quiet", str(big), "big2")).stderr == ""
    assert _ok(run_cli("storage", "put", str(small), "small")).stderr == ""


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("storage", "put", "--config", "{not json", "-", "n"), "not valid JSON"),
        (("storage", "put", "--config", "[1]", "-", "n"), "expected a JSON object"),
        (("storage", "put", "--config", '{"rooot": "/x"}', "-", "n"), "local: config field 'rooot': unknown field"),
        (("storage", "put", "--config", "@/nonexistent/cfg.json", "-", "n"), "cannot read /nonexistent/cfg.json"),
        (("storage", "put", "-b", "nope", "-", "n"), "unknown storage backend 'nope'"),
        (("storage", "get", '{"backend": "local"}', "out"), "dataInfo is missing 'data'"),
        (("storage", "get", '{"backend": "local", "data": "abc"}', "out"), "local dataInfo 'data' must be an object"),
        (("storage", "get", "{oops", "out"), "not valid JSON"),
        (
            (
                "storage",
                "rm",
            ),
            "give exactly one of DATAINFO or --dir PREFIX",
        ),
        (("storage", "rm", "--dir", "x"), "--dir needs --backend"),
        (
            (
                "storage",
                "frobnicate",
            ),
            "No such command",
        ),
    ],
)
def test_usage_and_config_errors_exit_2(run_cli: RunCli, args: tuple[str, ...], fragment: str) -> None:
    _one_line_error(run_cli(*args, input=""), 2, fragment)


def test_runtime_failures_exit_1(run_cli: RunCli, tmp_path: Path) -> None:
    _one_line_error(run_cli("storage", "stat", "missing"), 1, "local storage, 'missing': no such file")
    _one_line_error(run_cli("storage", "stat", "../etc/passwd"), 1, "'..' is not allowed")
    info = json.loads(_ok(run_cli("storage", "put", "-", "f", input="abcd")).stdout)
    (tmp_path / "cli-store" / "f").write_text("abce")
    proc = run_cli("storage", "get", json.dumps(info), str(tmp_path / "out"))
    _one_line_error(proc, 1, "blake3 is")
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(run_cli: RunCli) -> None:
    proc = run_cli("--debug", "storage", "stat", "missing")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
    assert "NotFoundError" in proc.stderr


def test_backends_lists_schemas_and_unavailable_ones(run_cli: RunCli) -> None:
    listing = json.loads(_ok(run_cli("backends", "--json")).stdout)
    local = listing["storage"]["local"]
    assert local["available"] is True
    assert local["name"] == "Local Storage"
    assert local["configStructure"][0]["name"] == "root"
    assert local["configStructure"][0]["env"] == ["DEEPFORGE_LOCAL_ROOT", "DEEPFORGE_STORAGE_ROOT"]
    assert set(listing["storage"]) >= {"local", "gme", "s3", "sciserver-files"}
    assert set(listing["compute"]) >= {"local", "gme", "sciserver-compute"}
    for kind in ("storage", "compute"):
        for entry in listing[kind].values():
            assert entry["available"] or entry["reason"]
    text = _ok(run_cli("backends")).stdout
    assert "storage backends:" in text and "compute backends:" in text
    assert "Local Storage" in text


def test_backends_include_entry_point_backends(run_cli: RunCli, dftest_distribution: Path) -> None:
    listing = json.loads(_ok(run_cli("backends", "--json", pythonpath=dftest_distribution)).stdout)
    fields = {f["name"]: f for f in listing["storage"]["dftest"]["configStructure"]}
    assert fields["token"]["isAuth"] is True
    text = _ok(run_cli("backends", pythonpath=dftest_distribution)).stdout
    assert "token (string, secret)" in text


def test_secret_from_env_is_never_echoed(run_cli: RunCli, dftest_distribution: Path, tmp_path: Path) -> None:
    def stat(config: dict[str, str], name: str, env: dict[str, str] | None = None) -> str:
        args = ("--debug", "storage", "stat", "-b", "dftest", "--config", json.dumps(config), name)
        proc = run_cli(*args, env=env, pythonpath=dftest_distribution)
        assert proc.returncode == 1
        assert TOKEN not in proc.stdout + proc.stderr
        return proc.stderr

    root = str(tmp_path / "dft")
    # a careless backend logs the token at debug level and puts it in an error message
    stderr = stat({"root": root}, "leak", env={"DEEPFORGE_DFTEST_TOKEN": TOKEN})
    assert "server refused token [REDACTED]" in stderr
    assert "with token [REDACTED]" in stderr
    # the same when the token comes in --config, and the client's repr is logged masked
    assert "'token': '********'" in stat({"root": root, "token": TOKEN}, "missing")


def test_secrets_keygen(run_cli: RunCli) -> None:
    from deepforge_adapters import secrets
    from deepforge_adapters.config import ConfigSchema, Field

    schema = ConfigSchema("t", (Field("t", is_auth=True),))
    key = _ok(run_cli("secrets", "keygen")).stdout
    sealed = secrets.seal({"t": "v"}, schema, key)
    assert secrets.unseal(sealed, schema, key) == {"t": "v"}


def test_version_and_help(run_cli: RunCli) -> None:
    assert "deepforge, version" in _ok(run_cli("--version")).stdout
    assert "storage" in _ok(run_cli("--help")).stdout


def test_put_is_source_first_and_swapped_arguments_get_a_hint(run_cli: RunCli, tmp_path: Path) -> None:
    src = tmp_path / "data.csv"
    src.write_text("a,b\n")
    proc = run_cli("storage", "put", "proj/data", str(src))
    _one_line_error(proc, 2, "proj/data is not a readable file")
    assert f"did you mean `deepforge storage put {src} proj/data`" in proc.stderr
    info = json.loads(_ok(run_cli("storage", "put", str(src), "proj/data")).stdout)
    assert info["data"]["filename"] == "proj/data"


def test_get_into_a_directory_writes_inside_it(run_cli: RunCli, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    info = _ok(run_cli("storage", "put", str(src), "proj/run1/model")).stdout.strip()
    out = tmp_path / "out"
    out.mkdir()
    _ok(run_cli("storage", "get", info, str(out)))
    assert (out / "model").read_bytes() == b"weights"


def test_click_usage_errors_are_one_line(run_cli: RunCli, tmp_path: Path) -> None:
    _one_line_error(
        run_cli("storage", "get", "@/nonexistent/info.json", "out"), 2, "cannot read /nonexistent/info.json"
    )
    _one_line_error(run_cli("run", str(tmp_path / "no-such-bundle")), 2, "does not exist")
    _one_line_error(run_cli("storage", "put", "--nope", "-", "n"), 2, "No such option '--nope'")


def test_a_down_server_prints_one_line_without_retry_warnings(run_cli: RunCli) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = json.dumps({"host": f"http://127.0.0.1:{port}"})
    proc = run_cli("storage", "put", "-q", "-b", "gme", "--config", config, "-", "x", input="x")
    assert "Retrying" not in proc.stderr
    _one_line_error(proc, 1, f"127.0.0.1:{port}")
