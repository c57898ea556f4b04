"""CancelExecution: stop a running Execution from any session, not only the browser that started it.

It writes ``status = canceled`` on the running Execution (DeepForge's enum value; the runner polls the model,
cancels its jobs and finishes the run with an ``endTime``), and cancels every running job through its compute
adapter itself, so a run whose runner died stops too.  If no runner finishes the Execution within a grace
period, the plugin marks its unfinished jobs canceled and writes the ``endTime`` itself.
"""

from __future__ import annotations

import json
import logging
import time

from deepforge_adapters import compute
from deepforge_adapters.timestamps import now_ms

from . import pipeline
from .base import DeepForgePlugin
from .engine import ExecutionRun
from .run_config import plugin_run_config
from .status import ModelStatus

log = logging.getLogger(__name__)

GRACE_SECONDS = 15.0
FINISHED = frozenset(s for s in ModelStatus if s.finished)
ACTIVE = frozenset(s for s in ModelStatus if s.active)


class CancelExecution(DeepForgePlugin):
    def main(self) -> None:
        model = self.model
        node = self.active_node
        if model.is_a(node, "Job"):
            node = model.core.get_parent(node)
        if not model.is_a(node, "Execution"):
            self.fail("CancelExecution runs on an Execution or one of its Jobs")
            return
        execution = model.path(node)
        if pipeline.run_over(model, execution):
            self.create_message(node, f"Execution is already {model.attr(node, 'status')}", "info")
            return
        model.change("Cancel requested", lambda: pipeline.set_attributes(model, execution, status=ModelStatus.CANCELED))
        run = ExecutionRun(self, execution, plugin_run_config(self))
        run.resolve_configs(check_data=False)  # canceling reads no artifact
        for job in run.graph.jobs.values():
            if job.status in ACTIVE and job.job_info:
                _, cfg = run.configs[job.path]
                try:
                    compute.get_client(cfg.backend, cfg.to_dict()).cancel_job(json.loads(job.job_info))
                    log.info("canceled job %s on %s", job.name, cfg.backend)
                except Exception as exc:
                    log.warning("could not cancel job %s: %s", job.name, exc)
        deadline = time.monotonic() + GRACE_SECONDS
        while time.monotonic() < deadline:
            model.refresh()
            if pipeline.run_over(model, execution):
                self.result_set_success(True)
                return
            time.sleep(0.5)

        def mark() -> None:  # nobody is running it: record the cancel ourselves
            for job in pipeline.read_graph(model, execution).jobs.values():
                if job.status not in FINISHED:
                    pipeline.set_attributes(model, job.path, status=ModelStatus.CANCELED)
            pipeline.set_attributes(model, execution, status=ModelStatus.CANCELED, endTime=now_ms())

        model.change("Execution canceled (no runner answered)", mark)
        self.result_set_success(True)
