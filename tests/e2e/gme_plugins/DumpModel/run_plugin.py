"""Test-only plugin: the active node's subtree as ``{path: {meta, attrs, pointers, registry, children}}``.

The REST tree API shows a node's own data only; inherited values (an Operation's Inputs/Outputs names)
need the Core, so the e2e tests read the model through this plugin.
"""

import json
import sys

from deepforge_plugins.base import DeepForgePlugin, run


class DumpModel(DeepForgePlugin):
    def main(self) -> None:
        core = self.core
        nodes = {}
        for node in [self.active_node, *core.load_sub_tree(self.active_node)]:
            path = core.get_path(node)
            if path in nodes:
                continue
            meta = core.get_meta_type(node)
            nodes[path] = {
                "meta": core.get_fully_qualified_name(meta) if meta else None,
                "attrs": {n: core.get_attribute(node, n) for n in core.get_attribute_names(node)},
                "pointers": {n: core.get_pointer_path(node, n) for n in core.get_pointer_names(node) if n != "base"},
                "registry": {n: core.get_registry(node, n) for n in ("executionTargets",)},
                "children": core.get_children_paths(node),
            }
        self.create_message(self.active_node, json.dumps(nodes), "info")


sys.exit(run(DumpModel))
