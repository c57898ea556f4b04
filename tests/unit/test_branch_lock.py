"""The host's commit lock of a branch (deepforge_plugins.branch_lock), between real processes.

The 1,000-job soak run (seed 15) put 24 ExecutePipeline runs on fork branches: creating an Execution takes
seconds of edits, and the other runs' commits landed first for 30 s each time.  With the lock, no other plugin
of the host commits between a change's load of the head and its commit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from deepforge_plugins.branch_lock import LOCK_DIR_ENV, BranchLock
from deepforge_plugins.model import CommitStatus, ModelSession

from tests.fixtures.waiting import wait_for

HOLDER = """
import os, sys, time
from pathlib import Path
from deepforge_plugins.branch_lock import BranchLock
lock = BranchLock("guest+p", "master", Path(sys.argv[1]))
with lock.held() as granted:
    assert granted
    Path(sys.argv[2]).write_text("holding")
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
"""


def hold(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """A process that holds the lock of guest+p/master until the returned gate file exists."""
    holding, gate = tmp_path / "holding", tmp_path / "gate"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "locks"), str(holding), str(gate)])
    wait_for(holding.exists, what="the holder to take the lock")
    return proc, gate


def test_a_lock_held_by_another_process_is_not_granted_until_it_is_released(tmp_path: Path) -> None:
    proc, gate = hold(tmp_path)
    ours = BranchLock("guest+p", "master", tmp_path / "locks")
    try:
        with ours.held(wait=0) as granted:
            assert not granted  # the block still runs: the lock is fairness, the server's CAS is correctness
        with BranchLock("guest+p", "other-branch", tmp_path / "locks").held(wait=0) as granted:
            assert granted  # another branch has its own lock
    finally:
        gate.touch()
        assert proc.wait(timeout=60) == 0
    with ours.held(wait=0) as granted:
        assert granted


def test_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    proc, _ = hold(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    with BranchLock("guest+p", "master", tmp_path / "locks").held(wait=0) as granted:
        assert granted


def test_the_lock_is_reentrant_in_its_process(tmp_path: Path) -> None:
    lock = BranchLock("guest+p", "master", tmp_path / "locks")
    with lock.held(wait=0) as outer, lock.held(wait=0) as inner:
        assert outer and inner


class FileBranch:
    """A branch whose head is a file, so another process can commit to it (compare-and-swap on save)."""

    def __init__(self, head: Path) -> None:
        self.head = head

    def get_branch_hash(self, branch: str) -> str:
        return self.head.read_text()

    def get_root_hash(self, commit: str) -> str:
        return f"root-of-{commit}"

    def load_root(self, root_hash: str) -> dict[str, Any]:
        return {"root": root_hash}

    def get_branches(self) -> dict[str, str]:
        return {"master": self.head.read_text()}

    def create_branch(self, name: str, commit: str) -> None:
        raise AssertionError(f"the change went on a fork ({name})")

    def save(self, root: Any, parent: str, branch: str | None, message: str) -> dict[str, str]:
        current = self.head.read_text()
        if current != parent:
            return {"status": CommitStatus.FORKED, "hash": f"ours-on-{parent}"}
        self.head.write_text(f"ours-after-{parent}")
        return {"status": CommitStatus.SYNCED, "hash": f"ours-after-{parent}"}


BUSY_WRITER = """
import sys, time
from pathlib import Path
from deepforge_plugins.branch_lock import BranchLock
lock, head, stop = BranchLock("guest+p", "master", Path(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
n = 0
while not stop.exists():  # another plugin's short commits, one every few milliseconds, each under the lock
    with lock.held():
        n += 1
        head.write_text(f"other{n}")
    time.sleep(0.002)
"""


def test_a_long_edit_is_committed_among_frequent_short_ones(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    head, stop = tmp_path / "head", tmp_path / "stop"
    head.write_text("c0")
    writer = subprocess.Popen([sys.executable, "-c", BUSY_WRITER, str(tmp_path / "locks"), str(head), str(stop)])
    try:
        wait_for(lambda: head.read_text() != "c0", what="the other writer to commit")
        branch = FileBranch(head)
        plugin = type(
            "Plugin",
            (),
            {"core": branch, "project": branch, "util": branch, "branch_name": "master", "commit_hash": "c0",
             "root_node": {}, "namespace": "", "project_id": lambda self: "guest+p",
             "send_notification": lambda self, message: None},
        )()  # fmt: skip
        session = ModelSession(plugin)
        edits: list[str] = []

        def long_edit() -> None:  # the other writer commits many times while this runs, unless it waits
            edits.append(head.read_text())
            for _ in range(30):
                subprocess.run([sys.executable, "-c", "pass"], check=True)

        session.change("Created execution", long_edit)
        assert session.branch == "master"
        assert len(edits) == 1, f"the change was tried {len(edits)} times"
    finally:
        stop.touch()
        writer.wait(timeout=60)


def test_a_lock_dir_others_can_write_is_not_used(tmp_path: Path) -> None:
    """In a shared /tmp another user could make the lock dir first and hold our locks, stalling every commit
    for the whole wait: a dir that is not ours alone is refused and the commit goes on without a lock."""
    shared = tmp_path / "locks"
    shared.mkdir()
    shared.chmod(0o777)
    with BranchLock("guest+p", "master", shared).held(wait=0) as granted:
        assert not granted
    assert list(shared.iterdir()) == []  # no lock file of ours in their dir
