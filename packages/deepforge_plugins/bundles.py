"""The job bundle of one Operation job: its code and ports read from the model, built, and uploaded.

:meth:`ExecutionRun._submit <deepforge_plugins.engine.ExecutionRun._submit>` starts a compute job from it.
The bundle directory exists only while the compute backend starts the job: local compute copies what it
needs when it starts; gme and sciserver-compute use the blob artifact.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deepforge_adapters.config import Config
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.jobs.codegen import OperationSource
from deepforge_adapters.storage import DataInfo
from deepforge_adapters.webgme.blob import BlobClient

from . import pipeline
from .base import DeepForgePlugin
from .model import ModelSession
from .pipeline import PipelineJob

#: ``{input name: (its dataInfo, the storage config to read it with, None: the job's own)}``
BundleInputs = Mapping[str, tuple[DataInfo, Mapping[str, Any] | None]]


def job_slug(job: PipelineJob) -> str:
    """The job's node path as one name segment (``/K/3`` -> ``K_3``)."""
    return job.path.strip("/").replace("/", "_")


def operation_source(model: ModelSession, job: PipelineJob) -> OperationSource:
    """What the bundle's generated ``main.py`` is made from: the Operation's code, ports and attributes."""
    op = model.node(job.operation)
    return OperationSource(
        name=str(model.attr(op, "name")),
        code=str(model.attr(op, "code") or ""),
        inputs=[p.name for p in job.inputs],
        outputs=[p.name for p in job.outputs],
        attributes=pipeline.operation_attributes(model, op),
        input_types={p.name: p.type for p in job.inputs if p.type},
    )


@contextmanager
def uploaded_bundle(
    plugin: DeepForgePlugin, job: PipelineJob, inputs: BundleInputs, storage_cfg: Config, storage_dir: str
) -> Iterator[tuple[Path, str]]:
    """Build ``job``'s bundle in a temporary directory and upload it as a blob artifact.

    Yields ``(bundle directory, artifact metadata hash)``; the directory is removed on exit.  Its outputs go
    to ``storage_dir`` in ``storage_cfg``; every sealed secret is bound to the plugin's project.
    """
    source = operation_source(plugin.model, job)
    workdir = Path(tempfile.mkdtemp(prefix="deepforge-bundle-"))
    try:
        bundle = build_bundle(
            workdir / "bundle",
            storage_id=storage_cfg.backend,
            storage_dir=storage_dir,
            storage_config=storage_cfg.to_dict(),
            inputs=inputs,
            outputs=source.outputs,
            operation=source,
            project=plugin.project_id(),  # every sealed secret is bound to it (and loads the key)
        )
        files = {str(p.relative_to(bundle)): str(p) for p in sorted(bundle.rglob("*")) if p.is_file()}
        blob = BlobClient(plugin.server_url(), webgme_token=plugin.webgme_token())
        yield bundle, blob.upload_artifact(f"{job.name}_{job_slug(job)}-execution-files", files)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
