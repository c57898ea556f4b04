"""ExecuteJob (webgme-bindings layout); the logic lives in deepforge_plugins.execute."""

from deepforge_plugins.execute import ExecuteJob

__all__ = ["ExecuteJob"]
