"""CancelExecution (webgme-bindings layout); the logic lives in deepforge_plugins.cancel."""

from deepforge_plugins.cancel import CancelExecution

__all__ = ["CancelExecution"]
