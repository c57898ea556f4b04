"""ExecutePipeline (webgme-bindings layout); the logic lives in deepforge_plugins.execute."""

from deepforge_plugins.execute import ExecutePipeline

__all__ = ["ExecutePipeline"]
