"""SetExecutionTargets (webgme-bindings layout); the logic lives in deepforge_plugins.set_targets."""

from deepforge_plugins.set_targets import SetExecutionTargets

__all__ = ["SetExecutionTargets"]
