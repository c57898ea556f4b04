"""``deepforge run BUNDLE``: run a job bundle end to end on a compute backend and print its results.

The job's console output streams to stdout while it runs; on success the results JSON
(``{output: {"type", "dataInfo"}}``) follows on stdout.  Status lines and the failure reason go to stderr.
Exit codes follow the ``deepforge`` convention: 0 success, 1 the job failed or was canceled, 2 usage or
configuration errors (bad bundle, bad config, unknown backend).  Ctrl-C cancels the job and waits for it.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import click

from .. import compute, secrets
from ..compute.base import ComputeJob, JobStatus, JobUpdate
from ..errors import BundleError, ConfigError, SecretsError, UnknownBackendError
from ..jobs.bundle import read_bundle, retarget_storage
from ..jobs.layout import without_runner_prefix
from ..storage.registry import registry as storage_registry
from .common import CliError, CliUsageError, json_object_arg


@click.command("run")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--storage", "storage_id", metavar="ID", help="Storage backend for the outputs (default: the bundle's).")
@click.option("--storage-config", "storage_config_arg", metavar="JSON|@FILE", help="Config for --storage.")
@click.option("--compute", "compute_id", default="local", show_default=True, metavar="ID", help="Compute backend.")
@click.option("--config", "config_arg", metavar="JSON|@FILE", help="Compute backend config.")
@click.option("--name", default=None, help="A name for the job (shown by compute backends).")
def run_command(
    bundle: Path,
    storage_id: str | None,
    storage_config_arg: str | None,
    compute_id: str,
    config_arg: str | None,
    name: str | None,
) -> None:
    """Run the job BUNDLE (a directory or .zip) and print its results JSON."""
    compute_config = json_object_arg(config_arg, "--config")
    storage_config = json_object_arg(storage_config_arg, "--storage-config")
    staged = Path(tempfile.mkdtemp(prefix="deepforge-run-"))
    try:
        try:
            # Validate first: a malformed bundle is a usage error, not a failed job.
            spec = read_bundle(bundle) if bundle.is_dir() else read_bundle(bundle, dest=staged / "bundle")
            to_run = bundle
            if storage_id is not None or storage_config is not None:
                to_run = staged / "bundle"
                if bundle.is_dir():
                    shutil.copytree(bundle, to_run)
                target = storage_id or spec.storage_id
                # Resolve now (environment fallbacks included) so that a bad config is reported here.
                resolved = storage_registry.get_class(target).schema.resolve(storage_config or {})
                for value in resolved.secret_values():
                    secrets.register_secret(value)
                retarget_storage(to_run, target, storage_config or {})
            client = compute.get_client(compute_id, compute_config)
        except (BundleError, ConfigError, UnknownBackendError, SecretsError) as exc:
            raise CliUsageError(str(exc)) from None
        info, end = _run(client, to_run, name or bundle.name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    if end.status != JobStatus.SUCCESS:
        # The reason is often the runner's own last line ("deepforge: operation ... exited"): one prefix is enough.
        reason = without_runner_prefix(end.reason) if end.reason else None
        raise CliError(f"job {info['hash']} {end.status}" + (f": {reason}" if reason else ""))
    click.echo(json.dumps(client.get_results_info(info), indent=2))


def _run(client: compute.ComputeClient, bundle: Path, name: str) -> tuple[dict[str, Any], JobUpdate]:
    """Start the job and stream its output until it ends; Ctrl-C cancels it and keeps waiting.

    The SIGINT handler is installed explicitly: a shell starts a background command (``cmd &``) with SIGINT
    ignored, and Python then leaves it ignored, so the job could not be canceled with SIGINT.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    info = client.start_job(ComputeJob(bundle=bundle, name=name))
    click.echo(f"deepforge: job {info['hash']} started on {client.id} compute", err=True)
    printed = 0  # characters of output shown; a watch restarted after Ctrl-C replays from the start
    while True:
        seen = 0
        try:
            for update in client.watch(info):
                if update.kind == "output":
                    new = update.output[max(0, printed - seen) :]
                    seen += len(update.output)
                    if new:
                        click.echo(new, nl=False)
                        printed += len(new)
                elif update.kind == "status":
                    click.echo(f"deepforge: job {info['hash']} {update.status}", err=True)
                else:
                    return info, update
        except KeyboardInterrupt:
            click.echo(f"deepforge: canceling job {info['hash']}", err=True)
            client.cancel_job(info)
