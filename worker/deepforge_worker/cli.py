"""``deepforge-worker start | check | status | supervisor-conf | systemd-unit``.

Every option of ``start`` may also come from ``DEEPFORGE_WORKER_<OPTION>`` or a config file (``--config``
or ``DEEPFORGE_WORKER_CONFIG``); the command line wins, then the environment, then the file.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import click
from deepforge_adapters import __version__
from deepforge_adapters.errors import ConfigError
from deepforge_adapters.secrets import KEY_FILE_ENV, install_redaction, register_secret

from .settings import WorkerSettings, load_settings

log = logging.getLogger(__name__)


def _options(func: Any) -> Any:
    """The settings options, shared by ``start``, ``check``, ``supervisor-conf`` and ``systemd-unit``."""
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
@click.option(
    "--metrics-port",
    "metrics_port",
    type=int,
    default=None,
    help='Serve Prometheus metrics at http://ADDR:PORT/metrics (docs/worker.md, "Metrics and status").',
)
@click.option(
    "--metrics-addr", "metrics_addr", default="0.0.0.0", show_default=True, help="Address for --metrics-port."
)
def start(run_as: str | None, metrics_port: int | None, metrics_addr: str, **options: Any) -> None:
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
    if metrics_port is not None:
        try:
            worker.metrics.serve(metrics_port, metrics_addr)
        except OSError as exc:
            raise click.UsageError(f"--metrics-port {metrics_port}: cannot listen on {metrics_addr}: {exc}") from None
        log.info("metrics at http://%s:%d/metrics", metrics_addr, metrics_port)
    worker.install_signal_handlers()
    sys.exit(worker.work())


@main.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML/JSON worker config file.")
@click.option("--work-dir", "workDir", help="The daemon's work dir [env DEEPFORGE_WORKER_WORK_DIR].")
@click.option("--json", "as_json", is_flag=True, help="Print the status file as it is.")
def status(as_json: bool, **options: Any) -> None:
    """What the daemon running in this work dir is doing: its slots and jobs, its last poll."""
    from .metrics import STATUS_FILE, read_status

    settings = _settings(options)
    try:
        state = read_status(settings.work_dir)
    except FileNotFoundError:
        raise click.ClickException(
            f"no {STATUS_FILE} in {settings.work_dir}: no daemon has run with this work dir (--work-dir)"
        ) from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {settings.work_dir / STATUS_FILE}: {exc}") from None
    if as_json:
        click.echo(json.dumps(state, indent=2, sort_keys=True))
        return
    running = "running" if state["alive"] else "NOT RUNNING (the last status it wrote)"
    click.echo(f"worker {state.get('clientId')} (pid {state.get('pid')}): {running}")
    click.echo(f"server: {state.get('host')}  labels: {','.join(state.get('labels') or []) or '-'}")
    if state.get("stopping"):
        click.echo("draining: no new jobs are claimed")
    last = state.get("lastPoll") or {}
    if last:
        outcome = "ok" if last.get("ok") else f"FAILED: {last.get('error')}"
        click.echo(f"last poll: {last.get('time')} {outcome} ({state.get('polls')} polls)")
    else:
        click.echo("last poll: none yet")
    for slot in state.get("slots") or []:
        gpus = f" gpus {','.join(slot['gpus'])}" if slot.get("gpus") else ""
        click.echo(f"slot {slot['index']}{gpus}: {slot.get('job') or 'idle'}")
    ended = state.get("jobsEnded") or {}
    click.echo("jobs ended: " + (", ".join(f"{k} {v}" for k, v in sorted(ended.items())) or "none"))
    click.echo(f"updated: {state.get('updated')}")


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


def worker_argv() -> list[str]:
    """The argv that starts this same ``deepforge-worker``, as separate tokens for a service manager.

    The ``deepforge-worker`` script we were started as (``.venv/bin/deepforge-worker`` need not be on PATH),
    else the one on PATH, else this interpreter with ``-m deepforge_worker.cli``.
    """
    started_as = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started_as is not None and started_as.name == "deepforge-worker" and os.access(started_as, os.X_OK):
        return [str(started_as.absolute())]
    on_path = shutil.which("deepforge-worker")
    if on_path:
        return [str(Path(on_path).absolute())]
    return [sys.executable, "-m", "deepforge_worker.cli"]


def start_argv(
    settings: WorkerSettings, exe: str | Sequence[str], options: dict[str, Any], metrics_port: int | None = None
) -> list[str]:
    """``exe start ...`` with the public settings as options; secrets are never in it (config file/env)."""
    args = [exe] if isinstance(exe, str) else list(exe)
    args.append("start")
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
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    return args


def stop_timeout(settings: WorkerSettings) -> int:
    """How long a service manager must wait after SIGTERM: the drain, the cancel grace, the final reports."""
    return int(settings.drain_timeout + settings.cancel_grace + 60)


def _key_file(key_file: str | None) -> str | None:
    value = key_file or os.environ.get(KEY_FILE_ENV)
    return str(Path(value).absolute()) if value else None


_service_options = [
    click.option(
        "--key-file",
        "key_file",
        default=None,
        help=f"The deployment key file, set as {KEY_FILE_ENV} in the service (default: ${KEY_FILE_ENV}).",
    ),
    click.option("--metrics-port", "metrics_port", type=int, default=None, help="Pass --metrics-port to start."),
]


def _with_service_options(func: Any) -> Any:
    for option in reversed(_service_options):
        func = option(func)
    return func


@main.command("supervisor-conf")
@_options
@click.option("--name", default="deepforge-worker", show_default=True, help="supervisord program name.")
@click.option("--log-file", default=None, help="Log file (default: <work dir>/../deepforge-worker.log).")
@_with_service_options
def supervisor_conf(
    name: str, log_file: str | None, key_file: str | None, metrics_port: int | None, **options: Any
) -> None:
    """Print a supervisord [program:] section for this worker."""
    settings = _settings(options)
    conf = render_supervisor_conf(
        settings,
        worker_argv(),
        options,
        name=name,
        log_file=log_file,
        key_file=_key_file(key_file),
        metrics_port=metrics_port,
    )
    click.echo(conf)


def render_supervisor_conf(
    settings: WorkerSettings,
    exe: str | Sequence[str],
    options: dict[str, Any],
    *,
    name: str = "deepforge-worker",
    log_file: str | None = None,
    key_file: str | None = None,
    metrics_port: int | None = None,
) -> str:
    """The program section; secrets are never written into it (use the config file or the environment).

    ``exe`` is the command that runs ``deepforge-worker``: one path, or separate argv tokens.
    """
    args = start_argv(settings, exe, options, metrics_port)
    template = resources.files("deepforge_worker").joinpath("supervisord.conf").read_text()
    environment = []
    if settings.token or settings.nonce:
        environment.append("; token/nonce: put them in the --config file or DEEPFORGE_WORKER_TOKEN/_NONCE")
    if key_file:
        environment.append(f'environment={KEY_FILE_ENV}="{key_file}"')
    return template.format(
        name=name,
        # supervisord splits command= with shlex: every argv token quoted on its own
        command=shlex.join(args).replace("%", "%%"),  # and supervisord expands %(name)s in it
        directory=str(settings.work_dir.parent),
        user=getpass.getuser(),
        stopwaitsecs=stop_timeout(settings),
        log_file=log_file or str(settings.work_dir.parent / f"{name}.log"),
        environment="\n".join(environment),
    )


@main.command("systemd-unit")
@_options
@click.option("--user", "user", default=None, help="User= of the service (default: the current user).")
@click.option("--description", default="DeepForge worker (WebGME executor jobs)", show_default=True)
@_with_service_options
def systemd_unit(
    user: str | None, description: str, key_file: str | None, metrics_port: int | None, **options: Any
) -> None:
    """Print a systemd service unit for this worker (e.g. /etc/systemd/system/deepforge-worker.service)."""
    settings = _settings(options)
    unit = render_systemd_unit(
        settings,
        worker_argv(),
        options,
        user=user or getpass.getuser(),
        description=description,
        key_file=_key_file(key_file),
        metrics_port=metrics_port,
    )
    click.echo(unit)


def render_systemd_unit(
    settings: WorkerSettings,
    exe: str | Sequence[str],
    options: dict[str, Any],
    *,
    user: str,
    description: str = "DeepForge worker (WebGME executor jobs)",
    key_file: str | None = None,
    metrics_port: int | None = None,
) -> str:
    """The unit file; like the supervisord section it holds no secret.

    SIGTERM to the daemon only (``KillMode=mixed``: the jobs' process groups are the daemon's to drain),
    ``TimeoutStopSec`` as supervisord's ``stopwaitsecs``, restarted when it fails.
    """
    args = start_argv(settings, exe, options, metrics_port)
    template = resources.files("deepforge_worker").joinpath("deepforge-worker.service").read_text()
    environment = ""
    if key_file:
        environment = f"Environment={_systemd_quote(f'{KEY_FILE_ENV}={key_file}')}\n"
    if settings.token or settings.nonce:
        environment += (
            "# token/nonce: put them in the --config file or EnvironmentFile= (DEEPFORGE_WORKER_TOKEN/_NONCE)\n"
        )
    return template.format(
        description=description,
        exec_start=" ".join(_systemd_quote(a) for a in args),
        directory=_systemd_quote(str(settings.work_dir.parent)),
        user=user,
        timeout=stop_timeout(settings),
        environment=environment,
    )


def _systemd_quote(value: str) -> str:
    """One word of a systemd command line or assignment: double-quoted when it needs to be."""
    if value and not any(c in value for c in " \t\"'\\$%;"):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return f'"{escaped}"'


__all__ = ["main", "render_supervisor_conf", "render_systemd_unit", "worker_argv"]

if __name__ == "__main__":  # pragma: no cover
    main()
