"""The wall-clock timestamps DeepForge's model and WebGME's executor record, from one clock.

JavaScript's two shapes: ``Date.now()`` (milliseconds since the epoch: the model's ``startTime``,
``endTime``, ``createdAt``) and ``new Date().toISOString()`` (the executor's ``startTime``, ``finishTime``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """``Date.now()``: milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def now_iso() -> str:
    """``new Date().toISOString()``: UTC with milliseconds and a ``Z``."""
    ms = now_ms()
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
