"""What every job of one worker shares: the server's clients, the directories, limits, and the job account."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from deepforge_adapters.secrets import Keyring
from deepforge_adapters.webgme.protocols import BlobAPI, ExecutorAPI

from .metrics import WorkerMetrics


@dataclass
class JobContext:
    """What every job of one worker shares."""

    executor: ExecutorAPI
    blob: BlobAPI
    client_id: str
    host: str
    work_dir: Path
    cache_dir: Path
    cancel_grace: float = 10.0
    max_bundle_bytes: int = 10 * 1024**3
    #: Extra environment for every job (e.g. the gme storage token); never logged.
    job_env: Mapping[str, str] = field(default_factory=dict)
    #: How long the final report is retried while the server is unreachable.
    report_retry_for: float = 600.0
    #: The deployment keyring (``None``: read from our environment / key file when a job needs it).
    keyring: Keyring | str | None = None
    #: ``--run-as``: the job's processes run under this account, not the worker's.
    run_as: RunAs | None = None
    #: The daemon's metrics (bytes moved are counted as they move).
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)


@dataclass(frozen=True)
class RunAs:
    """The account jobs run under (``deepforge-worker start --run-as USER``)."""

    user: str
    uid: int
    gid: int
    home: str

    @classmethod
    def lookup(cls, user: str) -> RunAs:
        """The account ``user`` (a name or a uid); ``ValueError`` with a clear message if unusable."""
        import pwd

        try:
            entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"--run-as {user}: no such user") from None
        if entry.pw_uid == os.geteuid():
            raise ValueError(f"--run-as {user}: that is the worker's own uid ({entry.pw_uid}); isolation needs another")
        if os.geteuid() != 0 and not _has_setid_capabilities():
            raise ValueError(
                f"--run-as {user}: the worker must run as root (or with CAP_SETUID and CAP_SETGID) to start jobs "
                "under another uid"
            )
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)

    def own(self, path: Path) -> None:
        """Give ``path`` (and everything under it) to this account, so the job can write its files."""
        os.chown(path, self.uid, self.gid, follow_symlinks=False)
        for dirpath, dirnames, filenames in os.walk(path):
            for name in [*dirnames, *filenames]:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid, follow_symlinks=False)


def _has_setid_capabilities() -> bool:
    """CAP_SETGID (6) and CAP_SETUID (7) in our effective set (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            line = next(line for line in fh if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    caps = int(line.split()[1], 16)
    return bool(caps & (1 << 6)) and bool(caps & (1 << 7))
