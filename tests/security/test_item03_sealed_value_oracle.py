"""Item 3: a sealed value is not a decryption oracle.

A victim's ``secretAccessKey``, sealed for s3 at the real endpoint of the s3 test server for project A, is
pasted into an attacker's bundle: as ``bucketName`` next to an endpoint that is the attacker's HTTP listener,
as ``secretAccessKey`` with ``endpoint`` retargeted to that listener, and into a bundle of another project.
Each bundle runs through the real runner (a subprocess): the run fails with an error naming the field, and
the listener never receives a request carrying the secret.  The victim's own bundle still runs, and a key
rotation (``deepforge secrets keygen --out`` / ``rotate``) keeps old seals readable while new ones use the
new key id.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.jobs.bundle import read_bundle
from deepforge_adapters.jobs.layout import JOB_FILE

from tests.fixtures.attacker import AttackerServer
from tests.fixtures.jobs import last_line, run_runner

pytestmark = pytest.mark.integration

PROJECT_A = "victim+ProjectA"
PROJECT_B = "attacker+ProjectB"
WRITE_OUTPUT = """
import os
os.makedirs("outputs/result", exist_ok=True)
open("outputs/result/data", "wb").write(b"some output")
"""


@pytest.fixture
def key_file(tmp_path: Path, run_cli: Callable[..., Any]) -> Path:
    path = tmp_path / "keys" / "secret.keyring"
    path.parent.mkdir()
    result = run_cli("secrets", "keygen", "--out", str(path))
    assert result.returncode == 0, result.stderr
    assert path.stat().st_mode & 0o777 == 0o600
    return path


def _env(job_env: dict[str, str], key_file: Path) -> dict[str, str]:
    env = {k: v for k, v in job_env.items() if k != secrets.KEY_ENV}
    env[secrets.KEY_FILE_ENV] = str(key_file)
    return env


def _build(make_bundle: Callable[..., Path], config: dict[str, Any], project: str, keyring: Any) -> Path:
    return make_bundle(
        WRITE_OUTPUT,
        outputs=["result"],
        storage_id="s3",
        storage_dir=f"{project}/executions/op",
        storage_config=config,
        secret_key=keyring,
        project=project,
    )


def _storage_config(bundle: Path) -> dict[str, Any]:
    return dict(json.loads((bundle / JOB_FILE).read_text())["storage"]["config"])


def _set_storage_config(bundle: Path, config: dict[str, Any]) -> None:
    job = json.loads((bundle / JOB_FILE).read_text())
    job["storage"]["config"] = config
    (bundle / JOB_FILE).write_text(json.dumps(job))


def test_a_sealed_secret_moved_retargeted_or_replayed_in_another_project_never_opens(
    job_env: dict[str, str],
    s3_config: dict[str, Any],
    make_bundle: Callable[..., Path],
    attacker_listener: AttackerServer,
    key_file: Path,
) -> None:
    env = _env(job_env, key_file)
    keyring = secrets.load_keyring(env)
    secret = s3_config["secretAccessKey"]

    # The victim's job, sealed for s3 at the real endpoint for project A: runs, and uploads its output.
    victim = _build(make_bundle, s3_config, PROJECT_A, keyring)
    assert secret.encode() not in (victim / JOB_FILE).read_bytes()
    sealed_secret = _storage_config(victim)["secretAccessKey"]
    assert secrets.is_sealed(sealed_secret)
    ok = run_runner(victim, env)
    assert ok.returncode == 0, ok.stdout
    assert "job finished; outputs: result" in last_line(ok.stdout)

    # the attacker's own (plain) keys, so the s3 client would happily send requests to the listener
    attacker_config = {
        **s3_config,
        "endpoint": attacker_listener.url,
        "secretAccessKey": "attacker-own",
        "bucketName": "x",
    }
    attacks: dict[str, tuple[str, dict[str, Any]]] = {
        # pasted as bucketName: the bucket goes into the request path to the attacker's endpoint
        "as bucketName": (PROJECT_A, {**attacker_config, "bucketName": sealed_secret}),
        # in its own field, but with the endpoint retargeted to the attacker
        "endpoint retargeted": (PROJECT_A, {**attacker_config, "secretAccessKey": sealed_secret}),
        # the victim's whole config, unchanged, replayed in another project's bundle
        "another project": (PROJECT_B, {**_storage_config(victim)}),
    }
    # the first sealed field that does not open is named (the victim's config also seals accessKeyId)
    field_named = {"as bucketName": "'bucketName'", "endpoint retargeted": "'secretAccessKey'", "another project": ""}
    for name, (project, config) in attacks.items():
        bundle = _build(make_bundle, {**s3_config, "secretAccessKey": ""}, project, keyring)
        assert read_bundle(bundle).project == project
        _set_storage_config(bundle, config)
        result = run_runner(bundle, env)
        line = last_line(result.stdout)
        assert result.returncode == 1, (name, result.stdout)
        prefix = "deepforge: job storage: cannot open the sealed config of s3 storage: cannot unseal config field "
        assert line.startswith(prefix), (name, line)
        assert line[len(prefix) :].startswith(field_named[name] or "'accessKeyId'"), (name, line)
        assert "it was sealed for another field, backend, destination" in line, (name, line)
        assert secret not in result.stdout + result.stderr, name
    assert attacker_listener.leaked(secret) == [], "the attacker's listener received the victim's secret"
    assert attacker_listener.requests == [], "nothing was sent anywhere before the sealed config was refused"


def test_key_rotation_round_trip(
    job_env: dict[str, str],
    s3_config: dict[str, Any],
    make_bundle: Callable[..., Path],
    key_file: Path,
    run_cli: Callable[..., Any],
) -> None:
    env = _env(job_env, key_file)
    old = secrets.load_keyring(env)
    before = _build(make_bundle, s3_config, PROJECT_A, old)
    assert secrets.sealed_key_id(_storage_config(before)["secretAccessKey"]) == old.sealing_id

    rotated = run_cli("secrets", "rotate", str(key_file))
    assert rotated.returncode == 0, rotated.stderr
    new = secrets.load_keyring(env)
    assert new.sealing_id != old.sealing_id and new.ids == [new.sealing_id, old.sealing_id]
    assert key_file.stat().st_mode & 0o777 == 0o600

    # sealed under the old key: still opens after the rotation (the runner reads the rotated key file)
    result = run_runner(before, env)
    assert result.returncode == 0, result.stdout
    # new seals (key taken from the key file, as the plugin does) use the new key id, and run too
    after = _build(make_bundle, s3_config, PROJECT_A, secrets.load_keyring(env))
    assert secrets.sealed_key_id(_storage_config(after)["secretAccessKey"]) == new.sealing_id
    assert run_runner(after, env).returncode == 0

    # dropping the old key: what was sealed under it no longer opens, and the error says which key
    dropped = run_cli("secrets", "rotate", str(key_file), "--drop", old.sealing_id)
    assert dropped.returncode == 0, dropped.stderr
    result = run_runner(before, env)
    assert result.returncode == 1
    assert f"sealed under key '{old.sealing_id}', which is not in the keyring" in last_line(result.stdout)
