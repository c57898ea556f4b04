"""The one time helper: JavaScript's ``Date.now()`` and ``toISOString()`` shapes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from deepforge_adapters.timestamps import iso_ms, now_iso, now_ms


def test_iso_ms_is_utc_with_milliseconds_and_z() -> None:
    when = datetime(2021, 3, 4, 5, 6, 7, 891_999, tzinfo=timezone(timedelta(hours=2)))
    assert iso_ms(when) == "2021-03-04T03:06:07.891Z"


def test_now_iso_and_now_ms_read_the_same_clock() -> None:
    before = now_ms()
    text = now_iso()
    after = now_ms()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= int(parsed.timestamp()) * 1000 + parsed.microsecond // 1000 <= after
