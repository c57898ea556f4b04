"""SetExecutionTargets: remember on a Pipeline or Operation node where it stores artifacts and where it runs.

Only the backend ids and their non-secret config are stored (registry ``executionTargets``, JSON); the
config is validated against the backend's schema and the operator policy first, so a typo or a forbidden
backend is reported now rather than at run time (the run checks again: a node's registry can be edited).
A kind left empty in the dialog keeps the node's previous choice; ``clear`` removes the node's choices (an
Operation then follows its Pipeline again).
"""

from __future__ import annotations

from .base import DeepForgePlugin
from .targets import KINDS, REGISTRY_KEY, Targets, choice_from_plugin_config


class SetExecutionTargets(DeepForgePlugin):
    def main(self) -> None:
        model = self.model
        node = self.active_node
        if not (model.is_a(node, "Pipeline") or model.is_a(node, "Operation")):
            self.fail("SetExecutionTargets runs on a Pipeline or an Operation")
            return
        config = self.config()
        path = model.path(node)
        if config.get("clear"):
            targets = Targets()
        else:
            chosen = {kind: choice_from_plugin_config(kind, config)[0] for kind in KINDS}
            for kind, choice in chosen.items():  # refuse now what the operator policy would refuse at run time
                if choice is not None:
                    self.policy().apply(kind, choice.backend, choice.config, self.server_url())
            current = Targets.from_json(model.core.get_registry(node, REGISTRY_KEY) or "")
            targets = current.overridden_by(Targets(chosen["storage"], chosen["compute"]))
        text = _dumps(targets)

        def edit() -> None:
            target = model.node(path)
            if text:
                model.core.set_registry(target, REGISTRY_KEY, text)
            else:
                model.core.del_registry(target, REGISTRY_KEY)

        name = model.attr(node, "name")
        summary = ", ".join(f"{k}={c.backend}" for k in KINDS if (c := targets.get(k))) or "cleared"
        model.change(f"Execution targets of {name}: {summary}", edit)
        self.create_message(node, f"{name}: {summary}", "info")
        self.result_set_success(True)


def _dumps(targets: Targets) -> str:
    import json

    value = targets.to_json()
    return json.dumps(value, sort_keys=True) if value else ""
