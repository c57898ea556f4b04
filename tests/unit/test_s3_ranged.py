"""The ranged download's own error paths (:mod:`deepforge_adapters.storage.s3_ranged`), against a fake
client; the real server's side (pinned ranges, a mid-download overwrite) is in
``tests/integration/test_s3_server.py``."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ResponseStreamingError
from deepforge_adapters.storage.s3_ranged import CHUNK, RangeMismatchError, download_ranges, part_ranges

DATA = hashlib.sha256(b"seed").digest() * (5 * CHUNK // 32 + 5)  # ~5 chunks, not a multiple of one


class Body:
    """A GetObject body over ``data`` that breaks off once after ``break_after`` bytes, if given."""

    def __init__(self, data: bytes, break_after: int | None) -> None:
        self._data, self._pos, self._break_after = data, 0, break_after
        self.closed = False

    def read(self, amt: int) -> bytes:
        if self._break_after is not None and self._pos >= self._break_after:
            raise ResponseStreamingError(error="connection reset by peer")
        chunk = self._data[self._pos : self._pos + amt]
        self._pos += len(chunk)
        return chunk

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """``get_object`` with Range over DATA; ``breaks`` maps a range's first byte to where its first body
    breaks off; ``refuse`` makes the GET of a range starting there raise (a server error)."""

    def __init__(self, breaks: dict[int, int] | None = None, refuse: int | None = None) -> None:
        self.breaks = dict(breaks or {})
        self.refuse = refuse
        self.ranges: list[str] = []
        self.args: list[dict[str, Any]] = []
        self.bodies: list[Body] = []
        self._lock = threading.Lock()

    def get_object(self, Range: str, **args: Any) -> dict[str, Any]:
        first, last = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        with self._lock:
            self.ranges.append(Range)
            self.args.append(args)
        if first == self.refuse:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "GetObject")
        body = Body(DATA[first : last + 1], self.breaks.pop(first, None))
        self.bodies.append(body)
        return {"Body": body, "ContentRange": f"bytes {first}-{last}/{len(DATA)}"}


def download(tmp_path: Path, client: FakeClient, part_size: int, threads: int = 4) -> bytes:
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        download_ranges(
            client, {"Bucket": "b", "Key": "k", "IfMatch": '"e"'}, fd, len(DATA), part_size=part_size, threads=threads
        )  # type: ignore[arg-type]
    finally:
        os.close(fd)
    return path.read_bytes()


def test_part_ranges_cover_every_byte_once() -> None:
    assert list(part_ranges(10, 4)) == [(0, 3), (4, 7), (8, 9)]
    assert list(part_ranges(8, 4)) == [(0, 3), (4, 7)]
    assert list(part_ranges(0, 4)) == []


@pytest.mark.parametrize("part_size", [CHUNK // 3, CHUNK, len(DATA)], ids=["parts", "chunk-parts", "one-part"])
def test_every_part_lands_at_its_offset_pinned_to_the_etag(tmp_path: Path, part_size: int) -> None:
    client = FakeClient()
    assert download(tmp_path, client, part_size) == DATA
    assert len(client.ranges) == len(list(part_ranges(len(DATA), part_size)))
    assert all(a == {"Bucket": "b", "Key": "k", "IfMatch": '"e"'} for a in client.args)  # every range pinned
    assert all(b.closed for b in client.bodies)


def test_a_body_that_breaks_off_is_fetched_again_from_where_it_stopped(tmp_path: Path) -> None:
    part = 3 * CHUNK
    client = FakeClient(breaks={0: CHUNK})  # the first part's body breaks off after its first chunk
    assert download(tmp_path, client, part) == DATA
    assert f"bytes={CHUNK}-{part - 1}" in client.ranges  # resumed at the first byte not written, not at 0


def test_a_server_error_stops_the_download_and_is_raised(tmp_path: Path) -> None:
    part = CHUNK // 4
    client = FakeClient(refuse=part)  # the second range's GET fails
    with pytest.raises(ClientError, match="InternalError"):
        download(tmp_path, client, part, threads=1)
    assert len(client.ranges) == 2  # one worker: nothing after the failed part was asked for


def test_a_body_that_keeps_breaking_is_given_up(tmp_path: Path) -> None:
    class AlwaysBreaks(FakeClient):
        def get_object(self, Range: str, **args: Any) -> dict[str, Any]:
            self.breaks[int(Range.removeprefix("bytes=").split("-")[0])] = 0
            return super().get_object(Range, **args)

    client = AlwaysBreaks()
    with pytest.raises(ResponseStreamingError):
        download(tmp_path, client, len(DATA))
    assert len(client.ranges) == 5  # PART_ATTEMPTS


@pytest.mark.parametrize(
    "answer",
    [None, "bytes 0-{size_1}/{size}", "bytes {first}-{last}/{bigger}", "garbage"],
    ids=["whole-object-no-range", "another-range", "another-size", "unparsable"],
)
def test_a_server_that_answers_another_range_is_refused_not_written(tmp_path: Path, answer: str | None) -> None:
    """A server (or proxy) that ignores Range sends the object's first bytes for every part: refuse it."""

    class OtherRange(FakeClient):
        def get_object(self, Range: str, **args: Any) -> dict[str, Any]:
            response = super().get_object(Range, **args)
            first, last = (int(x) for x in Range.removeprefix("bytes=").split("-"))
            if answer is None:  # a 200: the whole object, no Content-Range
                response = {"Body": Body(DATA, None)}
            else:
                fields = {"first": first, "last": last, "size": len(DATA), "size_1": len(DATA) - 1}
                response["ContentRange"] = answer.format(**fields, bigger=len(DATA) + 1)
            return response

    with pytest.raises(RangeMismatchError, match="bytes="):
        download(tmp_path, OtherRange(), CHUNK)
