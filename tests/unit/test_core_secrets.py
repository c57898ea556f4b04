"""secrets.py: seal/unseal bound to the context, keyrings and rotation, wrong or missing key, log redaction."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.config import ConfigSchema, Field
from deepforge_adapters.errors import SecretsError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


S3ISH = ConfigSchema(
    "s3ish",
    (
        Field("endpoint", binds_secrets=True),
        Field("secretAccessKey", is_auth=True),
        Field("accessKeyId", is_auth=True),
        Field("bucketName"),
    ),
)
TOKENISH = ConfigSchema("tokenish", (Field("token", is_auth=True),))


def test_generate_key_is_a_fresh_one_key_keyring() -> None:
    a, b = secrets.generate_key(), secrets.generate_key()
    assert a != b
    ring = secrets.Keyring.parse(a, "test")
    assert len(ring.keys) == 1 and len(ring.keys[0][1]) == 32


def test_seal_unseal_round_trip_leaves_no_plaintext() -> None:
    key = secrets.generate_key()
    config = {"endpoint": "http://s3", "secretAccessKey": SECRET, "accessKeyId": "", "bucketName": "b"}
    sealed = secrets.seal(config, S3ISH, key, project="p")
    assert SECRET not in json.dumps(sealed)
    assert secrets.is_sealed(sealed["secretAccessKey"])
    assert sealed["accessKeyId"] == ""  # empty secrets stay empty: nothing to seal
    assert sealed["endpoint"] == "http://s3"
    assert secrets.sealed_key_id(sealed["secretAccessKey"]) == secrets.Keyring.parse(key, "k").sealing_id
    assert secrets.unseal(sealed, S3ISH, key, project="p") == config


def test_unseal_without_sealed_fields_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.KEY_ENV, raising=False)
    monkeypatch.delenv(secrets.KEY_FILE_ENV, raising=False)
    assert secrets.unseal({"a": 1}, TOKENISH) == {"a": 1}


def test_unseal_with_the_wrong_key_names_the_field() -> None:
    sealed = secrets.seal({"token": SECRET}, TOKENISH, secrets.generate_key())
    with pytest.raises(SecretsError, match=r"config field 'token' of tokenish: .*not in the keyring") as info:
        secrets.unseal(sealed, TOKENISH, secrets.generate_key())
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "move",
    [
        lambda c: {**c, "bucketName": c["secretAccessKey"]},  # another field
        lambda c: {**c, "endpoint": "http://attacker"},  # another destination
    ],
)
def test_a_moved_or_retargeted_value_does_not_open(move: Any) -> None:
    key = secrets.generate_key()
    sealed = secrets.seal({"endpoint": "http://s3", "secretAccessKey": SECRET}, S3ISH, key, project="A")
    moved = move(sealed)
    if "bucketName" in moved:
        moved = {"endpoint": "http://s3", "bucketName": moved["bucketName"]}
    with pytest.raises(SecretsError, match=r"config field '\w+' of s3ish: it was sealed for another") as info:
        secrets.unseal(moved, S3ISH, key, project="A")
    assert SECRET not in str(info.value)
    with pytest.raises(SecretsError, match="project 'B'"):  # another project
        secrets.unseal(sealed, S3ISH, key, project="B")
    other = ConfigSchema("other", S3ISH.fields)  # another backend with the same fields
    with pytest.raises(SecretsError, match="of other"):
        secrets.unseal(sealed, other, key, project="A")


def test_tampered_token_is_refused() -> None:
    key = secrets.generate_key()
    sealed = secrets.seal({"token": SECRET}, TOKENISH, key)
    token = sealed["token"][secrets.SEALED]
    sealed["token"] = {secrets.SEALED: token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]}
    with pytest.raises(SecretsError, match="tampered"):
        secrets.unseal(sealed, TOKENISH, key)


def test_old_fernet_values_and_keys_are_refused_clearly() -> None:
    fernet_value = {"token": {secrets.SEALED: "gAAAAABl" + "x" * 80}}
    with pytest.raises(SecretsError, match="'token' of tokenish: it was sealed in the old Fernet format"):
        secrets.unseal(fernet_value, TOKENISH, secrets.generate_key())
    with pytest.raises(SecretsError, match="old Fernet key"):
        secrets.Keyring.parse("Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmFyYmF6Zm9vYmE=", "the key file")


def test_invalid_key_is_a_clear_error() -> None:
    with pytest.raises(SecretsError, match="expected '<key id>:<base64url key>'"):
        secrets.seal({"token": SECRET}, TOKENISH, "too-short")
    with pytest.raises(SecretsError, match="AES-256 keys are 32"):
        secrets.seal({"token": SECRET}, TOKENISH, "k1:AAAA")


def test_missing_key_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.KEY_ENV, raising=False)
    monkeypatch.delenv(secrets.KEY_FILE_ENV, raising=False)
    sealed = secrets.seal({"token": SECRET}, TOKENISH, secrets.generate_key())
    with pytest.raises(SecretsError, match=r"DEEPFORGE_SECRET_KEY.*deepforge secrets keygen"):
        secrets.unseal(sealed, TOKENISH)


def test_load_keyring_from_env_then_file(tmp_path: Path) -> None:
    key = secrets.generate_key()
    ring = secrets.Keyring.parse(key, "k")
    assert secrets.load_keyring({secrets.KEY_ENV: f" {key}\n"}) == ring
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    assert secrets.load_keyring({secrets.KEY_FILE_ENV: str(key_file)}) == ring
    with pytest.raises(SecretsError, match=r"cannot read secret key file .*missing"):
        secrets.load_keyring({secrets.KEY_FILE_ENV: str(tmp_path / "missing")})
    with pytest.raises(SecretsError, match="no secret key"):
        secrets.load_keyring({})


def test_rotation_keeps_old_keys_for_reading(tmp_path: Path) -> None:
    old = secrets.Keyring.generate()
    sealed = secrets.seal({"token": SECRET}, TOKENISH, old)
    new = old.rotated()
    assert new.sealing_id != old.sealing_id and new.ids[1:] == old.ids
    assert secrets.unseal(sealed, TOKENISH, new) == {"token": SECRET}
    assert secrets.sealed_key_id(secrets.seal({"token": SECRET}, TOKENISH, new)["token"]) == new.sealing_id
    dropped = new.rotated(drop=[old.sealing_id])
    with pytest.raises(SecretsError, match="not in the keyring"):
        secrets.unseal(sealed, TOKENISH, dropped)
    path = tmp_path / "ring"
    secrets.write_keyring(path, new, overwrite=False)
    assert path.stat().st_mode & 0o777 == 0o600
    assert secrets.load_keyring({secrets.KEY_FILE_ENV: str(path)}) == new


def test_unseal_uses_the_environment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.generate_key()
    monkeypatch.setenv(secrets.KEY_ENV, key)
    assert secrets.unseal(secrets.seal({"token": SECRET}, TOKENISH, key), TOKENISH) == {"token": SECRET}


def test_unsealed_values_are_redacted_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    key = secrets.generate_key()
    value = "unsealed-" + secrets.generate_key()[:12]
    secrets.unseal(secrets.seal({"token": value}, TOKENISH, key), TOKENISH, key)
    logger = logging.getLogger("test.redaction")
    caplog.handler.addFilter(secrets.RedactingFilter())
    with caplog.at_level(logging.INFO, logger="test.redaction"):
        logger.info("calling with token=%s", value)
        logger.info("nothing secret here")
    assert value not in caplog.text
    assert f"token={secrets.REDACTED}" in caplog.text
    assert "nothing secret here" in caplog.text


def test_redact_and_register_secret() -> None:
    value = "registered-" + secrets.generate_key()[:10]
    assert secrets.redact(f"x {value} y") == f"x {value} y"
    secrets.register_secret(value)
    assert secrets.redact(f"x {value} y") == f"x {secrets.REDACTED} y"
    secrets.register_secret("abc")  # too short to redact without mangling ordinary text
    secrets.register_secret(None)
    assert secrets.redact("abc") == "abc"


def test_install_redaction_filters_every_handler_once() -> None:
    logger = logging.getLogger("test.install")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        secrets.install_redaction(logger)
        secrets.install_redaction(logger)
        assert sum(isinstance(f, secrets.RedactingFilter) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)
