"""Orphan recovery: the process groups of jobs a previous daemon left running, recorded and reaped.

A daemon killed with SIGKILL cannot stop its jobs (they run in their own sessions so that a TERM to the
daemon drains instead of killing them).  Each job's process group is therefore recorded in
``<work_dir>/<hash>.pgid`` while it runs, and the next daemon on the same work dir stops what is left before
it claims anything.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from deepforge_adapters.process import terminate_job
from deepforge_adapters.streams import atomic_write

log = logging.getLogger(__name__)

PGID_SUFFIX = ".pgid"


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/<pid>/stat`` field 22): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_path(work_dir: Path, job_hash: str) -> Path:
    return work_dir / f"{job_hash}{PGID_SUFFIX}"


def record_process_group(work_dir: Path, job_hash: str, pgid: int) -> None:
    """Remember a running job's process group, so a daemon restarted after a SIGKILL can stop it."""
    with atomic_write(record_path(work_dir, job_hash)) as fh:
        fh.write(json.dumps({"pgid": pgid, "start": _start_time(pgid)}).encode())


def forget_process_group(work_dir: Path, job_hash: str) -> None:
    """The job ended (its processes are gone): nothing to reap."""
    record_path(work_dir, job_hash).unlink(missing_ok=True)


def reap_orphaned_jobs(work_dir: Path) -> int:
    """SIGKILL the process groups of jobs a previous daemon left running; returns how many were found.

    The server requeues those jobs to other workers, so the orphans only burn CPU/GPU time, and a GPU slot
    must not be shared.  The recorded start time guards against a reused pid.
    """
    reaped = 0
    if not work_dir.is_dir():
        return 0
    for path in sorted(work_dir.glob(f"*{PGID_SUFFIX}")):
        try:
            record = json.loads(path.read_text())
            pgid, start = int(record["pgid"]), record.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if start is not None and _start_time(pgid) == start:
            log.warning("job %s: stopping the processes (shim %d) left running by a previous daemon", path.stem, pgid)
            terminate_job(pgid)
            reaped += 1
        path.unlink(missing_ok=True)
        shutil.rmtree(work_dir / path.name[: -len(PGID_SUFFIX)], ignore_errors=True)
    return reaped
