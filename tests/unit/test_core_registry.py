"""The backend registry: lazy built-ins, run-time registration, entry points, availability reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters import compute, storage
from deepforge_adapters._registry import BackendRegistry
from deepforge_adapters.errors import UnknownBackendError
from deepforge_adapters.storage import StorageClient
from deepforge_adapters.storage.local import LocalStorage


def _registry(**builtins: str) -> BackendRegistry[StorageClient]:
    return BackendRegistry("storage", "deepforge.storage.none", builtins, StorageClient)


def test_builtins_are_imported_only_when_asked_for() -> None:
    code = (
        "import sys; from deepforge_adapters import storage;"
        "assert 'deepforge_adapters.storage.local' not in sys.modules, 'imported eagerly';"
        "storage.get_client('local', {'root': '/nonexistent-root'});"
        "assert 'deepforge_adapters.storage.local' in sys.modules; print('lazy')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "lazy"


def test_get_client_builds_a_configured_local_client(tmp_path: Path) -> None:
    client = storage.get_client("local", {"root": str(tmp_path)})
    assert isinstance(client, LocalStorage)
    assert client.root == tmp_path.resolve()
    assert storage.registry.get_class("local") is LocalStorage


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UnknownBackendError) as info:
        storage.get_client("nope")
    message = str(info.value)
    assert "unknown storage backend 'nope'" in message
    assert "local" in message and "s3" in message
    assert info.value.kind == "storage"
    with pytest.raises(UnknownBackendError, match="known backends: \\(none\\)"):
        _registry().get_class("x")


def test_register_at_run_time_by_class_and_by_string() -> None:
    reg = _registry()
    reg.register("mine", LocalStorage)
    assert reg.get_class("mine") is LocalStorage
    reg.register("mine", "deepforge_adapters.storage.local:LocalStorage")
    assert reg.get_class("mine") is LocalStorage
    assert reg.ids() == ["mine"]


def test_a_target_that_is_not_a_backend_is_refused() -> None:
    reg = _registry(bad="deepforge_adapters.config:Field")
    with pytest.raises(TypeError, match=r"resolves to .*Field.*not a StorageClient"):
        reg.get_class("bad")


def test_availability_reports_why_a_backend_cannot_load() -> None:
    reg = _registry(
        local="deepforge_adapters.storage.local:LocalStorage",
        missing="deepforge_adapters.storage.no_such_module:Nope",
        wrong="deepforge_adapters.config:Field",
    )
    available, unavailable = reg.availability()
    assert available == {"local": LocalStorage}
    assert unavailable["missing"].startswith("ModuleNotFoundError: No module named")
    assert "no_such_module" in unavailable["missing"]
    assert unavailable["wrong"].startswith("TypeError:")


def test_describe_and_backends_skip_unloadable_ones(caplog: pytest.LogCaptureFixture) -> None:
    reg = _registry(local="deepforge_adapters.storage.local:LocalStorage", missing="deepforge_adapters.storage.nope:X")
    described = reg.describe()
    assert list(described) == ["local"]
    assert described["local"]["name"] == "Local Storage"
    assert described["local"]["configStructure"] == LocalStorage.schema.to_config_structure()
    assert "storage backend 'missing' is unavailable" in caplog.text
    # the package-level functions never crash on a backend that is not installed
    assert storage.backends()["local"]["name"] == "Local Storage"
    assert isinstance(compute.backends(), dict)


def test_entry_point_backend_from_a_tiny_distribution(dftest_on_path: Path, tmp_path: Path) -> None:
    """A third-party distribution declares ``deepforge.storage`` and get_client finds it, untouched repo."""
    assert "dftest" in storage.registry.ids()
    client = storage.get_client("dftest", {"root": str(tmp_path)})
    assert type(client).__module__ == "dftest_backend"
    assert client.id == "dftest"
    assert isinstance(client, StorageClient)
    assert "dftest" in storage.backends()


def test_a_builtin_id_wins_over_an_entry_point_of_the_same_name(
    dftest_distribution: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(dftest_distribution))
    reg = BackendRegistry(
        "storage", "deepforge.storage", {"dftest": "deepforge_adapters.storage.local:LocalStorage"}, StorageClient
    )
    assert reg.get_class("dftest") is LocalStorage


def test_a_missing_optional_dependency_names_the_backend_and_the_extra() -> None:
    # boto3 made unimportable in a fresh interpreter: as if installed without the s3 extra.
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from deepforge_adapters import storage\n"
        "from deepforge_adapters.errors import MissingDependencyError\n"
        "try:\n"
        "    storage.registry.get_class('s3')\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
        "print(storage.registry.availability()[1]['s3'])\n"
        "print(sorted(storage.registry.availability()[0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    raised, reason, available = out.stdout.splitlines()
    expected = "the 's3' storage backend needs 'boto3', which is not installed: pip install 'deepforge-adapters[s3]'"
    assert raised == expected
    assert reason == f"MissingDependencyError: {expected}"
    assert "s3" not in available and "local" in available
