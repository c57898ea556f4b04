"""The job bundle: build/read round trip, sealing, nonce, validation errors, zip safety."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.config import ConfigSchema, Field
from deepforge_adapters.errors import BundleError, SecretsError
from deepforge_adapters.jobs.archive import bundle_hash, safe_extract, zip_bundle
from deepforge_adapters.jobs.bundle import build_bundle, executor_config, read_bundle, retarget_storage
from deepforge_adapters.jobs.codegen import OperationSource
from deepforge_adapters.jobs.layout import JOB_FILE
from deepforge_adapters.storage import DataInfo, registry
from deepforge_adapters.storage.base import StorageClient

from tests.fixtures.waiting import make_zip

TOKEN = "tok-SUPER-secret-1234"
PASSWORD = "pw-another-secret-5678"


class VaultStorage(StorageClient):
    """A backend whose config has secret fields (only its schema is used here)."""

    id = "vault-test"
    name = "Vault (test)"
    schema = ConfigSchema(
        "vault-test",
        (Field("bucket"), Field("token", is_auth=True), Field("password", is_auth=True)),
    )

    def get_file_stream(self, data_info: DataInfo) -> Any:
        raise NotImplementedError

    def put_file_stream(self, name: str, readable: Any, progress: Any = None, size: Any = None) -> DataInfo:
        raise NotImplementedError

    def stat(self, name: str) -> DataInfo:
        raise NotImplementedError

    def delete_file(self, data_info: DataInfo) -> None:
        raise NotImplementedError

    def delete_dir(self, prefix: str) -> None:
        raise NotImplementedError

    def info(self, data_info: DataInfo) -> Any:
        raise NotImplementedError


@pytest.fixture(autouse=True)
def vault_backend() -> None:
    registry.register("vault-test", VaultStorage)


KEY = secrets.generate_key()
VAULT_CONFIG = {"bucket": "b1", "token": TOKEN, "password": PASSWORD}
IN_X = DataInfo("vault-test", {"key": "inputs/x"})
IN_Y = DataInfo("local", {"filename": "a/y", "size": 3, "sha256": "0" * 64, "mtime": 1.0})


def build(dest: Path, **kw: Any) -> Path:
    args: dict[str, Any] = {
        "storage_id": "vault-test",
        "storage_dir": "proj/executions/op",
        "storage_config": VAULT_CONFIG,
        "inputs": {"x": (IN_X, None), "y": (IN_Y, {"root": "/data"})},
        "outputs": ["model"],
        "secret_key": KEY,
        "main_py": "print('hi')\n",
    }
    args.update(kw)
    return build_bundle(dest, **args)


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_round_trip(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b", labels=["gpu", "gpu"], extra_files={"utils/helper.py": "X = 1\n"})
    spec = read_bundle(bundle)

    assert spec.root == bundle
    assert spec.storage_id == "vault-test"
    assert spec.storage_dir == "proj/executions/op"
    assert [i.name for i in spec.inputs] == ["x", "y"]
    assert spec.inputs[0].data_info == IN_X
    assert spec.inputs[1].data_info == IN_Y
    assert spec.inputs[1].config == {"root": "/data"}
    assert spec.outputs == ("model",)
    assert spec.command == ("python", "main.py")
    assert spec.labels == ("gpu",)
    assert spec.executor_config == executor_config()
    assert (bundle / "utils/helper.py").read_text() == "X = 1\n"
    assert (bundle / "main.py").read_text() == "print('hi')\n"


def test_executor_config_is_webgme_format(tmp_path: Path) -> None:
    config = json.loads((build(tmp_path / "b", output_interval=500) / "executor_config.json").read_text())
    assert config == {
        "cmd": "python3",
        "args": ["-m", "deepforge_adapters.jobs.runner"],
        "outputInterval": 500,
        "resultArtifacts": [
            {"name": "stdout", "resultPatterns": ["job_stdout.txt"]},
            {"name": "results", "resultPatterns": ["results.json"]},
        ],
    }


def test_no_plaintext_secret_anywhere_in_the_bundle_dir_or_zip(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b")
    blob = all_bytes(bundle) + zip_bundle(bundle).read_bytes()
    for secret in (TOKEN, PASSWORD):
        assert secret.encode() not in blob
    spec = read_bundle(bundle)
    # the input in the job's storage backend (config None) got the storage config, sealed too
    assert secrets.is_sealed(spec.inputs[0].config["token"])
    assert secrets.unseal(spec.storage_config, VaultStorage.schema, KEY) == VAULT_CONFIG
    assert secrets.unseal(spec.inputs[0].config, VaultStorage.schema, KEY) == VAULT_CONFIG


def test_sealing_without_a_key_fails_clearly_and_without_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(secrets.KEY_ENV, raising=False)
    monkeypatch.delenv(secrets.KEY_FILE_ENV, raising=False)
    with pytest.raises(SecretsError, match="DEEPFORGE_SECRET_KEY") as info:
        build(tmp_path / "b", secret_key=None)
    assert TOKEN not in str(info.value)


def test_no_key_needed_when_there_is_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.KEY_ENV, raising=False)
    bundle = build(tmp_path / "b", secret_key=None, storage_config={"bucket": "b"}, inputs={})
    assert read_bundle(bundle).storage_config == {"bucket": "b"}


def test_operation_bundle_contains_generated_code(tmp_path: Path) -> None:
    op = OperationSource("Train", "class Train:\n    def execute(self, x):\n        return x\n", ["x"], ["model"])
    bundle = build(tmp_path / "b", main_py=None, operation=op, inputs={"x": (IN_X, None)})
    assert "from operations.train import Train" in (bundle / "main.py").read_text()
    assert (bundle / "deepforge/serialization.py").exists()
    assert (bundle / "operations/train.py").read_text() == op.code


def test_nonce_makes_rebuilds_distinct_unless_job_caching(tmp_path: Path) -> None:
    fresh = [build(tmp_path / f"n{i}") for i in range(2)]
    assert bundle_hash(fresh[0]) != bundle_hash(fresh[1])
    assert bundle_hash(zip_bundle(fresh[0])) != bundle_hash(zip_bundle(fresh[1]))

    # sealing is randomized (AES-GCM nonces), so compare builds without secrets
    cached = [
        build(tmp_path / f"p{i}", enable_job_caching=True, storage_config={"bucket": "b"}, inputs={}) for i in range(2)
    ]
    assert not (cached[0] / "nonce").exists()
    assert bundle_hash(cached[0]) == bundle_hash(cached[1])
    assert bundle_hash(zip_bundle(cached[0])) == bundle_hash(zip_bundle(cached[1]))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"outputs": ["stdout"]}, "reserved"),
        ({"outputs": ["a", "a"]}, "unique"),
        ({"outputs": ["../x"]}, "output name"),
        ({"inputs": {"a b": (IN_X, None)}}, "input name"),
        ({"main_py": None}, "exactly one"),
        ({"command": []}, "command"),
        ({"extra_files": {"job.json": "{}"}}, "overwrite"),
        ({"extra_files": {"../escape.py": ""}}, "relative path"),
        ({"storage_id": "nope"}, "unknown storage backend 'nope'"),
    ],
)
def test_build_rejects_bad_arguments(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises((BundleError, LookupError), match=message):
        build(tmp_path / "b", **kw)


def test_build_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "old").write_text("x")
    with pytest.raises(BundleError, match="not empty"):
        build(tmp_path / "b")


def edit_job(bundle: Path, edit: Any) -> None:
    job = json.loads((bundle / JOB_FILE).read_text())
    edit(job)
    (bundle / JOB_FILE).write_text(json.dumps(job))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda j: j.pop("storage"), "'storage': is missing"),
        (lambda j: j["storage"].update(id=3), "'storage.id': expected str, got int"),
        (lambda j: j["storage"].pop("dir"), "'storage.dir': is missing"),
        (lambda j: j.update(schemaVersion=99), "'schemaVersion': unsupported version 99"),
        (lambda j: j.update(schemaVersion=True), "'schemaVersion': expected int, got bool"),
        (lambda j: j["inputs"][1].pop("dataInfo"), "'inputs[1].dataInfo': is missing"),
        (lambda j: j["inputs"][0].update(dataInfo={"backend": "s3"}), "'inputs[0]': dataInfo is missing 'data'"),
        (lambda j: j["inputs"][0].update(name="../x"), "'inputs[0]': input name"),
        (lambda j: j["inputs"][0].update(config="x"), "'inputs[0].config': expected dict"),
        (lambda j: j.update(outputs=["a", 1]), "'outputs': expected a list of non-empty strings"),
        (lambda j: j.update(outputs=["a", "a"]), "'outputs': output names must be unique"),
        (lambda j: j.update(command=[]), "'command': is empty"),
    ],
)
def test_read_names_the_file_and_the_field(tmp_path: Path, edit: Any, field: str) -> None:
    bundle = build(tmp_path / "b")
    edit_job(bundle, edit)
    with pytest.raises(BundleError) as info:
        read_bundle(bundle)
    assert str(info.value).count(str(bundle / JOB_FILE)) == 1  # named once, not once per wrapping
    assert str(info.value).count("field ") == 1
    assert field in str(info.value)


def test_read_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=re.escape("job.json: missing")):
        read_bundle(tmp_path)
    bundle = build(tmp_path / "b")
    (bundle / "executor_config.json").write_text('{"args": []}')
    with pytest.raises(BundleError, match=re.escape("executor_config.json: field 'cmd': is missing")):
        read_bundle(bundle)
    (bundle / JOB_FILE).write_text("{not json")
    with pytest.raises(BundleError, match=re.escape("job.json: not valid JSON")):
        read_bundle(bundle)
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(BundleError, match="not a zip"):
        read_bundle(tmp_path / "file.txt")


def test_zip_round_trip_and_deterministic_zip(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b", enable_job_caching=True)
    first = zip_bundle(bundle, tmp_path / "one.zip")
    second = zip_bundle(bundle, tmp_path / "two.zip")
    assert first.read_bytes() == second.read_bytes()
    spec = read_bundle(first, dest=tmp_path / "x")
    assert spec.root == tmp_path / "x"
    assert bundle_hash(spec.root) == bundle_hash(bundle)


def test_retarget_storage_rewrites_storage_and_matching_inputs(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b", inputs={"x": (IN_X, {}), "y": (IN_Y, {})})
    spec = retarget_storage(bundle, "local", {"root": "/elsewhere"})
    assert (spec.storage_id, spec.storage_config) == ("local", {"root": "/elsewhere"})
    assert spec.storage_dir == "proj/executions/op"
    assert spec.inputs[0].config == {}
    assert spec.inputs[1].config == {"root": "/elsewhere"}


# -------------------------------------------------------------------------------------------- safe_extract


def symlink_member(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../evil.py", "contains '..'"),
        ("ok/../../evil.py", "contains '..'"),
        ("/etc/evil.py", "absolute path"),
        ("C:/evil.py", "absolute path"),
        (symlink_member("link", "/etc/passwd"), "symbolic link"),
    ],
)
def test_safe_extract_rejects_escapes_and_leaves_nothing(tmp_path: Path, member: Any, reason: str) -> None:
    zpath = make_zip([("good.txt", b"fine"), (member, b"/etc/passwd")], tmp_path / "bad.zip")
    dest = tmp_path / "out"
    with pytest.raises(BundleError, match=reason) as info:
        safe_extract(zpath, dest, max_bytes=1 << 20)
    assert "bad.zip" in str(info.value)
    assert not any(p.is_file() for p in dest.rglob("*"))
    assert not (tmp_path / "evil.py").exists()


def test_safe_extract_stops_a_zip_bomb(tmp_path: Path) -> None:
    zeros = b"\0" * (8 << 20)
    zpath = make_zip([(f"part{i}", zeros) for i in range(4)], tmp_path / "bomb.zip")
    assert zpath.stat().st_size < 200_000  # it is a bomb: tiny on disk, 32 MiB inflated
    with pytest.raises(BundleError, match="exceeds the limit"):
        safe_extract(zpath, tmp_path / "out", max_bytes=16 << 20)
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_safe_extract_counts_real_bytes_when_headers_lie(tmp_path: Path) -> None:
    zpath = make_zip([("big", b"\0" * (4 << 20))], tmp_path / "liar.zip")
    # Patch the declared sizes (local and central headers) down to 10 bytes.
    raw = bytearray(zpath.read_bytes())
    size = (4 << 20).to_bytes(4, "little")
    assert raw.count(size) == 2
    zpath.write_bytes(bytes(raw).replace(size, (10).to_bytes(4, "little")))
    with pytest.raises(BundleError, match=re.escape("liar.zip")):
        safe_extract(zpath, tmp_path / "out", max_bytes=1 << 20)
    assert not any(p.stat().st_size > 1 << 20 for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_safe_extract_refuses_to_overwrite(tmp_path: Path) -> None:
    zpath = make_zip([("a.txt", b"new")], tmp_path / "dup.zip")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("old")
    with pytest.raises(BundleError, match="cannot extract"):
        safe_extract(zpath, tmp_path / "out", max_bytes=1 << 20)
    assert (tmp_path / "out" / "a.txt").read_text() == "old"


def test_safe_extract_extracts_a_good_zip(tmp_path: Path) -> None:
    zpath = make_zip([("a/b.txt", b"hello"), ("c.txt", io.BytesIO(b"x").read())], tmp_path / "ok.zip")
    safe_extract(zpath, tmp_path / "out", max_bytes=100)
    assert (tmp_path / "out/a/b.txt").read_bytes() == b"hello"
    assert sorted(os.listdir(tmp_path / "out")) == ["a", "c.txt"]


def test_zip_bundle_refuses_symlinks(tmp_path: Path) -> None:
    bundle = build(tmp_path / "b")
    (bundle / "link").symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="symbolic links"):
        zip_bundle(bundle)
