"""Test-only plugin: the subset of DeepForge's ``pipeline`` metamodel (reference §1.2) the plugins use.

Used by the e2e tests while no seed with the metamodel is installed in webgme-config/seeds.
"""

import sys

from deepforge_plugins.base import DeepForgePlugin, run

STRING, INTEGER = {"type": "string"}, {"type": "integer"}
ATTRIBUTES = {
    "Data": {"data": STRING, "type": STRING, "createdAt": INTEGER, "provOutput": STRING},
    "Operation": {"code": STRING, "lineOffset": STRING, "displayColor": STRING, "condaEnv": STRING},
    "Output": {"saveName": STRING},
    "Execution": {
        "status": STRING, "tagname": STRING, "createdAt": INTEGER, "startTime": INTEGER, "endTime": INTEGER,
        "executionId": STRING, "runId": STRING,
    },
    "Job": {"status": STRING, "stdout": STRING, "execFiles": STRING, "jobInfo": STRING, "executionId": STRING},
}
BASES = [
    ("Data", "FCO"), ("Inputs", "FCO"), ("Outputs", "FCO"), ("Operation", "FCO"), ("Input", "Operation"),
    ("Output", "Operation"), ("Transporter", "FCO"), ("Pipeline", "FCO"), ("Execution", "FCO"), ("Job", "FCO"),
]


class BuildTestMetamodel(DeepForgePlugin):
    def main(self) -> None:
        core, root = self.core, self.root_node
        fco = core.load_by_path(root, "/1")
        meta = {"FCO": fco}
        for name, base in BASES:
            node = core.create_node({"parent": root, "base": meta[base]})
            core.set_attribute(node, "name", name)
            core.add_member(root, "MetaAspectSet", node)
            meta[name] = node
        for name, attrs in ATTRIBUTES.items():
            for attr, rule in attrs.items():
                core.set_attribute_meta(meta[name], attr, rule)
        for name in ("Inputs", "Outputs"):
            core.set_child_meta(meta[name], meta["Data"])
            box = core.create_node({"parent": meta["Operation"], "base": meta[name]})
            core.set_attribute(box, "name", name)
            core.set_child_meta(meta["Operation"], meta[name], 1, 1)
        core.set_pointer_meta_target(meta["Input"], "artifact", meta["Data"], 0, 1)
        for ptr in ("src", "dst"):
            core.set_pointer_meta_target(meta["Transporter"], ptr, meta["Data"], 0, 1)
        core.set_pointer_meta_target(meta["Execution"], "origin", meta["Pipeline"], 0, 1)
        core.create_set(meta["Pipeline"], "executions")
        core.set_pointer_meta_target(meta["Pipeline"], "executions", meta["Execution"], 0, -1)
        for parent, child in (("Pipeline", "Operation"), ("Pipeline", "Transporter"), ("Execution", "Job"),
                              ("Execution", "Transporter"), ("Job", "Operation")):
            core.set_child_meta(meta[parent], meta[child])
        for folder, child in (("MyPipelines", "Pipeline"), ("MyExecutions", "Execution"), ("MyArtifacts", "Data")):
            node = core.create_node({"parent": root, "base": fco})
            core.set_attribute(node, "name", folder)
            core.set_child_meta(node, meta[child])
        self.util.save(root, self.commit_hash, self.branch_name, "Pipeline metamodel (test subset)")


sys.exit(run(BuildTestMetamodel))
