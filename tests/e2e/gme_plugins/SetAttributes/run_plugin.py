"""Test-only plugin: set attributes/registry of the active node (``{"attrs": {..}, "registry": {..}}``).

What any user may do in the model editor, e.g. paste a crafted dataInfo into a Data node's ``data``; the
security tests use it to show that the plugins check what they read from the model at run time.
"""

import sys

from deepforge_plugins.base import DeepForgePlugin, run


class SetAttributes(DeepForgePlugin):
    def main(self) -> None:
        attrs = dict(self.config().get("attrs") or {})
        registry = dict(self.config().get("registry") or {})
        path = self.model.path(self.active_node)

        def edit() -> None:
            node = self.model.node(path)
            for name, value in attrs.items():
                self.model.core.set_attribute(node, name, value)
            for name, value in registry.items():
                self.model.core.set_registry(node, name, value)

        self.model.change(f"set {', '.join([*attrs, *registry])} of {path}", edit)
        self.result_set_success(True)


sys.exit(run(SetAttributes))
