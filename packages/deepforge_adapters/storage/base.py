"""The storage interface: :class:`DataInfo` (where an artifact lives) and :class:`StorageClient`.

Compatible with DeepForge's ``StorageClient`` so existing models keep working: a dataInfo is exactly
DeepForge's ``{"backend": id, "data": ...}``; we may add fields inside ``data`` (a content hash) but never
remove or rename one.

A backend implements a handful of primitives (``get_file_stream``, ``put_file_stream``, ``stat``,
``delete_file``, ``delete_dir`` and ONE describe primitive, ``info``); everything else has a default here
that a backend overrides only when it can do better (a server-side copy, a pre-signed URL).  ``info``
answers, in at most one request, what the worker cache needs: the size, the content digest when the backend
knows one, and a version identity; ``get_metadata``, ``get_content_digest`` and ``get_cache_key`` (in the one
cache-key format, :meth:`StorageClient.cache_key`) are derived from it.

The base constructor also registers every secret value of the resolved config for log redaction, so no
backend (or caller) has to remember to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from ..config import Config, ConfigSchema
from ..errors import DataInfoError, StorageError
from ..hashing import is_sha1_hex
from ..secrets import register_secret
from ..streams import ProgressCallback, Readable, atomic_write, copy_stream

log = logging.getLogger(__name__)

#: The backend a bare blob hash (a dataInfo of DeepForge's pipeline library before 0.13) belongs to.
GME_BACKEND = "gme"


@dataclass(frozen=True)
class DataInfo:
    """DeepForge's pointer to an artifact: ``{"backend": "<id>", "data": <backend-specific>}``."""

    backend: str
    data: Any

    @classmethod
    def from_json(cls, value: str | bytes | Mapping[str, Any] | DataInfo) -> DataInfo:
        """Parse a dataInfo from its JSON text or dict; a malformed one raises :class:`DataInfoError`.

        A bare WebGME blob hash (40 hex digits, no JSON around it) is what a Data node's ``data`` held before
        DeepForge's pipeline library 0.13; it reads as the gme dataInfo DeepForge's own update turns it into
        (``UpdateDataNodesToUserAssets``: ``{"backend": "gme", "data": <hash>}``).
        """
        if isinstance(value, DataInfo):
            return value
        if isinstance(value, str | bytes):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if is_sha1_hex(text.strip()):
                return cls(backend=GME_BACKEND, data=text.strip())
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise DataInfoError(
                    f"dataInfo is not valid JSON ({exc}), nor a bare WebGME blob hash (40 lowercase hex digits, "
                    f"the format before DeepForge's pipeline library 0.13): {text[:80]!r}"
                ) from None
        if not isinstance(value, Mapping):
            raise DataInfoError(f"dataInfo must be a JSON object, got {type(value).__name__}")
        missing = [k for k in ("backend", "data") if k not in value]
        if missing:
            raise DataInfoError(f"dataInfo is missing {' and '.join(repr(m) for m in missing)}: {dict(value)!r}")
        extra = sorted(set(value) - {"backend", "data"})
        if extra:
            raise DataInfoError(f"dataInfo has unexpected keys {extra}; expected only 'backend' and 'data'")
        backend = value["backend"]
        if not isinstance(backend, str) or not backend:
            raise DataInfoError(f"dataInfo 'backend' must be a non-empty string, got {backend!r}")
        if value["data"] is None:
            raise DataInfoError(f"dataInfo 'data' is null for backend {backend!r}")
        return cls(backend=backend, data=value["data"])

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "data": self.data}

    def dumps(self) -> str:
        """The JSON string stored in a Data node's ``data`` attribute."""
        return json.dumps(self.to_json(), separators=(",", ":"), sort_keys=False)


def fresh_segment(now: float | None = None) -> str:
    """A key segment no earlier write used: ``<UTC time, to the second>-<8 random hex digits>``.

    Our writers (the runner's outputs, the Output operation, UploadArtifact) put every artifact under a fresh
    segment, ``<dir>/<segment>/<name>``, so they never overwrite a key a recorded dataInfo points at (reads are
    pinned to what was recorded: an overwritten key would make the older artifact unreadable).  The time
    says when the artifact was written; the name stays the last part of the key.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(4)}"


def fresh_key(directory: str, name: str) -> str:
    """``<directory>/<fresh segment>/<name>`` (``<fresh segment>/<name>`` without a directory)."""
    directory = directory.strip("/")
    return f"{directory}/{fresh_segment()}/{name}" if directory else f"{fresh_segment()}/{name}"


@dataclass(frozen=True)
class ObjectInfo:
    """What :meth:`StorageClient.info` knows about the object a dataInfo points at.

    ``size``: its bytes.  ``digest``: ``(hashlib algorithm, hex digest)`` of the content when the backend
    knows it (downloads are verified against it), else ``None`` (the size alone is checked).  ``version``:
    what identifies these bytes; for a content-addressed store the digest's hex itself, otherwise a backend
    token that changes whenever the content does (ETag and VersionId, size and mtime); ``None`` when the
    backend cannot tell (then there is no cache key).  ``metadata``: what else the backend knows (hashes,
    mtime, ETag, location), returned by :meth:`StorageClient.get_metadata` next to ``size``.
    """

    size: int
    digest: tuple[str, str] | None
    version: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content_addressed(self) -> bool:
        """The version is the content digest: equal bytes, equal version (whatever their names)."""
        return self.digest is not None and self.version == self.digest[1]


class StorageClient(ABC):
    """Abstract base of every storage backend.

    Subclasses set ``id``, ``name`` and ``schema`` and implement the abstract primitives.  ``config`` is
    validated against ``schema`` (environment fallbacks applied) at construction.
    """

    id: ClassVar[str]
    name: ClassVar[str]
    schema: ClassVar[ConfigSchema]
    #: ``True`` when :meth:`get_file_stream`, read to its end, raises :class:`IntegrityError` unless the bytes
    #: match :meth:`info`'s digest: the worker cache then does not hash them a second time.
    verifies_digest: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self.config: Config = self.schema.resolve(config)
        for value in self.config.secret_values():
            register_secret(value)  # scrubbed from logs (RedactingFilter) and from our error messages

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ------------------------------------------------------------------------------------ primitives
    @abstractmethod
    def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
        """A readable (``read(n)``, ``close()``, context manager) over the artifact's bytes."""

    @abstractmethod
    def put_file_stream(
        self, name: str, readable: Readable, progress: ProgressCallback | None = None, size: int | None = None
    ) -> DataInfo:
        """Store the bytes of ``readable`` under ``name``; atomic: a failed upload leaves no artifact."""

    @abstractmethod
    def stat(self, name: str) -> DataInfo:
        """The dataInfo of the artifact stored under ``name`` (:class:`NotFoundError` if none)."""

    @abstractmethod
    def delete_file(self, data_info: DataInfo) -> None: ...

    @abstractmethod
    def delete_dir(self, prefix: str) -> None:
        """Delete every artifact whose name starts with ``prefix/``."""

    @abstractmethod
    def info(self, data_info: DataInfo) -> ObjectInfo:
        """Size, digest and version of the object (see :class:`ObjectInfo`), with at most one request.

        Checks the dataInfo as every other path does (backend, shape, endpoint binding) before any request.
        """

    # ------------------------------------------------------------------------------------ derived
    def get_metadata(self, data_info: DataInfo) -> dict[str, Any]:
        """At least ``{"size": <bytes>}``, plus what the backend knows (hashes, mtime, ETag): ``info``'s."""
        info = self.info(data_info)
        return {**info.metadata, "size": info.size}

    def get_content_digest(self, data_info: DataInfo) -> tuple[str, str] | None:
        """``(hashlib algorithm, hex digest)`` of the content if the backend knows it, else ``None``."""
        return self.info(data_info).digest

    def get_cache_key(self, data_info: DataInfo) -> str:
        """A relative path that changes whenever the content changes (never just the artifact's name)."""
        return self.cache_key(self.info(data_info))

    def cache_key(self, info: ObjectInfo) -> str:
        """The one cache-key format: ``<backend id>/<h[:2]>/<h[2:]>``.

        ``h`` is the content digest when the version is that digest (a content-addressed store: same bytes,
        same key, whatever the name), else the sha256 of the version token (a rewrite changes it).
        """
        if info.version is None:
            raise DataInfoError(
                f"{self.id} dataInfo records nothing that identifies this version of the content (an ETag, a "
                "content hash, a modification time); cannot derive a content-stable cache key"
            )
        digest = info.version if info.content_addressed else hashlib.sha256(info.version.encode()).hexdigest()
        return f"{self.id}/{digest[:2]}/{digest[2:]}"

    # ------------------------------------------------------------------------------------ defaults
    def get_file(
        self, data_info: DataInfo, dest_path: str | os.PathLike[str], progress: ProgressCallback | None = None
    ) -> Path:
        """Download to ``dest_path`` atomically (temp file + rename)."""
        self.check_data_info(data_info)
        total = self._size_hint(data_info)
        with self.get_file_stream(data_info) as src, atomic_write(dest_path) as dst:
            copy_stream(src, dst, total=total, progress=progress)
        return Path(dest_path)

    def put_file(self, name: str, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> DataInfo:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            return self.put_file_stream(name, f, progress=progress, size=size)

    def copy(self, data_info: DataInfo, name: str, progress: ProgressCallback | None = None) -> DataInfo:
        """Copy an artifact to ``name`` in this backend, streaming through this process by default."""
        self.check_data_info(data_info)
        with self.get_file_stream(data_info) as src:
            return self.put_file_stream(name, src, progress=progress, size=self._size_hint(data_info))

    def get_download_url(self, data_info: DataInfo) -> str | None:
        """A URL a browser can fetch the artifact from (pre-signed for S3), or ``None``."""
        return None

    # ------------------------------------------------------------------------------------ helpers
    def check_data_info(self, data_info: DataInfo) -> None:
        if data_info.backend != self.id:
            raise StorageError(self.id, f"dataInfo belongs to backend {data_info.backend!r}, not {self.id!r}")

    def _size_hint(self, data_info: DataInfo) -> int | None:
        """The size if the dataInfo records it (no request); used only for progress totals."""
        data = data_info.data
        if isinstance(data, Mapping):
            for key in ("size", "ContentLength"):
                if isinstance(data.get(key), int):
                    return int(data[key])
        return None
