"""Running a job's command in its own process group, and signalling that group.

The runner, local compute's supervisor and the worker all start a command the same way: its own session
(so a cancel reaches every descendant, not just the direct child; DeepForge's Python child survived
cancels), stdin closed, stderr merged into stdout in write order (DeepForge lost stderr).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn_group(
    argv: Sequence[str],
    cwd: str | os.PathLike[str] | Path,
    env: Mapping[str, str],
    *,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Sequence[str | int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as the leader of a new process group; read its merged output from ``.stdout``.

    ``pass_fds`` stay open in the child (e.g. a credentials pipe); ``user``/``group``/``extra_groups`` are
    Popen's (run the child under another uid/gid; needs root or CAP_SETUID/CAP_SETGID).
    """
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
        user=user,
        group=group,
        extra_groups=None if extra_groups is None else list(extra_groups),
    )


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to the whole group; a group that is already gone (or not ours) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
