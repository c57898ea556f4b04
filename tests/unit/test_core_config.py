"""config.py: fields, schemas, validation errors that name backend and field, env fallbacks, masking."""

from __future__ import annotations

import logging

import pytest
from deepforge_adapters.config import MASK, Config, ConfigSchema, Field, env_var_name
from deepforge_adapters.errors import ConfigError

SECRET = "AKIA-very-secret-value"

S3_LIKE = ConfigSchema(
    "s3",
    (
        Field("endpoint", "Endpoint", "S3 endpoint URL", required=True),
        Field("accessKeyId", "Access key", is_auth=True),
        Field("secretAccessKey", "Secret key", is_auth=True, env=("AWS_SECRET_ACCESS_KEY",)),
        Field("bucketName", "Bucket", default="deepforge"),
        Field("retries", "Retries", value_type="integer", default=3, minimum=0),
        Field("ratio", "Ratio", value_type="float", default=0.5),
        Field("verify", "Verify TLS", value_type="boolean", default=True),
        Field("pool", "Pool", choices=("Storage", "Temporary"), default="Storage"),
        Field("extra", "Extra", value_type="dict", default=None),
    ),
)


def test_env_var_name_snake_cases_field_and_backend() -> None:
    assert env_var_name("s3", "secretAccessKey") == "DEEPFORGE_S3_SECRET_ACCESS_KEY"
    assert env_var_name("sciserver-files", "volumePool") == "DEEPFORGE_SCISERVER_FILES_VOLUME_POOL"
    assert env_var_name("local", "root") == "DEEPFORGE_LOCAL_ROOT"


def test_field_rejects_unknown_value_type() -> None:
    with pytest.raises(ValueError, match="unknown value_type"):
        Field("x", value_type="list")


def test_config_structure_matches_webgme_format() -> None:
    items = {i["name"]: i for i in S3_LIKE.to_config_structure()}
    assert items["endpoint"] == {
        "name": "endpoint",
        "displayName": "Endpoint",
        "description": "S3 endpoint URL",
        "value": "",
        "valueType": "string",
        "readOnly": False,
        "required": True,
    }
    assert items["secretAccessKey"]["isAuth"] is True
    assert "isAuth" not in items["bucketName"]
    assert items["bucketName"]["value"] == "deepforge"
    assert items["retries"]["minValue"] == 0
    assert items["pool"]["valueItems"] == ["Storage", "Temporary"]
    assert items["extra"]["value"] == {}
    assert S3_LIKE.to_json() == S3_LIKE.to_config_structure()
    assert Field("n").to_config_structure()["displayName"] == "n"


def test_schema_names() -> None:
    assert S3_LIKE.field_names()[:2] == ["endpoint", "accessKeyId"]
    assert S3_LIKE.secret_names() == frozenset({"accessKeyId", "secretAccessKey"})


def test_validate_applies_defaults_and_coerces_strings() -> None:
    config = S3_LIKE.validate({"endpoint": "http://x", "retries": "5", "verify": "no", "ratio": "2"})
    assert config["bucketName"] == "deepforge"
    assert config["retries"] == 5
    assert config["verify"] is False
    assert config["ratio"] == 2.0
    assert config["extra"] is None


@pytest.mark.parametrize(
    ("given", "field", "fragment"),
    [
        ({}, "endpoint", "is required"),
        ({"endpoint": "x", "bucket": "b"}, "bucket", "unknown field"),
        ({"endpoint": "x", "retries": "many"}, "retries", "cannot parse"),
        ({"endpoint": "x", "retries": True}, "retries", "expected integer"),
        ({"endpoint": "x", "retries": -1}, "retries", "must be >= 0"),
        ({"endpoint": "x", "pool": "Other"}, "pool", "must be one of"),
        ({"endpoint": 5}, "endpoint", "expected string"),
        ({"endpoint": "x", "verify": "maybe"}, "verify", "cannot parse"),
    ],
)
def test_validation_errors_name_backend_and_field(given: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        S3_LIKE.validate(given)
    assert info.value.backend == "s3"
    assert info.value.field == field
    assert str(info.value).startswith(f"s3: config field {field!r}: ")
    assert fragment in str(info.value)


def test_validate_rejects_non_mapping() -> None:
    with pytest.raises(ConfigError, match="s3: config: expected an object, got list"):
        S3_LIKE.validate(["endpoint"])  # type: ignore[arg-type]


def test_type_errors_on_secret_fields_do_not_show_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        S3_LIKE.validate({"endpoint": "x", "accessKeyId": 123456789})
    assert "123456789" not in str(info.value)
    assert MASK in str(info.value)
    schema = ConfigSchema("b", (Field("n", value_type="integer", is_auth=True),))
    with pytest.raises(ConfigError) as info2:
        schema.resolve({}, environ={"DEEPFORGE_B_N": "s3cr3t-not-a-number"})
    assert "s3cr3t-not-a-number" not in str(info2.value)
    assert "DEEPFORGE_B_N" in str(info2.value)


def test_resolve_uses_generic_env_then_field_env_then_default() -> None:
    env = {"DEEPFORGE_S3_ENDPOINT": "http://env", "AWS_SECRET_ACCESS_KEY": SECRET, "DEEPFORGE_S3_RETRIES": "7"}
    config = S3_LIKE.resolve({}, environ=env)
    assert config["endpoint"] == "http://env"
    assert config["secretAccessKey"] == SECRET
    assert config["retries"] == 7
    assert config["bucketName"] == "deepforge"
    # the generic variable wins over the field's extra ones; explicit config wins over both
    env["DEEPFORGE_S3_SECRET_ACCESS_KEY"] = "generic"
    assert S3_LIKE.resolve({}, environ=env)["secretAccessKey"] == "generic"
    assert S3_LIKE.resolve({"endpoint": "http://given"}, environ=env)["endpoint"] == "http://given"
    # empty values count as absent
    assert S3_LIKE.resolve({"endpoint": ""}, environ=env)["endpoint"] == "http://env"


def test_resolve_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPFORGE_S3_ENDPOINT", "http://from-os")
    assert S3_LIKE.resolve(None)["endpoint"] == "http://from-os"


def _config() -> Config:
    return S3_LIKE.validate({"endpoint": "http://x", "accessKeyId": "AKIA1234", "secretAccessKey": SECRET})


def test_config_is_a_read_only_mapping() -> None:
    config = _config()
    assert config["endpoint"] == "http://x"
    assert len(config) == len(S3_LIKE.fields)
    assert set(config) == set(S3_LIKE.field_names())
    assert config.backend == "s3"
    assert config.secret_names == frozenset({"accessKeyId", "secretAccessKey"})
    with pytest.raises(TypeError):
        config["endpoint"] = "y"  # type: ignore[index]


def test_config_parts() -> None:
    config = _config()
    assert "secretAccessKey" not in config.public()
    assert config.public()["endpoint"] == "http://x"
    assert config.secrets() == {"accessKeyId": "AKIA1234", "secretAccessKey": SECRET}
    assert sorted(config.secret_values()) == sorted(["AKIA1234", SECRET])
    assert config.to_dict()["secretAccessKey"] == SECRET
    assert config.masked()["secretAccessKey"] == MASK
    assert config.masked()["endpoint"] == "http://x"


def test_config_masks_secrets_in_repr_str_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    config = _config()
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert MASK in repr(config)
    assert "http://x" in repr(config)
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("config is %s / %r", config, config)
    assert SECRET not in caplog.text
    assert "AKIA1234" not in caplog.text


def test_absent_secret_is_not_masked_as_present() -> None:
    config = S3_LIKE.validate({"endpoint": "x"})
    assert config.masked()["accessKeyId"] is None
    assert config.secrets() == {}
    assert config.secret_values() == []
