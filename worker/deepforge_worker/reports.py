"""A job's final report: the ownership check and ``POST /update``, its replay after a crash, and refusals.

The body of every report is first saved to ``<work_dir>/<hash>.report.json`` (:func:`deliver_report`), so a
daemon killed before the post succeeded re-sends it on its next start (:func:`replay_pending_reports`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from deepforge_adapters.errors import WebGMEError
from deepforge_adapters.streams import atomic_write
from deepforge_adapters.timestamps import now_iso
from deepforge_adapters.webgme.executor import ExecutorStatus, is_finished

from .context import JobContext

log = logging.getLogger(__name__)

REPORT_SUFFIX = ".report.json"
#: The status a job whose hash is not a blob hash ends in: its source cannot be obtained by construction.
BAD_HASH_STATUS = ExecutorStatus.FAILED_SOURCE_COULD_NOT_BE_OBTAINED


def deliver_report(ctx: JobContext, job_hash: str, body: dict[str, Any]) -> bool:
    """Save the final report to disk, post it (:func:`post_report`), then forget it; whether it was posted.

    A report that cannot be saved (a full disk) is posted all the same.
    """
    pending = ctx.work_dir / f"{job_hash}{REPORT_SUFFIX}"
    try:
        with atomic_write(pending) as fh:
            fh.write(json.dumps({"clientId": ctx.client_id, "info": body}).encode())
    except OSError as exc:  # a full disk must not keep the report from the server
        log.warning("job %s: cannot save the report to %s (%s); posting it anyway", job_hash, pending, exc)
    posted = post_report(ctx, job_hash, body, retry_for=ctx.report_retry_for)
    pending.unlink(missing_ok=True)
    return posted


def post_report(
    ctx: JobContext, job_hash: str, body: dict[str, Any], retry_for: float, client_id: str | None = None
) -> bool:
    """The ownership check and the final ``POST /update``, retried while the server is unreachable.

    The server requeues the jobs of a worker it has not heard from for 5 refresh periods; another worker may
    then run it.  Before posting, the job is re-read: if its ``worker`` is someone else (or it already
    finished), the late result is dropped instead of clobbering theirs.  The remaining race (the server
    reassigns it between the read and the post) is closed on our server, which applies a final report only
    while the job runs under its reporter and answers 404 otherwise (webgme-config/executor_claims.js); on a
    stock server the window is one round trip.
    """
    owner = client_id or ctx.client_id
    delay = 0.5
    give_up = time.monotonic() + retry_for
    while True:
        try:
            current = ctx.executor.get_info(job_hash)
            if is_finished(current.get("status")):
                log.warning(
                    "job %s: already %s on the server; not reporting %s",
                    job_hash,
                    current["status"],
                    body.get("status"),
                )
                return False
            if current.get("worker") not in (owner, None):
                log.warning(
                    "job %s: the server gave it to %s; dropping our late %s",
                    job_hash,
                    current["worker"],
                    body.get("status"),
                )
                return False
            ctx.executor.update_job(job_hash, body)
            log.info("job %s: reported %s", job_hash, body.get("status"))
            return True
        except WebGMEError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:
                log.error("job %s: final update refused: %s", job_hash, exc)
                return False
            error: Exception = exc
        except Exception as exc:
            error = exc
        if time.monotonic() + delay > give_up:
            log.error("job %s: final update failed after retries: %s", job_hash, error)
            return False
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def refuse_bad_job(ctx: JobContext, job_hash: Any) -> bool:
    """Fail a job the server gave us whose hash is not 40 lowercase hex, without touching the disk.

    The executor accepts any string as a job hash (``POST /rest/executor/create/%2Ftmp%2Fvictim``); such a
    hash must never become a path.  The job gets its reason as output #0 and a final ``BAD_HASH_STATUS``, so it
    ends (and is not requeued to the next worker) instead of staying RUNNING.  Returns whether it was posted.
    """
    shown = job_hash if isinstance(job_hash, str) else repr(job_hash)
    reason = f"the job hash {shown!r:.120} is not a blob hash (40 lowercase hex digits); refusing to run it"
    log.error("job %r: %s", shown, reason)
    if not isinstance(job_hash, str) or not job_hash:
        return False  # nothing to address it by
    try:
        ctx.executor.post_output(job_hash, 0, f"[deepforge-worker] {BAD_HASH_STATUS}: {reason}\n")
    except Exception as exc:
        log.warning("job %r: posting the refusal as output failed: %s", shown, exc)
    body = {"status": BAD_HASH_STATUS, "finishTime": now_iso(), "outputNumber": 0, "worker": ctx.client_id}
    return post_report(ctx, job_hash, body, retry_for=min(ctx.report_retry_for, 60.0))


def replay_pending_reports(ctx: JobContext) -> int:
    """Re-send final reports a previous daemon wrote but did not get acknowledged; returns how many posted.

    A report is only replayed while the job is still ours to finish: assigned to the daemon that wrote it
    or requeued (``CREATED``) and not yet claimed by another worker.
    """
    posted = 0
    if not ctx.work_dir.is_dir():
        return 0
    for path in sorted(ctx.work_dir.glob(f"*{REPORT_SUFFIX}")):
        job_hash = path.name[: -len(REPORT_SUFFIX)]
        try:
            saved = json.loads(path.read_text())
            body, writer = dict(saved["info"]), str(saved["clientId"])
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("ignoring unreadable pending report %s", path)
            path.unlink(missing_ok=True)
            continue
        body["worker"] = ctx.client_id
        if post_report(ctx, job_hash, body, retry_for=10.0, client_id=writer):
            posted += 1
        path.unlink(missing_ok=True)
    return posted
