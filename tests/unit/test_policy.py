"""The operator policy file: parsing, validation errors (file and key), and the checks the plugins rely on."""

from __future__ import annotations

from pathlib import Path

import pytest
from deepforge_adapters.policy import POLICY_ENV, SERVER_DEFAULT, SERVER_URL, Policy, PolicyError, load
from deepforge_adapters.storage import DataInfo


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_no_policy_refuses_local_and_fixes_the_gme_host() -> None:
    policy = load({})
    assert policy.allowed_backends("storage", ["gme", "local", "s3"]) == ["gme", "s3"]
    assert policy.allowed_backends("compute", ["gme", "local"]) == ["gme"]
    with pytest.raises(PolicyError, match=rf"compute backend 'local' is not allowed .*\${POLICY_ENV} is not set"):
        policy.apply("compute", "local", {})
    assert policy.apply("compute", "gme", {}, "http://srv:8888") == {"host": "http://srv:8888"}
    assert policy.apply("compute", "gme", {"host": "HTTP://SRV:8888/"}, "http://srv:8888")["host"] == "http://srv:8888"
    with pytest.raises(PolicyError, match=r"compute.gme.host = 'http://evil' .* fixed to <this server's URL>"):
        policy.apply("compute", "gme", {"host": "http://evil"}, "http://srv:8888")
    assert policy.rule("storage", "local", "root").fixed is SERVER_DEFAULT  # type: ignore[union-attr]
    assert policy.rule("storage", "gme", "host").fixed is SERVER_URL  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("colour = 1", "colour", "unknown key"),
        ("[storage]\nallow = 'gme'", "storage.allow", "list of backend ids"),
        ("[storage]\n", "storage.allow", "list of backend ids"),
        ("[storage]\nallow = ['nope']", "storage.allow", "unknown storage backend 'nope'"),
        ("[storage]\nallow = ['gme']\n[storage.s3]\nendpoint = {fixed = 'x'}", "storage.s3", "does not list"),
        ("[storage]\nallow = ['s3']\n[storage.s3]\ncolour = {fixed = 1}", "storage.s3.colour", "unknown field"),
        ("[storage]\nallow = ['s3']\n[storage.s3]\nendpoint = 'x'", "storage.s3.endpoint", "must be one of"),
        ("[storage]\nallow = ['s3']\n[storage.s3]\nmaxAttempts = {fixed = 'x'}", "maxAttempts.fixed", "integer"),
        ("[storage]\nallow = ['s3']\n[storage.s3]\nendpoint = {under = ['/x']}", "endpoint.under", "path fields"),
        ("[compute]\nallow = ['local']\n[compute.local]\nworkDir = {allowed = []}", "workDir.allowed", "non-empty"),
    ],
)
def test_an_invalid_policy_names_the_file_and_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as exc:
        Policy.from_file(path)
    assert f"policy file {path}" in str(exc.value) and repr(key).strip("'") in str(exc.value)
    assert message in str(exc.value)


def test_a_named_file_that_is_missing_or_not_toml_is_an_error_not_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read it"):
        load({POLICY_ENV: str(tmp_path / "absent.toml")})
    with pytest.raises(PolicyError, match="not valid TOML"):
        load({POLICY_ENV: str(write(tmp_path, "[storage"))})


def test_fixed_allowed_and_under_rules(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "out").symlink_to("/")
    policy = Policy.from_file(
        write(
            tmp_path,
            """
[storage]
allow = ["local", "s3"]
[storage.local]
root = { fixed = "store" }
[storage.s3]
endpoint = { allowed = ["http://Minio:80/"] }
[compute]
allow = ["local"]
[compute.local]
workDir = { under = ["jobs"] }
""",
        )
    )
    root = str((tmp_path / "store").resolve())
    assert policy.apply("storage", "local", {}) == {"root": root}  # relative to the policy file
    assert policy.apply("storage", "local", {"root": root + "/"}) == {"root": root}
    with pytest.raises(PolicyError, match=r"storage.local.root = '/etc' .* fixed to"):
        policy.apply("storage", "local", {"root": "/etc"})
    assert policy.apply("storage", "s3", {"endpoint": "http://minio"}) == {"endpoint": "http://minio"}
    with pytest.raises(PolicyError, match=r"storage.s3.endpoint = 'http://other'"):
        policy.apply("storage", "s3", {"endpoint": "http://other"})
    with pytest.raises(PolicyError, match=r"storage.s3.endpoint = ''"):
        policy.check_resolved("storage", "s3", {"endpoint": None})  # AWS: not listed
    policy.apply("compute", "local", {"workDir": str(tmp_path / "jobs" / "a")})
    with pytest.raises(PolicyError, match="a directory under"):
        policy.apply("compute", "local", {"workDir": str(tmp_path / "jobs" / "out" / "etc")})  # symlink out
    with pytest.raises(PolicyError, match="not set"):
        policy.check_resolved("compute", "local", {"workDir": None})

    s3 = {"filename": "k", "bucketName": "b"}
    policy.check_data_info(DataInfo("s3", {**s3, "endpoint": "http://minio/"}))
    policy.check_data_info(DataInfo("s3", s3))  # read at the reader's own (checked) endpoint
    with pytest.raises(PolicyError, match=r"Input x: storage.s3.endpoint = 'http://evil'"):
        policy.check_data_info(DataInfo("s3", {**s3, "endpoint": "http://evil"}), "Input x")
    with pytest.raises(PolicyError, match="storage backend 'gme' is not allowed"):
        policy.check_data_info(DataInfo("gme", "0" * 40))


def test_a_secret_value_is_never_shown_in_a_refusal(tmp_path: Path) -> None:
    text = "[compute]\nallow = ['gme']\n[compute.gme]\napiToken = {fixed = 'opsecret123'}"
    policy = Policy.from_file(write(tmp_path, text))
    with pytest.raises(PolicyError) as exc:
        policy.apply("compute", "gme", {"apiToken": "users-own-token"}, "http://srv")
    assert "users-own-token" not in str(exc.value) and "opsecret123" not in str(exc.value)
