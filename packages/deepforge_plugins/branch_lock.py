"""One committer at a time per branch among the plugins of one host: a queue instead of a livelock.

A plugin commits optimistically (:class:`~deepforge_plugins.model.ModelSession`): load the head, edit, commit
on it; if another commit landed meanwhile, do it again.  That starves a long edit among frequent short ones:
in the 1,000-job soak run (seed 15) creating an Execution (copying a 20-operation pipeline through
webgme-bindings takes seconds) lost to the other runs' per-turn commits for 30 s again and again, and 24 runs
went on fork branches, where their drivers never found them.  Our plugins all run on the WebGME server's host
(server-side plugin execution), so an advisory ``flock`` on a file named after the project and branch lines
them up: whoever holds it loads the head, edits and commits with no other plugin of ours committing.

It is only fairness, never correctness: the commit is still compare-and-swap on the server (a user in the
UI commits without it), the lock is released when its process dies, and a lock not granted within
:data:`LOCK_WAIT_SECONDS` (a stuck or hostile holder) is done without.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Where the lock files live (one per project and branch); default ``<tmp>/deepforge-branch-locks-<uid>``.
LOCK_DIR_ENV = "DEEPFORGE_BRANCH_LOCK_DIR"
#: The longest wait for the lock before committing without it (the server's compare-and-swap still holds).
LOCK_WAIT_SECONDS = 120.0
#: How often a waiter tries again (``flock`` with LOCK_NB: a blocking flock could not be given up).
POLL_SECONDS = 0.02


def lock_dir(environ: os._Environ[str] | dict[str, str] = os.environ) -> Path:
    configured = environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"deepforge-branch-locks-{os.getuid()}"


class BranchLock:
    """Reentrant within the process (its threads share one holder), exclusive across processes."""

    def __init__(self, project_id: str, branch: str, directory: Path | None = None) -> None:
        name = hashlib.sha256(f"{project_id}\0{branch}".encode()).hexdigest()[:32]
        self.path = (directory or lock_dir()) / f"{name}.lock"
        self.branch = branch
        self.what = f"branch {branch!r} of {project_id!r}"
        self._mutex = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def held(self, wait: float = LOCK_WAIT_SECONDS) -> Iterator[bool]:
        """Hold the lock in the block; yields whether it was granted (False: waited ``wait`` s, or no lock
        file could be made; the block runs anyway)."""
        with self._mutex:
            if self._depth == 0:
                self._fd = self._acquire(wait)
            self._depth += 1
            try:
                yield self._fd is not None
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # closing the descriptor releases the flock
                    self._fd = None

    def _acquire(self, wait: float) -> int | None:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            owner = self.path.parent.stat()
            if owner.st_uid != os.getuid() or owner.st_mode & 0o022:
                # another user made the dir first (a shared /tmp): they could hold our locks and stall every
                # commit for the wait, so their files are not used
                raise PermissionError(f"{self.path.parent} is not ours alone (owner uid {owner.st_uid})")
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            log.debug("no commit lock for %s (%s); committing without it", self.what, exc)
            return None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    log.warning(
                        "the commit lock for %s was not granted in %.0f s; committing without it", self.what, wait
                    )
                    return None
                time.sleep(POLL_SECONDS)
            except OSError as exc:
                os.close(fd)
                log.debug("commit lock for %s failed (%s); committing without it", self.what, exc)
                return None
