"""hashing.py and streams.py: streaming digests, copy with progress, atomic writes that leave nothing behind."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.hashing import CHUNK_SIZE, HashingReader, bytes_digest, file_digest, new_hash
from deepforge_adapters.streams import ProgressReader, atomic_write, copy_stream, iter_chunks

DATA = os.urandom(CHUNK_SIZE * 2 + 123)


def test_digests_agree_with_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(DATA)
    assert file_digest(path) == hashlib.sha256(DATA).hexdigest()
    assert file_digest(path, "sha1") == hashlib.sha1(DATA).hexdigest()
    assert bytes_digest(DATA, "md5") == hashlib.md5(DATA).hexdigest()
    assert new_hash("sha256").name == "sha256"


def test_hashing_reader_hashes_what_passes_through() -> None:
    reader = HashingReader(io.BytesIO(DATA), ("sha256", "sha1"))
    out = io.BytesIO()
    assert copy_stream(reader, out, chunk_size=1000) == len(DATA)
    assert out.getvalue() == DATA
    assert reader.bytes_read == len(DATA)
    assert reader.hexdigest() == hashlib.sha256(DATA).hexdigest()
    assert reader.hexdigest("sha1") == hashlib.sha1(DATA).hexdigest()
    assert reader.readable()
    reader.close()


def test_copy_stream_reports_progress_per_chunk() -> None:
    calls: list[tuple[int, int | None]] = []
    copy_stream(io.BytesIO(DATA), io.BytesIO(), total=len(DATA), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(DATA), len(DATA))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) == 3


def test_copy_stream_reports_an_empty_transfer_once() -> None:
    calls: list[tuple[int, int | None]] = []
    assert copy_stream(io.BytesIO(b""), io.BytesIO(), progress=lambda d, t: calls.append((d, t))) == 0
    assert calls == [(0, None)]


class _Reads:
    """A source that is not a file (a socket's body): read() only, and it may fail after ``fail_after`` bytes."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        self._raw = io.BytesIO(data)
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self._fail_after is not None and self._raw.tell() >= self._fail_after:
            raise ConnectionResetError("peer went away")
        return self._raw.read(size)


def _write_behind_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "deepforge-write-behind"]


def test_copy_stream_into_a_file_writes_behind_the_reads_and_every_byte_lands(tmp_path: Path) -> None:
    calls: list[int] = []
    with open(tmp_path / "out", "wb") as out:
        done = copy_stream(_Reads(DATA), out, total=len(DATA), progress=lambda d, t: calls.append(d))
        assert done == len(DATA)
    assert (tmp_path / "out").read_bytes() == DATA
    assert calls == [CHUNK_SIZE, 2 * CHUNK_SIZE, len(DATA)]
    assert not _write_behind_threads()


def test_a_write_that_fails_behind_the_reads_is_raised_by_the_copy(tmp_path: Path) -> None:
    class DiskFull:
        def __init__(self, f: Any) -> None:
            self._f = f
            self.writes = 0
            self.writer = ""

        def fileno(self) -> int:  # a regular file: the copy writes behind
            return int(self._f.fileno())

        def write(self, data: bytes) -> int:
            self.writes += 1
            self.writer = threading.current_thread().name
            raise OSError(28, "No space left on device")

    with open(tmp_path / "out", "wb") as f:
        dst = DiskFull(f)
        with pytest.raises(OSError, match="No space left"):
            copy_stream(_Reads(DATA * 4), dst)  # type: ignore[arg-type]
    assert dst.writes == 1  # nothing is written after the failure
    assert dst.writer == "deepforge-write-behind"  # the reads went on meanwhile
    assert not _write_behind_threads()


def test_a_read_that_fails_stops_the_writer_and_is_the_error_raised(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as out, pytest.raises(ConnectionResetError):
        copy_stream(_Reads(DATA, fail_after=CHUNK_SIZE), out)
    assert (tmp_path / "out").read_bytes() == DATA[:CHUNK_SIZE]  # what was read before the failure was written
    assert not _write_behind_threads()


def test_progress_reader_and_iter_chunks() -> None:
    calls: list[int] = []
    reader = ProgressReader(io.BytesIO(DATA), lambda d, t: calls.append(d), total=len(DATA))
    chunks = list(iter_chunks(reader, chunk_size=CHUNK_SIZE))
    assert b"".join(chunks) == DATA
    assert [len(c) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE, 123]
    assert reader.bytes_read == len(DATA)
    assert calls[-1] == len(DATA)
    assert reader.readable()


def test_atomic_write_publishes_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.bin"
    with atomic_write(dest, mode=0o600) as f:
        f.write(b"new")
        assert not dest.exists()  # invisible until the block ends
    assert dest.read_bytes() == b"new"
    assert dest.stat().st_mode & 0o777 == 0o600
    assert os.listdir(dest.parent) == ["out.bin"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_write(dest) as f:
        f.write(b"partial")
        raise RuntimeError("upload died")
    assert os.listdir(tmp_path) == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(dest) as f:
        f.write(b"partial")
        raise KeyboardInterrupt
    assert dest.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_background_hasher_matches_hashlib_and_ends_its_thread() -> None:
    import threading

    from deepforge_adapters.hashing import BackgroundHasher

    before = threading.active_count()
    hasher = BackgroundHasher(("sha256", "sha1"), depth=2)
    for i in range(0, len(DATA), 1000):
        hasher.update(bytearray(DATA[i : i + 1000]))  # not bytes: copied, so a reused buffer cannot corrupt it
    assert hasher.hexdigest("sha256") == hashlib.sha256(DATA).hexdigest()
    assert hasher.hexdigest("sha1") == hashlib.sha1(DATA).hexdigest()
    hasher.close()  # idempotent
    assert threading.active_count() == before
    with pytest.raises(ValueError, match="after the hasher was finished"):
        hasher.update(b"late")
    idle = BackgroundHasher(("md5",))
    assert idle.hexdigest("md5") == hashlib.md5(b"").hexdigest()


def test_copy_fd_copies_from_an_offset_up_to_a_limit_and_moves_only_the_destination(tmp_path: Path) -> None:
    from deepforge_adapters.streams import copy_fd

    (tmp_path / "src").write_bytes(DATA)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        dst.write(b"head")
        dst.flush()
        seen: list[tuple[int, int | None]] = []
        n = copy_fd(src.fileno(), dst.fileno(), src_offset=5, limit=CHUNK_SIZE * 2, total=CHUNK_SIZE * 2,
                    progress=lambda d, t: seen.append((d, t)))  # fmt: skip
        assert n == CHUNK_SIZE * 2
        assert os.lseek(src.fileno(), 0, os.SEEK_CUR) == 0  # the source's offset is untouched
        assert os.lseek(dst.fileno(), 0, os.SEEK_CUR) == 4 + n  # the destination's ends after the copy
        dst.write(b"tail")
    assert (tmp_path / "dst").read_bytes() == b"head" + DATA[5 : 5 + n] + b"tail"
    assert seen[-1] == (n, n) and len(seen) > 1


def test_copy_fd_copies_in_userspace_where_the_kernel_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from deepforge_adapters import streams

    def refuse(*args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(streams.os, "copy_file_range", refuse)
    (tmp_path / "src").write_bytes(DATA)
    with open(tmp_path / "src", "rb") as src, open(tmp_path / "dst", "wb") as dst:
        assert streams.copy_fd(src.fileno(), dst.fileno()) == len(DATA)
    assert (tmp_path / "dst").read_bytes() == DATA


def test_written_file_hasher_hashes_what_the_file_holds_and_reports_a_short_file(tmp_path: Path) -> None:
    import threading

    from deepforge_adapters.hashing import WrittenFileHasher

    before = threading.active_count()
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        hasher = WrittenFileHasher(fd, ("sha256", "blake3"), start=3)
        for end in range(0, len(DATA), 100_000):
            os.pwrite(fd, DATA[end : end + 100_000], end)
            hasher.advance(min(end + 100_000, len(DATA)))
        assert hasher.hexdigest("sha256") == hashlib.sha256(DATA[3:]).hexdigest()
        assert hasher.hexdigest("blake3") == bytes_digest(DATA[3:], "blake3")
        assert threading.active_count() == before
        short = WrittenFileHasher(fd, ("sha256",))
        short.advance(len(DATA) + 1)  # more than the file holds: an error, not a wrong digest
        with pytest.raises(OSError, match="file ended at offset"):
            short.hexdigest()
    finally:
        os.close(fd)


def test_early_writeback_starts_the_write_out_while_a_durable_file_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download's final fsync should find little left to write (issue 14: downloads against curl)."""
    from deepforge_adapters import streams

    from tests.fixtures.waiting import wait_for

    real = streams._sync_file_range()
    if real is None:
        pytest.skip("no sync_file_range on this platform")
    calls: list[tuple[int, int]] = []

    def recorded(fd: int, offset: int, nbytes: int, flags: int) -> int:
        calls.append((os.fstat(fd).st_size, flags))
        return real(fd, offset, nbytes, flags)

    monkeypatch.setattr(streams, "_sync_file_range", lambda: recorded)
    monkeypatch.setattr(streams, "WRITEBACK_BYTES", CHUNK_SIZE)
    with atomic_write(tmp_path / "big") as f:
        f.write(DATA[: 2 * CHUNK_SIZE])
        f.flush()
        wait_for(lambda: calls, timeout=30, what="a write-out started while the file was being written")
        f.write(DATA[2 * CHUNK_SIZE :])
    assert (tmp_path / "big").read_bytes() == DATA
    assert calls[0] == (2 * CHUNK_SIZE, 2)  # SYNC_FILE_RANGE_WRITE: start, never wait
