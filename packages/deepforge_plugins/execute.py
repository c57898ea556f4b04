"""ExecutePipeline and ExecuteJob: the plugins users run to execute a pipeline or re-run one job.

ExecutePipeline on a Pipeline creates an Execution and runs it; on an Execution that is ``running`` (its
previous runner died), or ``canceled`` without an ``endTime`` (a cancel request no runner answered), it
re-attaches to the jobs from their stored ``jobInfo`` (and then cancels them); on any other Execution it runs it
again from the start.  Every storage and compute config is validated, and checked against the operator
policy (:mod:`deepforge_adapters.policy`) with every artifact the run would read, before the Execution is even
created, so a misconfigured or forbidden backend never leaves a half-started run behind.
"""

from __future__ import annotations

import logging

from . import pipeline
from .base import DeepForgePlugin
from .dag import JobState
from .engine import ExecutionRun, check_data_info, input_artifact_data, resolve_targets
from .pipeline import PipelineJob, create_execution
from .run_config import RunConfig, plugin_run_config
from .status import ModelStatus
from .targets import Targets

log = logging.getLogger(__name__)


def check_pipeline_targets(plugin: DeepForgePlugin, pipeline_path: str, rc: RunConfig) -> None:
    """Resolve every operation's targets as the Execution will (Operation > Pipeline > dialog)."""
    model = plugin.model
    pipe = Targets.from_json(pipeline.execution_targets(model, pipeline_path))
    for op in model.children(model.node(pipeline_path), "Operation"):
        spec = PipelineJob(
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
            if pipeline.cancel_pending(model, active) or model.attr(self.active_node, "status") == ModelStatus.RUNNING:
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
        if spec.status in (ModelStatus.RUNNING, ModelStatus.QUEUED) and spec.job_info:
            run.resume_job(job)
        else:
            model.change(f"Restarting job {spec.name}", lambda: run.reset_job(job))
        outcome = run.run(execution_status=False)
        self.report(outcome, run)
