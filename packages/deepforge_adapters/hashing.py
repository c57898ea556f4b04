"""The one hashing helper: digests computed while bytes stream past, never by re-reading a whole file.

WebGME's blob is content-addressed with sha1, our local store and cache use sha256, S3 gives MD5-ish ETags;
every place that hashes goes through :class:`HashingReader` or :func:`file_digest` so the chunk size and the
algorithm names live in one module.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from typing import IO, BinaryIO

from .errors import InvalidHashError

CHUNK_SIZE = 1024 * 1024  # 1 MiB: large enough for throughput, small enough to keep memory flat


#: A sha1 hex digest as WebGME's blob, its executor and our job ids spell it: exactly 40 lowercase hex digits.
SHA1_HEX_LENGTH = 40
_SHA1_HEX = re.compile(r"[0-9a-f]{40}")


def is_sha1_hex(value: object) -> bool:
    """Whether ``value`` is a str of exactly 40 lowercase hex digits (nothing a path or URL could abuse)."""
    return isinstance(value, str) and _SHA1_HEX.fullmatch(value) is not None


def check_sha1_hex(value: object, what: str = "hash") -> str:
    """``value`` if it is 40 lowercase hex digits, else :class:`InvalidHashError` naming ``what``.

    The one check for every hash that becomes a path (job directories, cache entries) or a URL segment
    (blob, executor): a job id such as ``/tmp/victim`` or ``..`` is refused before it is joined to anything.
    """
    if not is_sha1_hex(value):
        shown = value if isinstance(value, str) else type(value).__name__
        raise InvalidHashError(f"{what} must be 40 lowercase hex digits, got {shown!r:.120}")
    return str(value)


def new_hash(algorithm: str) -> hashlib._Hash:
    return hashlib.new(algorithm)


def file_digest(path: str | os.PathLike[str], algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = new_hash(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes, algorithm: str = "sha256") -> str:
    return hashlib.new(algorithm, data).hexdigest()


class HashingReader:
    """Wraps a readable; every byte read through it updates the digests and the byte count.

    Lets an upload compute its content hash in the same pass that sends the bytes, which is what keeps
    memory bounded for multi-GiB artifacts.
    """

    def __init__(self, raw: IO[bytes] | BinaryIO, algorithms: Iterable[str] = ("sha256",)) -> None:
        self._raw = raw
        self._hashes = {name: new_hash(name) for name in algorithms}
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if data:
            self.bytes_read += len(data)
            for h in self._hashes.values():
                h.update(data)
        return data

    def readable(self) -> bool:
        return True

    def hexdigest(self, algorithm: str = "sha256") -> str:
        return self._hashes[algorithm].hexdigest()

    def close(self) -> None:
        self._raw.close()
