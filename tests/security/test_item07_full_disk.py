"""Issue 16, item 7: a full disk fails the job, with a readable reason, and frees its slot.

The worker's work dir is a real, small filesystem: a 4 MiB tmpfs mounted for the test (we run as root
here and in CI; where tmpfs cannot be mounted a loop-mounted ext2 image is tried, and the test is skipped
with the kernel's reason only if both are refused).  A real ``deepforge-worker`` with one slot runs jobs
from a real WebGME server:

* a job that prints more than the disk holds: writing ``job_stdout.txt`` fails with ENOSPC.  It used to kill
  the output pump thread, so nothing drained the pipe, the job blocked forever in a write, its slot never
  freed and the next job stayed CREATED.  Now the job ends FAILED_TO_EXECUTE with "No space left on device"
  in its live output, and the next job, on the same single slot, succeeds;
* a disk already full when a job arrives: the bundle cannot be downloaded, the reason cannot be written to
  ``job_stdout.txt`` and the pending report cannot be saved, yet the job is reported failed with the reason
  in its live output, and once space is back the next job succeeds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient, is_finished
from deepforge_worker.metrics import STATUS_FILE

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import python_config, upload_bundle

pytestmark = pytest.mark.integration

SIZE_MIB = 4
#: Prints about 24 MiB, six times what the work dir holds, then exits 0.
FLOOD = (
    "import sys\nline = 'x' * 1023 + '\\n'\n"
    "for _ in range(24 * 1024):\n    sys.stdout.write(line)\n"
    "print('flood done')\n"
)


def _mount_small(target: Path, image: Path) -> str:
    """Mount a SIZE_MIB filesystem at ``target``; returns how, or raises OSError with every refusal."""
    target.mkdir()
    reasons = []
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MIB}m", "tmpfs", str(target)],
                           capture_output=True, text=True)  # fmt: skip
    if tmpfs.returncode == 0:
        return "tmpfs"
    reasons.append(f"tmpfs: {tmpfs.stderr.strip()}")
    if shutil.which("mkfs.ext2"):
        with open(image, "wb") as fh:
            fh.truncate(SIZE_MIB * 1024 * 1024)
        subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], capture_output=True, check=False)
        loop = subprocess.run(["mount", "-o", "loop", str(image), str(target)], capture_output=True, text=True)
        if loop.returncode == 0:
            return "ext2 loop image"
        reasons.append(f"loop: {loop.stderr.strip()}")
    else:
        reasons.append("loop: mkfs.ext2 is not installed")
    raise OSError(errno.EPERM, "; ".join(reasons))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "small"
    try:
        _mount_small(target, tmp_path / "disk.img")
    except OSError as exc:
        pytest.skip(f"cannot mount a small filesystem for the work dir here: {exc.strerror}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)


def fill(path: Path) -> Path:
    """Write a file until the filesystem is full.

    Unbuffered: when the free space is not a multiple of the chunk (the daemon's status file takes a page),
    the last write is partial, and a buffered file would then raise ENOSPC again when it is closed.
    """
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    return filler


def run_job(stack: Any, code: str) -> str:
    blob, executor = BlobClient(stack.url), ExecutorClient(stack.url)
    job_hash = upload_bundle(blob, {}, python_config(code))
    executor.create_job(job_hash)
    return job_hash


def finished(executor: ExecutorClient, job_hash: str, timeout: float) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (info := executor.get_info(job_hash)) and is_finished(info.get("status")) and info,
            timeout,
            f"job {job_hash[:8]} to finish",
            interval=0.25,
        )
    )


def output_of(executor: ExecutorClient, job_hash: str) -> str:
    return "".join(chunk["output"] for chunk in executor.get_output(job_hash))


def test_output_that_fills_the_disk_fails_the_job_and_frees_the_slot(
    small_disk: Path, webgme_server: Any, worker_factory: Any
) -> None:
    worker = worker_factory(webgme_server, work_dir=str(small_disk / "jobs"), processes=1)
    executor = ExecutorClient(webgme_server.url)

    flood = run_job(webgme_server, FLOOD)
    info = finished(executor, flood, 120)
    assert info["status"] == "FAILED_TO_EXECUTE", info
    text = output_of(executor, flood)
    assert "writing job_stdout.txt failed: No space left on device" in text, text[-2000:]
    assert "flood done" not in text  # stopped, not left running into the full disk

    after = run_job(webgme_server, "print('after the full disk')")
    info = finished(executor, after, 60)  # the one slot was freed
    assert info["status"] == "SUCCESS", info
    assert "after the full disk" in output_of(executor, after)
    assert worker.proc.poll() is None and "Traceback" not in worker.log(), worker.log()
    # the failed job's directory is gone, space is back (the daemon's status file stays: deepforge-worker status)
    assert [name for name in os.listdir(small_disk / "jobs") if name != STATUS_FILE] == []


def test_a_disk_full_before_the_job_starts(small_disk: Path, webgme_server: Any, worker_factory: Any) -> None:
    worker = worker_factory(webgme_server, work_dir=str(small_disk / "jobs"), processes=1)
    executor = ExecutorClient(webgme_server.url)
    filler = fill(small_disk)

    doomed = run_job(webgme_server, "print('never runs')")
    info = finished(executor, doomed, 60)
    assert info["status"] != "SUCCESS", info
    text = output_of(executor, doomed)
    assert "No space left on device" in text, text  # the reason reached the executor without the disk
    assert "cannot save the report" in worker.log(), worker.log()

    filler.unlink()
    after = run_job(webgme_server, "print('space is back')")
    info = finished(executor, after, 60)
    assert info["status"] == "SUCCESS", info
    assert worker.proc.poll() is None and "Traceback" not in worker.log(), worker.log()
