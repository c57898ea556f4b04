"""The faults of a soak run: their schedule, drawn from the seed, and how each is injected.

A schedule is a list of :class:`Fault` (kind, the pause before it, its parameters), the same for the same
seed and count; every kind appears at least once when there are at least as many faults as kinds.  What a
fault hits (which worker, which plugin process, which Execution) is drawn from the same seed at injection
time among what is running then, so a replay injects the same kinds in the same order; the timing of the
system under test is not replayed.

Kinds (:data:`KINDS`):

* ``worker_kill``: SIGKILL one worker daemon, start a new one on the same work dir;
* ``worker_stop``: SIGSTOP one worker for longer than the server's worker timeout, then SIGCONT;
* ``webgme_restart``: restart the WebGME server (the database stays; its plugin processes die);
* ``s3_restart``: SIGKILL SeaweedFS and start it again on the same data and ports;
* ``plugin_kill``: SIGKILL one ExecutePipeline plugin process (the driver resumes its Execution);
* ``cancel``: run CancelExecution on one running Execution;
* ``proxy_drop``, ``proxy_delay``, ``proxy_reset``: that fault on one of the proxies for a few seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = (
    "worker_kill",
    "worker_stop",
    "webgme_restart",
    "s3_restart",
    "plugin_kill",
    "cancel",
    "proxy_drop",
    "proxy_delay",
    "proxy_reset",
)
PROXIES = ("workers", "plugins", "s3")


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    pause: float  # seconds after the previous fault recovered (or the run started)
    params: dict[str, Any] = field(default_factory=dict)


def schedule(seed: int, count: int, gap: tuple[float, float] = (2.0, 8.0), stop_seconds: float = 15.0) -> list[Fault]:
    """``count`` faults drawn from ``seed``: every kind once (while ``count`` allows), the rest at random."""
    rng = random.Random(f"faults-{seed}")
    kinds = list(KINDS[:count]) if count < len(KINDS) else list(KINDS)
    kinds += [rng.choice(KINDS) for _ in range(count - len(kinds))]
    rng.shuffle(kinds)
    faults = []
    for i, kind in enumerate(kinds):
        params: dict[str, Any] = {"pick": rng.random()}
        if kind == "worker_stop":
            params["seconds"] = stop_seconds
        elif kind.startswith("proxy_"):
            params["proxy"] = rng.choice(PROXIES)
            params["window"] = round(rng.uniform(1.0, 4.0), 2)
            if kind == "proxy_delay":
                params["seconds"] = round(rng.uniform(0.2, 2.0), 2)
        faults.append(Fault(i, kind, round(rng.uniform(*gap), 2), params))
    return faults


def pick(items: list[Any], fraction: float) -> Any:
    """The item at ``fraction`` (the fault's own draw in [0, 1)) of a non-empty list."""
    return items[min(len(items) - 1, int(fraction * len(items)))]


def plugin_processes(server_pid: int, plugin: str = "ExecutePipeline") -> list[int]:
    """The pids of ``plugin``'s Python processes under the WebGME server ``server_pid`` (walks /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(f"{plugin}/run_plugin.py".encode()) for part in cmdline) and _descends_from(
            int(entry.name), server_pid
        ):
            found.append(int(entry.name))
    return sorted(found)


def _descends_from(pid: int, ancestor: int) -> bool:
    for _ in range(64):  # bounded: a pid chain is never this deep
        if pid <= 1:
            return False
        if pid == ancestor:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def marked_processes(name: str, value: str) -> list[int]:
    """Pids whose environment holds ``name=value`` (the run's marker), ours excluded."""
    import os

    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
