"""secrets.py: seal/unseal, wrong or missing key, key files, log redaction."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.errors import SecretsError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


def test_generate_key_is_a_fresh_fernet_key() -> None:
    a, b = secrets.generate_key(), secrets.generate_key()
    assert a != b
    assert len(a) == 44 and a.endswith("=")


def test_seal_unseal_round_trip_leaves_no_plaintext() -> None:
    key = secrets.generate_key()
    config = {"endpoint": "http://s3", "secretAccessKey": SECRET, "accessKeyId": "", "bucketName": "b"}
    sealed = secrets.seal(config, ["secretAccessKey", "accessKeyId"], key)
    assert SECRET not in json.dumps(sealed)
    assert secrets.is_sealed(sealed["secretAccessKey"])
    assert sealed["accessKeyId"] == ""  # empty secrets stay empty: nothing to seal
    assert sealed["endpoint"] == "http://s3"
    assert secrets.unseal(sealed, key) == config


def test_unseal_without_sealed_fields_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.KEY_ENV, raising=False)
    monkeypatch.delenv(secrets.KEY_FILE_ENV, raising=False)
    assert secrets.unseal({"a": 1}) == {"a": 1}


def test_unseal_with_the_wrong_key_names_the_field() -> None:
    sealed = secrets.seal({"token": SECRET}, ["token"], secrets.generate_key())
    with pytest.raises(SecretsError, match="cannot unseal config field 'token': wrong secret key") as info:
        secrets.unseal(sealed, secrets.generate_key())
    assert SECRET not in str(info.value)


def test_tampered_token_is_refused() -> None:
    key = secrets.generate_key()
    sealed = secrets.seal({"token": SECRET}, ["token"], key)
    token = sealed["token"][secrets.SEALED]
    sealed["token"] = {secrets.SEALED: token[:-8] + ("A" if token[-8] != "A" else "B") + token[-7:]}
    with pytest.raises(SecretsError, match="tampered"):
        secrets.unseal(sealed, key)


def test_invalid_key_is_a_clear_error() -> None:
    with pytest.raises(SecretsError, match="not a valid Fernet key"):
        secrets.seal({"token": SECRET}, ["token"], "too-short")


def test_missing_key_says_how_to_make_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(secrets.KEY_ENV, raising=False)
    monkeypatch.delenv(secrets.KEY_FILE_ENV, raising=False)
    sealed = secrets.seal({"token": SECRET}, ["token"], secrets.generate_key())
    with pytest.raises(SecretsError, match=r"DEEPFORGE_SECRET_KEY.*deepforge secrets keygen"):
        secrets.unseal(sealed)


def test_load_key_from_env_then_file(tmp_path: Path) -> None:
    key = secrets.generate_key()
    assert secrets.load_key({secrets.KEY_ENV: f" {key}\n"}) == key
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    assert secrets.load_key({secrets.KEY_FILE_ENV: str(key_file)}) == key
    with pytest.raises(SecretsError, match=r"cannot read secret key file .*missing"):
        secrets.load_key({secrets.KEY_FILE_ENV: str(tmp_path / "missing")})
    with pytest.raises(SecretsError, match="no secret key"):
        secrets.load_key({})


def test_unseal_uses_the_environment_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = secrets.generate_key()
    monkeypatch.setenv(secrets.KEY_ENV, key)
    assert secrets.unseal(secrets.seal({"token": SECRET}, ["token"], key)) == {"token": SECRET}


def test_unsealed_values_are_redacted_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    key = secrets.generate_key()
    value = "unsealed-" + secrets.generate_key()[:12]
    secrets.unseal(secrets.seal({"token": value}, ["token"], key), key)
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
