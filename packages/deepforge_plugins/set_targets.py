"""SetExecutionTargets: remember on a Pipeline or Operation node where it stores artifacts and where it runs.

Only the backend ids and their non-secret config are stored (registry ``executionTargets``, JSON); the
config is validated against the backend's schema and the operator policy first, so a typo or a forbidden
backend is reported now rather than at run time (the run checks again: a node's registry can be edited).
A kind left empty in the dialog keeps each node's previous choice; ``clear`` removes the nodes' choices (an
Operation then follows its Pipeline again).

The nodes are the plugin's active selection when it holds Pipelines or Operations (operations clicked in
the pipeline view: per-operation targets without opening each operation), else the active node.  Selected
nodes of other kinds (a connection) are skipped and named in a message.  All nodes change in one commit.
"""

from __future__ import annotations

import json

from .base import DeepForgePlugin
from .model import Node
from .targets import KINDS, REGISTRY_KEY, Targets, choice_from_plugin_config

TARGET_TYPES = ("Pipeline", "Operation")


class SetExecutionTargets(DeepForgePlugin):
    def main(self) -> None:
        model = self.model

        def is_target(node: Node) -> bool:
            return any(model.is_a(node, t) for t in TARGET_TYPES)

        selected = [n for n in self.active_selection if is_target(n)]
        skipped = [n for n in self.active_selection if not is_target(n)]
        nodes = selected or [self.active_node]
        if not is_target(nodes[0]):
            self.fail("SetExecutionTargets runs on a Pipeline or an Operation (or a selection of Operations)")
            return
        config = self.config()
        if config.get("clear"):
            chosen = Targets()
        else:
            picked = {kind: choice_from_plugin_config(kind, config)[0] for kind in KINDS}
            for kind, choice in picked.items():  # refuse now what the operator policy would refuse at run time
                if choice is not None:
                    self.policy().apply(kind, choice.backend, choice.config, self.server_url())
            chosen = Targets(picked["storage"], picked["compute"])
        texts: dict[str, str] = {}
        summaries: list[tuple[Node, str]] = []
        for node in nodes:
            if config.get("clear"):
                targets = Targets()
            else:
                targets = Targets.from_json(model.core.get_registry(node, REGISTRY_KEY) or "").overridden_by(chosen)
            texts[model.path(node)] = _dumps(targets)
            summary = ", ".join(f"{k}={c.backend}" for k in KINDS if (c := targets.get(k))) or "cleared"
            summaries.append((node, f"{model.attr(node, 'name')}: {summary}"))

        def edit() -> None:
            for path, text in texts.items():
                target = model.node(path)
                if text:
                    model.core.set_registry(target, REGISTRY_KEY, text)
                else:
                    model.core.del_registry(target, REGISTRY_KEY)

        model.change("Execution targets of " + "; ".join(s for _, s in summaries), edit)
        for node, summary in summaries:
            self.create_message(node, summary, "info")
        for node in skipped:
            self.create_message(node, f"{model.attr(node, 'name') or model.path(node)}: not a Pipeline or an "
                                "Operation, skipped", "warning")  # fmt: skip
        self.result_set_success(True)


def _dumps(targets: Targets) -> str:
    value = targets.to_json()
    return json.dumps(value, sort_keys=True) if value else ""
