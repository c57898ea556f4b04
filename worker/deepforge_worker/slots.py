"""Process slots: how many jobs run at once, and which GPUs each one may see.

A slot is a place for one running job (or label probe).  Without GPUs the pool is just a counter of
``processes``.  With GPUs, the GPU ids are split into ``processes`` disjoint groups (``--gpus 0,1,2,3
--processes 2`` gives slots ``0,1`` and ``2,3``) and a job's ``CUDA_VISIBLE_DEVICES`` is its slot's group, so
two jobs never share a GPU (Parsl's ``available_accelerators`` idea; DeepForge #750).  A worker with no
``--gpus`` leaves ``CUDA_VISIBLE_DEVICES`` as the operator set it.

Labels are the worker's static labels plus those granted by label probes; the daemon sends them on every
poll, and the server only hands out jobs whose labels are a subset.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass
class Slot:
    index: int
    gpus: tuple[str, ...] = ()
    job: str | None = None

    def env(self) -> dict[str, str]:
        """Environment additions for a process started in this slot."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)} if self.gpus else {}


def gpu_groups(gpus: Sequence[str], processes: int) -> list[tuple[str, ...]]:
    """Split ``gpus`` into ``processes`` contiguous groups whose sizes differ by at most one."""
    if processes < 1:
        raise ValueError("processes must be >= 1")
    if gpus and processes > len(gpus):
        raise ValueError(f"{processes} slots cannot each get their own GPU out of {len(gpus)}")
    if not gpus:
        return [() for _ in range(processes)]
    size, extra = divmod(len(gpus), processes)
    groups, start = [], 0
    for i in range(processes):
        end = start + size + (1 if i < extra else 0)
        groups.append(tuple(gpus[start:end]))
        start = end
    return groups


class SlotPool:
    """Thread-safe allocation of slots; ``available`` is what the daemon reports as ``availableProcesses``."""

    def __init__(self, processes: int, gpus: Sequence[str] = (), labels: Iterable[str] = ()) -> None:
        self.slots = [Slot(i, group) for i, group in enumerate(gpu_groups(list(gpus), processes))]
        self._labels: list[str] = []
        self.add_labels(labels)
        self._lock = threading.Lock()
        self.closed = False

    @property
    def available(self) -> int:
        with self._lock:
            return 0 if self.closed else sum(1 for s in self.slots if s.job is None)

    @property
    def busy(self) -> int:
        with self._lock:
            return sum(1 for s in self.slots if s.job is not None)

    def acquire(self, job: str, *, claimed: bool = False) -> Slot | None:
        """A free slot now holding ``job``; None when all are busy or the pool is closed (draining).

        ``claimed``: the server has already assigned ``job`` to us (it came in a poll answer), so it gets a
        free slot even while draining: refusing it would leave it RUNNING on the server with nobody running it.
        """
        with self._lock:
            if self.closed and not claimed:
                return None
            for slot in self.slots:
                if slot.job is None:
                    slot.job = job
                    return slot
        return None

    def snapshot(self) -> list[dict[str, object]]:
        """Each slot's index, GPUs and job (None when idle), read under the lock."""
        with self._lock:
            return [{"index": s.index, "gpus": list(s.gpus), "job": s.job} for s in self.slots]

    def release(self, slot: Slot) -> None:
        with self._lock:
            slot.job = None

    def close(self) -> None:
        """Stop handing out slots (SIGTERM drain); running jobs keep theirs."""
        with self._lock:
            self.closed = True

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    def add_labels(self, labels: Iterable[str]) -> None:
        for label in labels:
            if label and label not in self._labels:
                self._labels.append(label)
