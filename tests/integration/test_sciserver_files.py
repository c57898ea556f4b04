"""``sciserver-files`` against the contract server over HTTP: auth, round trips, the quirks that bite."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from deepforge_adapters import storage
from deepforge_adapters.errors import IntegrityError, NotFoundError, StorageError
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.storage.sciserver_files import SciServerFilesStorage

from tests.fixtures.sciserver import SciServerHandle

pytestmark = pytest.mark.integration


def client(sciserver: SciServerHandle, **overrides: object) -> SciServerFilesStorage:
    """A client on the user's ``persistent`` volume (one every SciServer user has) unless told otherwise; the
    default volume, DeepForge's ``USERNAME/deepforge_data``, has its own test."""
    made = storage.get_client("sciserver-files", sciserver.config(**{"volume": "USERNAME/persistent", **overrides}))
    assert isinstance(made, SciServerFilesStorage)
    return made


def logins(sciserver: SciServerHandle) -> int:
    return sum(1 for r in sciserver.requests() if r["path"].endswith("/keystone/v3/tokens"))


def test_registry_and_schema() -> None:
    cls = storage.registry.get_class("sciserver-files")
    assert cls is SciServerFilesStorage and cls.name == "SciServer Files"
    fields = {f["name"]: f for f in cls.schema.to_config_structure()}
    assert fields["password"]["isAuth"] and fields["token"]["isAuth"]
    assert fields["volumePool"]["valueItems"] == ["Storage", "Temporary"]
    assert fields["fileServiceUrl"]["value"] == "https://apps.sciserver.org/fileservice/api/"
    assert fields["loginUrl"]["value"] == "https://apps.sciserver.org/login-portal/keystone/v3/tokens"


def test_round_trip_dataInfo_is_deepforge_compatible(sciserver: SciServerHandle, tmp_path: Path) -> None:
    files = client(sciserver)
    info = files.put_file_stream("proj/executions/op/model", io.BytesIO(b"weights"))
    assert info.backend == "sciserver-files"
    data = info.data
    assert data["name"] == "model" and data["size"] == 7
    assert data["filename"] == "proj/executions/op/model"
    assert data["volume"] == f"{sciserver.username}/persistent" and data["volumePool"] == "Storage"
    assert data["lastModified"].endswith("Z") and "creationTime" in data
    assert (sciserver.volume_path() / "proj/executions/op/model").read_bytes() == b"weights"
    again = DataInfo.from_json(info.dumps())
    assert files.get_file(again, tmp_path / "out").read_bytes() == b"weights"
    assert files.stat("proj/executions/op/model") == info
    assert files.get_metadata(info)["size"] == 7


def test_reads_deepforge_js_dataInfo_without_pool_or_mtime(sciserver: SciServerHandle) -> None:
    files = client(sciserver)
    files.put_file_stream("old/file.bin", io.BytesIO(b"abc"))
    legacy = DataInfo(
        "sciserver-files", {"filename": "old/file.bin", "volume": f"Storage/{sciserver.username}/persistent", "size": 3}
    )
    with files.get_file_stream(legacy) as src:
        assert src.read() == b"abc"
    assert files.get_cache_key(legacy).startswith("sciserver-files/")


def test_missing_file_is_an_error_never_an_empty_artifact(sciserver: SciServerHandle, tmp_path: Path) -> None:
    files = client(sciserver)
    ghost = DataInfo(
        "sciserver-files",
        {
            "filename": "nope/missing.bin",
            "volume": f"{sciserver.username}/persistent",
            "volumePool": "Storage",
            "size": 10,
        },
    )
    with pytest.raises(NotFoundError, match=r"missing\.bin"):
        files.get_file(ghost, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    files.put_file_stream("nope/dir/inner", io.BytesIO(b"1"))
    folder = DataInfo("sciserver-files", dict(ghost.data, filename="nope/dir"))
    with pytest.raises(NotFoundError, match="directory"):
        files.get_file_stream(folder)
    with pytest.raises(NotFoundError):
        files.stat("nope/missing.bin")
    with pytest.raises(NotFoundError, match="does not exist"):
        files.stat("no/such/dir/file")
    sciserver.settings(missing_download="error")
    with pytest.raises(NotFoundError, match="File does not exist"):
        files.get_file(ghost, tmp_path / "y")


def test_overwrite_replaces_content_and_changes_cache_key(sciserver: SciServerHandle, tmp_path: Path) -> None:
    files = client(sciserver)
    first = files.put_file_stream("out/result", io.BytesIO(b"first"))
    time.sleep(0.01)
    second = files.put_file_stream("out/result", io.BytesIO(b"second!"))
    assert files.get_file(second, tmp_path / "r").read_bytes() == b"second!"
    assert files.get_cache_key(first) != files.get_cache_key(second)
    # same size, new mtime: still a new key
    time.sleep(0.01)
    third = files.put_file_stream("out/result", io.BytesIO(b"SECOND!"))
    assert third.data["size"] == second.data["size"]
    assert files.get_cache_key(third) != files.get_cache_key(second)
    assert files.get_cache_key(third) == files.get_cache_key(DataInfo.from_json(third.dumps()))
    leftovers = [p.name for p in (sciserver.volume_path() / "out").iterdir()]
    assert leftovers == ["result"]  # the temporary upload name was moved into place


def test_delete_file_and_dir(sciserver: SciServerHandle) -> None:
    files = client(sciserver)
    a = files.put_file_stream("run/a", io.BytesIO(b"a"))
    files.put_file_stream("run/sub/b", io.BytesIO(b"b"))
    files.delete_file(a)
    with pytest.raises(NotFoundError):
        files.stat("run/a")
    files.delete_file(a)  # idempotent
    files.delete_dir("run")
    assert not (sciserver.volume_path() / "run").exists()
    with pytest.raises(StorageError, match="relative paths"):
        files.delete_dir("/")


def test_copy_is_server_side(sciserver: SciServerHandle, tmp_path: Path) -> None:
    files = client(sciserver)
    src = files.put_file_stream("c/src", io.BytesIO(b"copy me"))
    dst = files.copy(src, "c/dst")
    assert dst.data["filename"] == "c/dst" and dst.data["size"] == 7
    assert not any(
        r["path"].startswith("/fileservice/api/file/") and r["method"] == "GET" for r in sciserver.requests()
    )
    assert files.get_file(dst, tmp_path / "d").read_bytes() == b"copy me"


def test_temporary_pool_and_user_volume(sciserver: SciServerHandle) -> None:
    scratch = client(sciserver, volumePool="Temporary", volume="USERNAME/scratch")
    info = scratch.put_file_stream("t.txt", io.BytesIO(b"t"))
    assert info.data["volume"] == f"{sciserver.username}/scratch" and info.data["volumePool"] == "Temporary"
    unknown = client(sciserver, volume=f"{sciserver.username}/nope")
    with pytest.raises(StorageError, match="Volume does not exist"):
        unknown.put_file_stream("x", io.BytesIO(b"x"))


def test_default_volume_is_deepforges_and_is_created_on_the_first_upload(sciserver: SciServerHandle) -> None:
    files = client(sciserver, volume=None)  # no volume given: DeepForge's USERNAME/deepforge_data
    assert files.config["volume"] == "USERNAME/deepforge_data"
    info = files.put_file_stream("a/b.txt", io.BytesIO(b"b"))
    assert info.data["volume"] == f"{sciserver.username}/deepforge_data" and info.data["volumePool"] == "Storage"
    assert (sciserver.volume_path(name="deepforge_data") / "a" / "b.txt").read_bytes() == b"b"
    again = client(sciserver, volume=None)  # the volume exists now: creating it again is quiet
    again.put_file_stream("c.txt", io.BytesIO(b"c"))
    assert again.stat("c.txt").data["size"] == 1
    # A volume the user named is never created behind their back.
    named = client(sciserver, volume=f"{sciserver.username}/elsewhere")
    with pytest.raises(StorageError, match="Volume does not exist"):
        named.put_file_stream("x", io.BytesIO(b"x"))


def test_server_errors_carry_the_server_message(sciserver: SciServerHandle) -> None:
    other = sciserver.add_user()
    theirs = client(sciserver, volume=f"{other.username}/persistent")
    with pytest.raises(StorageError, match="HTTP 500: Volume does not exist"):
        theirs.stat("anything")


def test_token_is_reused_across_operations_and_clients(sciserver: SciServerHandle) -> None:
    files = client(sciserver)
    files.put_file_stream("a", io.BytesIO(b"a"))
    files.stat("a")
    client(sciserver).stat("a")
    assert logins(sciserver) == 1


def test_one_relogin_on_401_then_success(sciserver: SciServerHandle) -> None:
    files = client(sciserver)
    files.put_file_stream("a", io.BytesIO(b"a"))
    assert sciserver.expire_tokens() >= 1
    assert files.stat("a").data["size"] == 1
    assert logins(sciserver) == 2
    assert sciserver.expire_tokens() >= 1
    files.put_file_stream("b", io.BytesIO(b"bb"))  # a seekable upload body is replayed after the re-login
    assert logins(sciserver) == 3
    assert (sciserver.volume_path() / "b").read_bytes() == b"bb"


def test_expiry_by_lifetime_then_relogin(sciserver: SciServerHandle) -> None:
    sciserver.settings(token_lifetime=1.0)
    files = client(sciserver)
    files.put_file_stream("a", io.BytesIO(b"a"))
    time.sleep(1.2)
    assert files.stat("a").data["size"] == 1
    assert logins(sciserver) == 2


def test_401_after_relogin_fails_clearly(sciserver: SciServerHandle) -> None:
    sciserver.settings(token_lifetime=0.0)  # every token is born expired
    files = client(sciserver)
    with pytest.raises(StorageError, match=r"rejected the token .*even after logging in again"):
        files.stat("a")
    assert logins(sciserver) == 2


def test_token_only_config_without_password_fails_clearly_on_expiry(sciserver: SciServerHandle) -> None:
    token = sciserver.login()
    files = client(sciserver, password=None, token=token, username=None)
    files.put_file_stream("a", io.BytesIO(b"a"))  # username found through the token document
    assert files.volume == f"{sciserver.username}/persistent"
    sciserver.expire_tokens()
    with pytest.raises(StorageError, match="no password is configured"):
        files.stat("a")


def test_wrong_password_reports_the_portal_message(sciserver: SciServerHandle) -> None:
    files = client(sciserver, password="wrong-password-123")
    with pytest.raises(StorageError, match=r"login failed .*HTTP 500: HTTP/1.1 401 Unauthorized"):
        files.stat("a")


def test_no_credentials_is_a_config_error(
    sciserver: SciServerHandle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SCISERVER_KEYSTONE_TOKEN_PATH", str(tmp_path / "absent"))
    with pytest.raises(StorageError, match="no credentials"):
        client(sciserver, password=None)


def test_keystone_token_file_inside_compute(
    sciserver: SciServerHandle, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token_file = tmp_path / "keystone.token"
    token_file.write_text(sciserver.login() + "\n")
    monkeypatch.setenv("SCISERVER_KEYSTONE_TOKEN_PATH", str(token_file))
    files = client(sciserver, password=None)
    assert files.put_file_stream("k", io.BytesIO(b"k")).data["size"] == 1


def test_secrets_never_in_logs_or_errors(sciserver: SciServerHandle, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    files = client(sciserver)
    token = files.session.token()
    files.put_file_stream("s", io.BytesIO(b"s"))
    sciserver.expire_tokens()
    files.stat("s")
    errors = []
    for bad in (client(sciserver, password="not-the-password-xyz"), client(sciserver, volume="x/y")):
        with pytest.raises(StorageError) as exc:
            bad.stat("s")
        errors.append(str(exc.value))
    refused = client(sciserver, password=None, token="forged-token-abcdef", username=sciserver.username)
    with pytest.raises(StorageError) as exc:
        refused.stat("s")
    errors.append(str(exc.value))
    text = caplog.text + "\n".join(errors) + repr(files) + repr(files.config)
    for secret in (sciserver.password, token, "not-the-password-xyz", "forged-token-abcdef"):
        assert secret not in text


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class _Unsized:
    """A readable without a known size (e.g. a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(size)


def test_short_download_is_an_integrity_error(sciserver: SciServerHandle, tmp_path: Path) -> None:
    files = client(sciserver)
    info = files.put_file_stream("short", io.BytesIO(b"0123456789"))
    stream = files.get_file_stream(info)
    stream.raw.expected = 20  # type: ignore[attr-defined]  # as if the server promised more than it sent
    with pytest.raises(IntegrityError, match="ended after 10 of 20 bytes"), stream:
        while stream.read(4):
            pass


def test_worker_cache_refetches_after_overwrite(sciserver: SciServerHandle, tmp_path: Path) -> None:
    from deepforge_adapters.storage.cache import WorkerCache

    files = client(sciserver)
    cache = WorkerCache(tmp_path / "cache")
    first = files.put_file_stream("in/data", io.BytesIO(b"version one"))
    assert cache.fetch(files, first).read_bytes() == b"version one"
    time.sleep(0.01)
    second = files.put_file_stream("in/data", io.BytesIO(b"version two!"))
    assert cache.fetch(files, second).read_bytes() == b"version two!"
    assert cache.fetch(files, first).read_bytes() == b"version one"  # served from the cache, not stale


def test_cli_round_trip_with_password_from_environment(
    sciserver: SciServerHandle, run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    source = _write(tmp_path / "src.bin", b"via the cli")
    config = json.dumps({k: v for k, v in sciserver.config().items() if k != "password"})
    env = {"DEEPFORGE_SCISERVER_FILES_PASSWORD": sciserver.password}
    put = run_cli("storage", "put", "-q", "-b", "sciserver-files", "--config", config, str(source), "cli/file", env=env)
    assert put.returncode == 0, put.stderr
    info = DataInfo.from_json(put.stdout)
    assert info.data["filename"] == "cli/file" and info.data["size"] == 11
    got = run_cli(
        "storage",
        "get",
        "-q",
        "-b",
        "sciserver-files",
        "--config",
        config,
        put.stdout.strip(),
        str(tmp_path / "back.bin"),
        env=env,
    )
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "back.bin").read_bytes() == b"via the cli"
    bad = run_cli("storage", "stat", "-b", "sciserver-files", "--config", config, "cli/nope", env=env)
    assert bad.returncode != 0 and "does not exist" in bad.stderr
    for proc in (put, got, bad):
        assert sciserver.password not in proc.stdout + proc.stderr


def test_unreplayable_upload_after_401_asks_for_a_retry_and_the_retry_works(sciserver: SciServerHandle) -> None:
    files = client(sciserver)
    files.put_file_stream("first", io.BytesIO(b"1"))
    sciserver.expire_tokens()
    with pytest.raises(StorageError, match="cannot be replayed, retry the upload"):
        files.put_file_stream("piped", _Unsized(b"from a pipe"))
    assert files.put_file_stream("piped", _Unsized(b"from a pipe")).data["size"] == 11
    assert logins(sciserver) == 2


class _Broken:
    """A source that fails after the first chunk (a dying pipe, a full disk on the producer's side)."""

    def __init__(self) -> None:
        self.calls = 0

    def read(self, size: int = -1) -> bytes:
        self.calls += 1
        if self.calls > 1:
            raise OSError("source broke")
        return b"partial"


def test_failed_upload_keeps_the_previous_version_and_leaves_nothing(sciserver: SciServerHandle) -> None:
    files = client(sciserver)
    files.put_file_stream("keep/me", io.BytesIO(b"previous"))
    with pytest.raises((OSError, StorageError)):
        files.put_file_stream("keep/me", _Broken())
    assert sorted(p.name for p in (sciserver.volume_path() / "keep").iterdir()) == ["me"]
    assert (sciserver.volume_path() / "keep" / "me").read_bytes() == b"previous"
