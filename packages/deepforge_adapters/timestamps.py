"""The wall-clock timestamps DeepForge's model and WebGME's executor record, in JavaScript's two shapes.

``Date.now()`` (milliseconds since the epoch: the model's ``startTime``, ``endTime``, ``createdAt``) and
``new Date().toISOString()`` (the executor's ``startTime``, ``finishTime``; dataInfo dates).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """``Date.now()``: milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def iso_ms(value: datetime) -> str:
    """``date.toISOString()``: ``2021-03-04T05:06:07.891Z`` (UTC, milliseconds, a ``Z``)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def now_iso() -> str:
    """``new Date().toISOString()``."""
    return iso_ms(datetime.now(UTC))
