"""One version: ``deepforge_adapters.__version__`` is what the distribution, both CLIs and the plugins say."""

from __future__ import annotations

import importlib.metadata

import deepforge_adapters
from click.testing import CliRunner
from deepforge_adapters.cli import main as deepforge
from deepforge_plugins.metadata import VERSION as PLUGINS_VERSION
from deepforge_worker.cli import main as deepforge_worker


def test_every_version_is_the_package_version() -> None:
    version = deepforge_adapters.__version__
    assert importlib.metadata.version("deepforge-adapters") == version
    assert version == PLUGINS_VERSION
    for command, name in ((deepforge, "deepforge"), (deepforge_worker, "deepforge-worker")):
        result = CliRunner().invoke(command, ["--version"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"{name}, version {version}"
