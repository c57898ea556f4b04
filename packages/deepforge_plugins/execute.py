"""ExecutePipeline and ExecuteJob: the plugins users run to execute a pipeline or re-run one job.

ExecutePipeline on a Pipeline creates an Execution and runs it; on an Execution that is ``running`` (its
previous runner died) it re-attaches to the jobs from their stored ``jobInfo``; on any other Execution it
runs it again from the start.  Every storage and compute config is validated, and checked against the operator
policy (:mod:`deepforge_adapters.policy`) with every artifact the run would read, before the Execution is even
created, so a misconfigured or forbidden backend never leaves a half-started run behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from deepforge_adapters.storage import DataInfo

from . import pipeline
from .base import DeepForgePlugin
from .dag import JobState
from .engine import ExecutionRun, RunConfig, check_data_info, input_artifact_data, resolve_targets
from .pipeline import JobSpec, create_execution
from .targets import KINDS, Targets, choice_from_plugin_config

log = logging.getLogger(__name__)


def run_config(plugin_config: Mapping[str, Any], backend_of: Callable[[str], str | None] | None = None) -> RunConfig:
    """Default targets and per-backend secrets from the Execute dialog.

    ``backend_of`` maps an artifact's node path to its storage backend, for DeepForge's credentials group.
    """
    choices: dict[str, Any] = {}
    secrets: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
    for kind in KINDS:
        choice, given = choice_from_plugin_config(kind, plugin_config)
        choices[kind] = choice
        if choice is not None and given:
            secrets[kind][choice.backend] = given
    # DeepForge's "Credentials for Pipeline Inputs": {artifact path: {field: value}}, per backend here.
    for path, creds in (plugin_config.get("inputs") or {}).items():
        if not isinstance(creds, Mapping):
            continue
        backend = creds.get("backend") or (backend_of(path) if backend_of else None)
        if backend:
            secrets["storage"].setdefault(backend, {}).update({k: v for k, v in creds.items() if k != "backend"})
    return RunConfig(Targets(choices["storage"], choices["compute"]), secrets)


def plugin_run_config(plugin: DeepForgePlugin) -> RunConfig:
    """:func:`run_config` of the plugin's config, artifact backends looked up in its model."""

    def backend_of(path: str) -> str | None:
        try:
            return DataInfo.from_json(plugin.model.attr(plugin.model.node(path), "data")).backend
        except Exception:  # not a Data node, or no data yet: its credentials cannot be placed
            return None

    return run_config(plugin.config(), backend_of)


def check_pipeline_targets(plugin: DeepForgePlugin, pipeline_path: str, rc: RunConfig) -> None:
    """Resolve every operation's targets as the Execution will (Operation > Pipeline > dialog)."""
    model = plugin.model
    pipe = Targets.from_json(pipeline.execution_targets(model, pipeline_path))
    for op in model.children(model.node(pipeline_path), "Operation"):
        spec = JobSpec(
            model.path(op), str(model.attr(op, "name")), model.path(op), pipeline.operation_kind(model, op), "", ""
        )
        own = Targets.from_json(pipeline.execution_targets(model, spec.path))
        resolve_targets(plugin, rc, rc.targets.overridden_by(pipe).overridden_by(own), spec)
        if spec.kind == "Input" and (data := input_artifact_data(model, spec.path)):
            check_data_info(plugin, data, f'Input "{spec.name}"', rc)


class ExecutePipeline(DeepForgePlugin):
    def main(self) -> None:
        config = self.config()
        rc = plugin_run_config(self)
        model = self.model
        active = model.path(self.active_node)
        if model.is_a(self.active_node, "Pipeline"):
            name = config.get("name") or None
            check_pipeline_targets(self, active, rc)  # a misconfigured backend is rejected before any write
            execution = model.change(
                f"Created execution from {model.attr(self.active_node, 'name')}",
                lambda: create_execution(model, active, name),
            )
            exec_name = str(model.attr(model.node(execution), "name"))
            try:
                self.project.create_tag(exec_name, model.commit_hash)
            except Exception as exc:  # a tag is a convenience; a clash must not stop the run
                log.warning("could not tag execution %s: %s", exec_name, exc)
            run = ExecutionRun(self, execution, rc)
            run.resolve_configs()
            run.start()
        elif model.is_a(self.active_node, "Execution"):
            run = ExecutionRun(self, active, rc)
            run.resolve_configs()
            if model.attr(self.active_node, "status") in ("running", "canceling"):
                log.info("execution %s is running without a runner: resuming", active)
                run.resume()
            else:
                run.start()
        else:
            self.fail("ExecutePipeline runs on a Pipeline or an Execution")
            return
        self.report(run.run(), run)

    def report(self, outcome: JobState, run: ExecutionRun) -> None:
        name = run._name()
        if outcome == JobState.SUCCESS:
            self.create_message(self.model.node(run.execution), f"Execution {name} succeeded", "info")
            self.result_set_success(True)
        elif outcome == JobState.CANCELED:
            self.fail(f"Execution {name} was canceled")
        else:
            self.fail(run.failure or f"Execution {name} failed")


class ExecuteJob(ExecutePipeline):
    """Re-run one Job of an Execution with the inputs recorded on its ports."""

    def main(self) -> None:
        model = self.model
        if not model.is_a(self.active_node, "Job"):
            self.fail("ExecuteJob runs on a Job of an Execution")
            return
        job = model.path(self.active_node)
        execution = model.path(model.core.get_parent(self.active_node))
        run = ExecutionRun(self, execution, plugin_run_config(self))
        run.resolve_configs()
        for other in run.graph.jobs:
            if other != job:
                run.scheduler.finish(other, JobState.SUCCESS)  # only this one is to run
        spec = run.graph.jobs[job]
        if spec.status in ("running", "queued") and spec.job_info:
            run.resume_job(job)
        else:
            model.change(f"Restarting job {spec.name}", lambda: run.reset_job(job))
        outcome = run.run(execution_status=False)
        self.report(outcome, run)
