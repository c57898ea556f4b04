"""``deepforge-worker start | check | supervisor-conf``.

Every option of ``start`` may also come from ``DEEPFORGE_WORKER_<OPTION>`` or a config file (``--config``
or ``DEEPFORGE_WORKER_CONFIG``); the command line wins, then the environment, then the file.
"""

from __future__ import annotations

import getpass
import json
import logging
import shlex
import shutil
import socket
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
from deepforge_adapters import __version__
from deepforge_adapters.errors import ConfigError
from deepforge_adapters.secrets import install_redaction, register_secret

from .settings import WorkerSettings, load_settings

log = logging.getLogger(__name__)


def _options(func: Any) -> Any:
    """The settings options, shared by ``start``, ``check`` and ``supervisor-conf``."""
    options = [
        click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML/JSON worker config file."),
        click.option("--host", help="WebGME server URL [env DEEPFORGE_WORKER_HOST, DEEPFORGE_HOST]."),
        click.option("--token", help="API token (x-api-token) [env DEEPFORGE_WORKER_TOKEN]."),
        click.option("--nonce", help="Executor nonce (x-executor-nonce) [env DEEPFORGE_WORKER_NONCE]."),
        click.option("--labels", help="Comma-separated labels [env DEEPFORGE_WORKER_LABELS]."),
        click.option("--processes", type=int, help="Concurrent jobs [env DEEPFORGE_WORKER_PROCESSES]."),
        click.option("--gpus", help="Comma-separated GPU ids, one group per slot [env DEEPFORGE_WORKER_GPUS]."),
        click.option("--work-dir", "workDir", help="Job directories [env DEEPFORGE_WORKER_WORK_DIR]."),
        click.option("--cache-dir", "cacheDir", help="Shared input cache [env DEEPFORGE_WORKER_CACHE_DIR]."),
        click.option("--cancel-grace", "cancelGrace", type=float, help="Seconds from SIGINT to SIGKILL."),
        click.option("--drain-timeout", "drainTimeout", type=float, help="Seconds jobs may finish on SIGTERM."),
        click.option(
            "--max-refresh",
            "maxRefresh",
            type=float,
            help="Longest wait between polls (s, default 60); the server's refreshPeriod is clamped to 0.2 s..this.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings(options: dict[str, Any]) -> WorkerSettings:
    try:
        settings = load_settings(options)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    for secret in (settings.token, settings.nonce):
        register_secret(secret)
    return settings


#: Seconds ``check`` waits for the server to accept the connection.
CHECK_CONNECT_TIMEOUT = 3.0


def _clients(settings: WorkerSettings) -> tuple[Any, Any]:
    from deepforge_adapters.webgme.blob import BlobClient
    from deepforge_adapters.webgme.executor import ExecutorClient

    executor = ExecutorClient(settings.host, api_token=settings.token, nonce=settings.nonce)
    blob = BlobClient(settings.host, api_token=settings.token)
    return executor, blob


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(__version__, prog_name="deepforge-worker")
def main(verbose: bool) -> None:
    """Run DeepForge jobs from a WebGME server's executor on this machine."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_redaction()
    if not verbose:
        # The daemon logs connection trouble once per state change; urllib3 would add a line per retry.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)


@main.command()
@_options
@click.option(
    "--run-as",
    "run_as",
    default=None,
    metavar="USER",
    help="Run every job's processes as USER (name or uid), not as the worker: they cannot read the worker's "
    "memory, environment or key file.  Needs a root worker (or CAP_SETUID+CAP_SETGID).  See docs/security.md.",
)
def start(run_as: str | None, **options: Any) -> None:
    """Poll the server and run jobs until SIGTERM (drains running jobs, then exits 0)."""
    from deepforge_adapters.process import make_non_dumpable

    from .context import RunAs
    from .daemon import Worker

    make_non_dumpable()  # we hold the key and every job's credentials: job code must not read our memory
    settings = _settings(options)
    try:
        account = RunAs.lookup(run_as) if run_as else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    executor, blob = _clients(settings)
    worker = Worker(settings, executor, blob)
    worker.ctx.run_as = account
    if account is not None:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        account.own(settings.cache_dir)  # the jobs' runners fill the shared input cache
        log.info("jobs run as %s (uid %d, gid %d)", account.user, account.uid, account.gid)
    worker.install_signal_handlers()
    sys.exit(worker.work())


@main.command()
@_options
def check(**options: Any) -> None:
    """Verify the connection and credentials; print the server's view of this machine's workers."""
    import requests
    from deepforge_adapters.http import describe_connection_error, make_session
    from deepforge_adapters.webgme.executor import ExecutorClient

    settings = _settings(options)
    # One short try: a check answers "is the server there" now, not after the daemon's retry chain.
    session = make_session(retries=0, timeout=(CHECK_CONNECT_TIMEOUT, 30.0))
    executor = ExecutorClient(settings.host, api_token=settings.token, nonce=settings.nonce, session=session)
    click.echo(f"server: {settings.host}")
    click.echo(f"settings: {json.dumps(settings.config.masked(), sort_keys=True)}")
    try:
        # GET /worker checks URL, token and nonce like a poll would, without registering a phantom worker
        # (which the gme compute backend would then count as connected).
        workers = executor.get_workers()
    except (requests.ConnectionError, requests.Timeout) as exc:
        click.echo(f"FAILED: cannot reach {settings.host}: {describe_connection_error(exc)}", err=True)
        sys.exit(1)
    except Exception as exc:
        click.echo(f"FAILED: {exc}", err=True)
        sys.exit(1)
    click.echo(f"connection ok: the server lists {len(workers)} worker(s) for these credentials")
    if settings.token:
        # The executor answers a valid and an unknown API token alike; only the user it records tells them apart.
        try:
            users = executor.caller_identity()
        except Exception as exc:
            click.echo(f"FAILED: cannot tell which user the API token belongs to: {exc}", err=True)
            sys.exit(1)
        named = [u for u in users if isinstance(u, str) and u]
        if not named:
            click.echo(
                "FAILED: the server does not know this API token (it maps it to no user): with executor "
                "authentication on, this worker would never be given a job; create a token as the user whose "
                "jobs it should run (POST /rest/tokens/create/<name> with that user's credentials)",
                err=True,
            )
            sys.exit(1)
        click.echo(f"token ok: this worker runs the jobs of user {', '.join(named)}")
    prefix = f"{socket.gethostname()}_"
    mine = {cid: w for cid, w in workers.items() if cid.startswith(prefix)}
    if not mine:
        click.echo(f"no running worker of this host ({prefix}*) is known to the server")
    for cid, info in sorted(mine.items()):
        jobs = [j.get("hash") for j in info.get("jobs") or []]
        click.echo(f"worker {cid}: labels={info.get('labels')} lastSeen={info.get('lastSeen')} running={jobs}")


@main.command("supervisor-conf")
@_options
@click.option("--name", default="deepforge-worker", show_default=True, help="supervisord program name.")
@click.option("--log-file", default=None, help="Log file (default: <work dir>/../deepforge-worker.log).")
def supervisor_conf(name: str, log_file: str | None, **options: Any) -> None:
    """Print a supervisord [program:] section for this worker."""
    settings = _settings(options)
    exe = shutil.which("deepforge-worker") or f"{sys.executable} -m deepforge_worker.cli"
    click.echo(render_supervisor_conf(settings, exe, options, name=name, log_file=log_file))


def render_supervisor_conf(
    settings: WorkerSettings,
    exe: str,
    options: dict[str, Any],
    *,
    name: str = "deepforge-worker",
    log_file: str | None = None,
) -> str:
    """The program section; secrets are never written into it (use the config file or the environment)."""
    args = [exe, "start"]
    if options.get("config"):
        args += ["--config", str(Path(options["config"]).absolute())]
    public = settings.config.public()
    for key, flag in (
        ("host", "--host"),
        ("labels", "--labels"),
        ("gpus", "--gpus"),
        ("workDir", "--work-dir"),
        ("cacheDir", "--cache-dir"),
    ):
        if public.get(key):
            value = str(
                settings.work_dir if key == "workDir" else settings.cache_dir if key == "cacheDir" else public[key]
            )
            args += [flag, value]
    args += ["--processes", str(settings.processes)]
    stopwaitsecs = int(settings.drain_timeout + settings.cancel_grace + 60)
    template = resources.files("deepforge_worker").joinpath("supervisord.conf").read_text()
    secrets_hint = ""
    if settings.token or settings.nonce:
        secrets_hint = "; token/nonce: put them in the --config file or DEEPFORGE_WORKER_TOKEN/_NONCE"
    return template.format(
        name=name,
        command=" ".join(shlex.quote(a) for a in args),
        directory=str(settings.work_dir.parent),
        user=getpass.getuser(),
        stopwaitsecs=stopwaitsecs,
        log_file=log_file or str(settings.work_dir.parent / f"{name}.log"),
        environment=secrets_hint,
    )


__all__ = ["main", "render_supervisor_conf"]

if __name__ == "__main__":  # pragma: no cover
    main()
