"""UploadArtifact (webgme-bindings layout); the logic lives in deepforge_plugins.upload."""

from deepforge_plugins.upload import UploadArtifact

__all__ = ["UploadArtifact"]
