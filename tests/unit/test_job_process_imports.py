"""What a job's own processes import and run at start: each local job starts a supervisor and a runner, so
their start-up is paid once per operation (issue 14, process accounting of bench/scale_pipelines.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules the local supervisor never uses: sealing (cryptography), bundles (zipfile), hashing (blake3),
#: the storage layer.
NOT_FOR_THE_SUPERVISOR = (
    "cryptography",
    "zipfile",
    "blake3",
    "deepforge_adapters.storage",
    "deepforge_adapters.jobs.bundle",
)


def python_output(code: str, *argv: str, flags: tuple[str, ...] = ()) -> str:
    """What ``code`` prints in a fresh interpreter (which must exit 0)."""
    out = subprocess.run([sys.executable, *flags, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def imported_by(module: str) -> list[str]:
    return list(json.loads(python_output(f"import sys, json; import {module}; print(json.dumps(sorted(sys.modules)))")))


def test_the_local_supervisor_imports_only_what_it_uses() -> None:
    loaded = imported_by("deepforge_adapters.compute.local_supervisor")
    unexpected = [m for m in loaded if m.startswith(NOT_FOR_THE_SUPERVISOR)]
    assert not unexpected, f"the local supervisor imports {unexpected}"


def test_the_runner_does_not_import_cryptography_to_redact() -> None:
    loaded = imported_by("deepforge_adapters.jobs.runner")
    assert not [m for m in loaded if m.startswith("cryptography")]


def test_the_job_shim_imports_neither_pathlib_typing_nor_dataclasses() -> None:
    """Two shims start per job; these three were ~40 % of a shim's start."""
    from deepforge_adapters import process

    boot = process._SHIM_BOOT.split("sys.exit(")[0] + "import json; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(python_output(boot, process._SHIM, flags=("-I", "-S")))
    assert "subprocess" in loaded  # process.py ran
    assert not [m for m in loaded if m in ("pathlib", "typing", "dataclasses")]


@pytest.mark.parametrize("module", ["deepforge_adapters.streams", "deepforge_adapters.jobs.runner"])
def test_importing_starts_no_process(module: str) -> None:
    """``ctypes.util.find_library`` runs ``ldconfig -p``: it ran in every job's supervisor and runner."""
    code = (
        "import subprocess\n"
        "def refuse(*args, **kwargs): raise AssertionError(f'a process started at import: {args}')\n"
        "subprocess.Popen.__init__ = refuse\n"
        f"import {module}\n"
        "from deepforge_adapters import streams\n"
        "assert streams._sync_file_range() is not None, 'sync_file_range not found in the libc'\n"
        "print('ok')"
    )
    assert python_output(code).strip() == "ok"


def test_sealing_still_opens_what_it_sealed() -> None:
    """cryptography, now imported on first use, still seals and opens."""
    from deepforge_adapters import secrets
    from deepforge_adapters.storage.registry import registry

    schema = registry.get_class("s3").schema
    ring = secrets.Keyring.generate()
    config = {"endpoint": "http://s3.example", "accessKeyId": "AK", "secretAccessKey": "s3cr3t"}
    sealed = secrets.seal(config, schema, ring, project="p")
    assert secrets.is_sealed(sealed["secretAccessKey"])
    assert secrets.unseal(sealed, schema, ring, project="p")["secretAccessKey"] == "s3cr3t"
