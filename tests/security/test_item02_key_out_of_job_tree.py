"""Item 2: job code cannot get the deployment key, nor another job's secret.

An operation (the "hunter") reads everything it can reach: its own environment, and for every ancestor
process (runner, supervisor or worker; never above the test process, never the machine's PID 1) its
``/proc/<pid>/environ``, ``cmdline`` and memory (``maps`` + ``mem``), and every file those name.  It
dumps what it read into a directory the test then searches for the keyring (its text and raw key bytes)
and for the secret of another job that ran before on the same worker / local compute.

It runs three ways:

* through ``local`` compute (same uid as the test, root here: it can read its ancestors' memory, which
  holds no key because the submitter opened the job's credentials and the supervisor forked away);
* through a real ``deepforge-worker`` running as an unprivileged user (same-uid mode: worker and runner
  are non-dumpable, so their environ and memory are closed to the job);
* through a real ``deepforge-worker --run-as nobody`` run by root: the job also cannot read the key file.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.webgme.blob import BlobClient

pytestmark = pytest.mark.integration

HUNTER = r"""
import json, os, re, sys
OUT, LABEL, STOP_AT = {out!r}, {label!r}, {stop_at!r}
found, denied = [], {{}}

def keep(what, data):
    found.append((what, data))

def attempt(what, fn):
    try:
        keep(what, fn())
    except OSError as exc:
        denied[what] = type(exc).__name__

def read(path, limit=1 << 20):
    with open(path, "rb") as f:
        return f.read(limit)

def memory(pid):
    chunks = []
    with open(f"/proc/{{pid}}/maps") as maps, open(f"/proc/{{pid}}/mem", "rb", 0) as mem:
        for line in maps:
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
            if "r" not in parts[1] or (path and not path.startswith("[")) or path in ("[vvar]", "[vsyscall]"):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(min(end - start, 256 << 20)))
            except (OSError, OverflowError, ValueError):
                pass
    return b"".join(chunks)

def ppid(pid):
    with open(f"/proc/{{pid}}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

keep("own environ", repr(dict(os.environ)).encode())
attempt("own /proc/self/environ", lambda: read("/proc/self/environ"))
ancestors, pid = [], os.getpid()
while True:
    pid = ppid(pid)
    if pid <= 1:
        break
    ancestors.append(pid)
    if pid == STOP_AT:
        break
named = set()
for pid in ancestors:
    for name in ("environ", "cmdline"):
        attempt(f"{{pid}} {{name}}", lambda: read(f"/proc/{{pid}}/{{name}}"))
        if found and found[-1][0] == f"{{pid}} {{name}}":
            named.update(re.findall(rb"(/[^\x00=: ]+)", found[-1][1]))
    attempt(f"{{pid}} mem", lambda: memory(pid))
for path in sorted(named):
    p = path.decode(errors="replace")
    if os.path.isfile(p):
        attempt(f"file {{p}}", lambda: read(p))
for p in {extra_files!r}:
    attempt(f"file {{p}}", lambda: read(p))
with open(os.path.join(OUT, LABEL + ".bin"), "wb") as f:
    for what, data in found:
        f.write(b"\n==== " + what.encode() + b"\n" + data)
with open(os.path.join(OUT, LABEL + ".json"), "w") as f:
    json.dump({{"ancestors": ancestors, "read": [w for w, _ in found], "denied": denied}}, f)
print("hunted", len(ancestors), "ancestors")
"""


def _needles(key_text: str) -> dict[str, bytes]:
    """The keyring's text, and each key in base64 and raw (parsed here, not by the code under test)."""
    needles = {"key text": key_text.strip().encode()}
    for line in key_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kid, _, encoded = line.rpartition(":")
        needles[f"key {kid} (base64)"] = encoded.encode()
        needles[f"key {kid} (raw)"] = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    return needles


def _hits(dump: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in dump]


@pytest.fixture
def hunt_dir() -> Iterator[Path]:
    """A directory every uid can write (the hunter may run as nobody); outside pytest's 0700 tmp tree."""
    path = Path(tempfile.mkdtemp(prefix="deepforge-hunt-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def open_dir() -> Iterator[Callable[[str], Path]]:
    """Directories under a traversable /tmp root (for work dirs another uid must reach)."""
    root = Path(tempfile.mkdtemp(prefix="deepforge-item02-", dir="/tmp"))
    root.chmod(0o755)

    def make(name: str) -> Path:
        path = root / name
        path.mkdir(mode=0o755)
        return path

    yield make
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def public_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An interpreter another uid can execute, with our packages: a venv of the system python whose
    site-packages point at ours (this test venv's interpreter lives under root's 0700 home)."""
    base = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not base.is_file():
        pytest.skip(f"no {base} for the unprivileged account to run")
    root = Path(tempfile.mkdtemp(prefix="deepforge-item02-python-", dir="/tmp"))
    venv = root / "venv"
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"])
    ours = sysconfig.get_paths()["purelib"]
    (purelib / "deepforge-tests.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, "."]:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o005 | (0o050 if os.path.isdir(path) else 0))
    yield str(venv / "bin" / "python3")
    shutil.rmtree(root, ignore_errors=True)


def _s3(s3_config: dict[str, Any]) -> dict[str, Any]:
    return {**s3_config, "secretAccessKey": f"job-secret-{uuid.uuid4().hex}"}


def _hunter(make_bundle: Callable[..., Path], out: Path, label: str, config: dict[str, Any], **kw: Any) -> Path:
    code = HUNTER.format(out=str(out), label=label, stop_at=os.getpid(), extra_files=kw.pop("extra_files", []))
    return make_bundle(code, storage_id="s3", storage_config=config, **kw)


def _plain(make_bundle: Callable[..., Path], config: dict[str, Any], **kw: Any) -> Path:
    return make_bundle("print('an earlier job')", storage_id="s3", storage_config=config, **kw)


def _verdict(out: Path, label: str, needles: dict[str, bytes]) -> dict[str, Any]:
    summary = json.loads((out / f"{label}.json").read_text())
    summary["hits"] = _hits((out / f"{label}.bin").read_bytes(), needles)
    return summary


def test_local_compute_job_reaches_neither_the_key_nor_another_jobs_secret(
    job_env: dict[str, str],
    s3_config: dict[str, Any],
    make_bundle: Callable[..., Path],
    hunt_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_text = job_env[secrets.KEY_ENV]
    compute = get_client("local", {"workDir": str(tmp_path / "compute"), "processes": 1})
    other = _s3(s3_config)
    first = compute.start_job(ComputeJob(bundle=_plain(make_bundle, other), name="other"))
    assert list(compute.watch(first, poll_interval=0.1))[-1].status == JobStatus.SUCCESS

    mine = _s3(s3_config)
    info = compute.start_job(ComputeJob(bundle=_hunter(make_bundle, hunt_dir, "local", mine), name="hunter"))
    end = list(compute.watch(info, poll_interval=0.1))[-1]
    assert end.status == JobStatus.SUCCESS, compute.get_console_output(info)
    needles = {**_needles(key_text), "other job's secret": other["secretAccessKey"].encode()}
    verdict = _verdict(hunt_dir, "local", needles)
    assert len(verdict["ancestors"]) >= 2, verdict  # the runner and the supervisor were searched
    assert any(w.endswith(" mem") for w in verdict["read"]), verdict  # same uid (root here): memory was readable
    # the search works: the job's own credentials (which its runner holds) are found in that memory
    own = {"own secret": mine["secretAccessKey"].encode()}
    assert _hits((hunt_dir / "local.bin").read_bytes(), own) == ["own secret"]
    assert verdict["hits"] == [], verdict


def _worker_job(webgme_server: Any, bundle: Path) -> tuple[Any, dict[str, Any]]:
    files = {p.relative_to(bundle).as_posix(): p for p in sorted(bundle.rglob("*")) if p.is_file()}
    bundle_hash = BlobClient(webgme_server.url).upload_artifact(bundle.name, files)
    compute = get_client("gme", {"host": webgme_server.url})
    info = compute.start_job(ComputeJob(hash=bundle_hash, name=bundle.name))
    updates = list(compute.watch(info, poll_interval=0.2))
    output = "".join(u.output for u in updates if u.kind == "output")
    assert updates[-1].status == JobStatus.SUCCESS, output
    return compute, info


@pytest.mark.parametrize("mode", ["same-uid", "run-as"])
def test_worker_job_reaches_neither_the_key_nor_another_jobs_secret(
    mode: str,
    job_env: dict[str, str],
    s3_config: dict[str, Any],
    make_bundle: Callable[..., Path],
    hunt_dir: Path,
    open_dir: Callable[[str], Path],
    webgme_server: Any,
    worker_factory: Any,
    public_python: str,
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the worker runs as nobody, or starts jobs as nobody")
    nobody = pwd.getpwnam("nobody")
    base = open_dir("worker")
    key_dir = open_dir("keys")
    key_text = secrets.generate_key()
    key_file = key_dir / "secret.keyring"
    key_file.write_text(key_text)
    key_file.chmod(0o600)
    options: dict[str, Any] = {"work_dir": str(base / "jobs"), "cache_dir": str(base / "cache")}
    if mode == "same-uid":  # the worker and its jobs share an unprivileged uid
        for path in (base, key_dir, key_file):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        user: str | None = "nobody"
    else:  # the worker is root; jobs run as nobody
        options["run_as"] = "nobody"
        user = None
    env = {secrets.KEY_FILE_ENV: str(key_file), secrets.KEY_ENV: ""}  # the worker reads the key file
    worker_factory(webgme_server, env=env, user=user, python=public_python, **options)

    # both jobs' secrets are sealed with the worker's keyring, as the plugin would
    other = _s3(s3_config)
    _worker_job(webgme_server, _plain(make_bundle, other, secret_key=key_text))
    mine = _s3(s3_config)
    extra = [str(key_file)] if mode == "run-as" else []
    _worker_job(webgme_server, _hunter(make_bundle, hunt_dir, mode, mine, extra_files=extra, secret_key=key_text))
    needles = {**_needles(key_text), "other job's secret": other["secretAccessKey"].encode()}
    verdict = _verdict(hunt_dir, mode, needles)
    assert verdict["hits"] == [], verdict
    # the runner and the worker were found, and their environment and memory were closed to the job
    assert len(verdict["ancestors"]) >= 2, verdict
    for pid in verdict["ancestors"][:2]:
        assert f"{pid} environ" in verdict["denied"] and f"{pid} mem" in verdict["denied"], verdict
    if mode == "run-as":
        assert verdict["denied"].get(f"file {key_file}") == "PermissionError", verdict
