"""ImportPipeline (webgme-bindings layout); the logic lives in deepforge_plugins.import_pipeline."""

from deepforge_plugins.import_pipeline import ImportPipeline

__all__ = ["ImportPipeline"]
