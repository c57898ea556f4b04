import json

import pytest
from deepforge_adapters import compute, storage
from deepforge_adapters.compute import ComputeClient
from deepforge_adapters.config import ConfigSchema, Field
from deepforge_adapters.errors import ConfigError, UnknownBackendError
from deepforge_adapters.storage import StorageClient
from deepforge_plugins import metadata
from deepforge_plugins.base import _secret_values
from deepforge_plugins.targets import Choice, Targets, choice_from_plugin_config, dialog_fields, public_choice, resolve


class VaultStorage(StorageClient):  # only its schema is used here
    id = "vault"
    name = "Vault Storage"
    schema = ConfigSchema(
        "vault",
        (
            Field("endpoint", required=True),
            Field("bucketName", default="deepforge"),
            Field("token", is_auth=True, required=True),
        ),
    )


class FarmCompute(ComputeClient):
    id = "farm"
    name = "Render Farm"
    schema = ConfigSchema("farm", (Field("queue", default="short", choices=("short", "long")),))


@pytest.fixture(autouse=True)
def test_backends():
    storage.registry.register("vault", VaultStorage)
    compute.registry.register("farm", FarmCompute)
    yield
    storage.registry._registered.pop("vault", None)
    compute.registry._registered.pop("farm", None)


def test_public_choice_validates_and_drops_secrets():
    choice = public_choice("storage", "vault", {"endpoint": "http://s3", "token": "t0ps3cret"})
    assert choice == Choice("vault", {"endpoint": "http://s3"})
    with pytest.raises(ConfigError, match="queue"):
        public_choice("compute", "farm", {"queue": "forever"})
    with pytest.raises(ConfigError, match="colour"):
        public_choice("compute", "farm", {"colour": "red"})
    with pytest.raises(UnknownBackendError):
        public_choice("compute", "nowhere", {})


def test_resolve_adds_dialog_secrets_and_requires_them():
    choice = Choice("vault", {"endpoint": "http://s3"})
    cfg = resolve("storage", choice, {"token": "t0ps3cret", "endpoint": "ignored: not a secret"})
    assert cfg["token"] == "t0ps3cret" and cfg["endpoint"] == "http://s3"
    assert "t0ps3cret" not in repr(cfg)
    with pytest.raises(ConfigError, match="token"):
        resolve("storage", choice, {})


def test_resolve_takes_secrets_from_the_server_environment(monkeypatch):
    monkeypatch.setenv("DEEPFORGE_VAULT_TOKEN", "from-env")
    assert resolve("storage", Choice("vault", {"endpoint": "e"}))["token"] == "from-env"


def test_operation_overrides_pipeline_overrides_dialog():
    dialog = Targets(Choice("vault", {"endpoint": "a"}), Choice("farm"))
    pipe = Targets(storage=Choice("vault", {"endpoint": "b"}))
    op = Targets(compute=Choice("farm", {"queue": "long"}))
    merged = dialog.overridden_by(pipe).overridden_by(op)
    assert merged.storage == Choice("vault", {"endpoint": "b"})
    assert merged.compute == Choice("farm", {"queue": "long"})
    assert Targets.from_json(json.dumps(merged.to_json())) == merged
    assert Targets.from_json("") == Targets()


def test_both_dialog_shapes_are_read():
    flat = {"storage": "vault", "storage.vault.endpoint": "http://s3", "storage.vault.token": "tk12", "x": 1}
    assert choice_from_plugin_config("storage", flat) == (Choice("vault", {"endpoint": "http://s3"}), {"token": "tk12"})
    deepforge = {"storage": {"name": "Vault Storage", "config": {"endpoint": "e", "token": "tk12"}}}
    assert choice_from_plugin_config("storage", deepforge) == (Choice("vault", {"endpoint": "e"}), {"token": "tk12"})
    assert choice_from_plugin_config("compute", {}) == (None, {})


def test_a_registered_backend_appears_in_the_generated_dialogs():
    names = [f["name"] for f in dialog_fields("storage", include_secrets=True)]
    assert "storage.vault.endpoint" in names and "storage.vault.token" in names
    public = dialog_fields("storage", include_secrets=False)
    assert "storage.vault.token" not in [f["name"] for f in public]
    assert "vault" in public[0]["valueItems"]
    plugins = metadata.plugins()
    assert "compute.farm.queue" in [f["name"] for f in plugins["ExecutePipeline"]["configStructure"]]
    targets = [f["name"] for f in plugins["SetExecutionTargets"]["configStructure"]]
    assert "storage.vault.endpoint" in targets and "storage.vault.token" not in targets


def test_metadata_files_are_written_and_checked(tmp_path, capsys):
    assert metadata.main([str(tmp_path), "--check"]) == 1
    assert metadata.main([str(tmp_path)]) == 0
    assert metadata.main([str(tmp_path), "--check"]) == 0
    written = json.loads((tmp_path / "ExecutePipeline" / "metadata.json").read_text())
    assert written["id"] == "ExecutePipeline" and written["configStructure"][0]["name"] == "name"


def test_secret_values_found_in_both_shapes():
    config = {"storage": {"id": "vault", "config": {"token": "aaaa1"}}, "storage.vault.token": "bbbb2", "name": "x"}
    assert sorted(_secret_values(config)) == ["aaaa1", "bbbb2"]


def test_metadata_gives_the_target_dialog_what_it_needs():
    plugins = metadata.plugins()
    execute = {f["name"]: f for f in plugins["ExecutePipeline"]["configStructure"]}
    # A secret is a password input (WebGME's StringWidget ``options.isPassword``) and says it is one.
    assert execute["storage.vault.token"]["isAuth"] is True
    assert execute["storage.vault.token"]["options"] == {"isPassword": True}
    assert "options" not in execute["storage.vault.endpoint"]
    # Each field names its backend; a default is the input's placeholder; a drop-down keeps its default.
    assert (execute["storage.vault.bucketName"]["backend"], execute["storage.vault.bucketName"]["field"]) == (
        "vault",
        "bucketName",
    )
    assert (
        execute["storage.vault.bucketName"]["hint"] == "deepforge"
        and execute["storage.vault.bucketName"]["value"] == ""
    )
    assert execute["compute.farm.queue"]["value"] == "short"
    assert execute["storage"]["backends"]["vault"]["name"] == "Vault Storage"
    for plugin_id in ("ExecutePipeline", "ExecuteJob", "SetExecutionTargets", "UploadArtifact", "CancelExecution"):
        data = metadata.metadata(plugin_id, plugins[plugin_id])
        assert data["configWidget"] == metadata.CONFIG_WIDGET
        assert "token" in data["secretFields"] and "secretAccessKey" in data["secretFields"]
    assert "configWidget" not in metadata.metadata("ImportPipeline", plugins["ImportPipeline"])


def test_metadata_s3_addressing_style_has_a_real_default():
    fields = {f["name"]: f for f in metadata.plugins()["ExecutePipeline"]["configStructure"]}
    style = fields["storage.s3.addressingStyle"]
    assert style["value"] == "auto" and style["value"] in style["valueItems"]  # was "": a blank select
