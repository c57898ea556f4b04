"""``gme``: artifacts in the WebGME server's own blob store (DeepForge's default storage).

dataInfo: ``{"backend": "gme", "data": "<blob metadata hash>"}``, exactly DeepForge's, so existing models'
Data nodes keep working.

The blob is content addressed and immutable, which shapes this backend:

* ``stat(name)`` takes a *metadata hash* as the name (there are no paths to look up in a blob store);
* ``delete_file`` / ``delete_dir`` delete nothing: WebGME has no blob delete, and other nodes (or other
  projects) may point at the same hash.  They log at INFO that nothing was deleted instead of pretending;
* the cache key is the content sha1 (``gme/<2>/<38>``, mirroring the server's ``wg-content`` layout), so a
  renamed upload of the same bytes hits the cache and new bytes never hit a stale entry;
* a metadata hash pins its metadata forever, so each client remembers the metadata it has read
  from the server (bounded): :meth:`GmeStorage.info` costs one ``/rest/blob/metadata`` GET per hash and client, and the
  download that follows it (the worker cache's fetch) costs none.

Uploads and downloads stream through :class:`~deepforge_adapters.webgme.BlobClient` (bounded memory; sha1
computed while streaming and checked against the server's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast

from ..config import ConfigSchema, Field
from ..errors import DataInfoError, StorageError, WebGMEError
from ..streams import ProgressCallback, Readable, atomic_write, copy_stream
from ..webgme import DEFAULT_HOST, HOST_ENV
from ..webgme.blob import BlobClient, BlobReader, check_hash
from .base import DataInfo, ObjectInfo, StorageClient

log = logging.getLogger(__name__)

#: How many blobs' metadata one client remembers (a metadata hash pins its metadata: never stale).
METADATA_MEMO = 1024


class GmeStorage(StorageClient):
    id = "gme"
    name = "WebGME Blob Storage"
    schema = ConfigSchema(
        "gme",
        (
            Field(
                "host",
                "WebGME server",
                "URL of the WebGME server whose blob stores the artifacts",
                default=DEFAULT_HOST,
                env=(HOST_ENV,),
                binds_secrets=True,
            ),
            Field(
                "apiToken",
                "API token",
                "WebGME access token (sent as x-api-token); needed when the server refuses guests",
                is_auth=True,
            ),
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self.host = str(self.config["host"]).rstrip("/")
        self.blob = BlobClient(self.host, api_token=self.config.get("apiToken") or None)
        self._metadata: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._metadata_lock = threading.Lock()

    # ------------------------------------------------------------------------------------ primitives
    def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
        md_hash = self._hash(data_info)
        with storage_errors(md_hash):
            md = self._blob_metadata(md_hash)
            if _is_file(md):  # the download is this content: verified (sha1, size) and resumable
                url = self.blob.content_url(md_hash)
                reader = BlobReader(self.blob, url, md_hash, str(md["content"]), int(md.get("size") or 0))
            else:  # a complex artifact (a zip built on the fly) or a soft link: the blob client resolves it
                reader = self.blob.open(md_hash)
            return cast(BinaryIO, _StorageReader(reader))

    def put_file_stream(
        self, name: str, readable: Readable, progress: ProgressCallback | None = None, size: int | None = None
    ) -> DataInfo:
        with storage_errors(name):
            md_hash, _ = self.blob.create_file(name, readable, size=size, progress=progress)
        return DataInfo(self.id, md_hash)

    def stat(self, name: str) -> DataInfo:
        """``name`` is a blob *metadata hash* (the blob has no paths); :class:`NotFoundError` if unknown."""
        with storage_errors(name):
            self._blob_metadata(check_hash(name, "stat name (a blob metadata hash)"))
        return DataInfo(self.id, name)

    def delete_file(self, data_info: DataInfo) -> None:
        """No-op: the blob is immutable and shared by hash; logged so callers can see nothing was deleted."""
        log.info("gme storage: blob %s not deleted (WebGME's blob is immutable)", self._hash(data_info))

    def delete_dir(self, prefix: str) -> None:
        """No-op, as :meth:`delete_file`: the blob has no directories to delete."""
        log.info("gme storage: %r not deleted (WebGME's blob is immutable and has no directories)", prefix)

    #: A file blob's stream checks its content sha1 (the digest :meth:`info` gives) when read to the end.
    verifies_digest = True

    def info(self, data_info: DataInfo) -> ObjectInfo:
        """From the blob metadata (one GET, remembered): a file is content-addressed by its sha1; a complex
        artifact or soft link is pinned by its metadata hash (its zip is built on the fly: no digest).

        Metadata: the blob's ``name``, ``mime``, ``content`` (sha1), ``lastModified``...
        """
        md_hash = self._hash(data_info)
        with storage_errors(md_hash):
            md = self._blob_metadata(md_hash)
        size = int(md.get("size") or 0)
        if _is_file(md):
            return ObjectInfo(size, ("sha1", md["content"]), md["content"], md)
        return ObjectInfo(size, None, md_hash, md)

    # ------------------------------------------------------------------------------------ better defaults
    def get_file(
        self, data_info: DataInfo, dest_path: str | os.PathLike[str], progress: ProgressCallback | None = None
    ) -> Path:
        """Atomic, verified (sha1), resumable download with a known total for ``progress``."""
        with self.get_file_stream(data_info) as src, atomic_write(dest_path) as dst:
            copy_stream(src, dst, total=cast(_StorageReader, src).size, progress=progress)
        return Path(dest_path)

    def get_download_url(self, data_info: DataInfo) -> str:
        return f"{self.host}/rest/blob/download/{self._hash(data_info)}/"

    # ------------------------------------------------------------------------------------ helpers
    def _blob_metadata(self, md_hash: str) -> dict[str, Any]:
        """The blob's metadata: remembered, else one GET (:class:`NotFoundError` if the server has none)."""
        with self._metadata_lock:
            known = self._metadata.get(md_hash)
            if known is not None:
                self._metadata.move_to_end(md_hash)
                return dict(known)
        md = self.blob.metadata(md_hash)
        with self._metadata_lock:
            self._metadata[md_hash] = dict(md)
            self._metadata.move_to_end(md_hash)
            while len(self._metadata) > METADATA_MEMO:
                self._metadata.popitem(last=False)
        return dict(md)

    def _hash(self, data_info: DataInfo) -> str:
        self.check_data_info(data_info)
        data = data_info.data
        if not isinstance(data, str) or len(data) != 40 or any(c not in "0123456789abcdef" for c in data):
            raise DataInfoError(f"gme dataInfo 'data' must be a 40-hex blob metadata hash, got {data!r:.80}")
        return data


def _is_file(metadata: Mapping[str, Any]) -> bool:
    """A plain file blob (``contentType`` ``object``) whose ``content`` is its sha1."""
    content = metadata.get("content")
    return (metadata.get("contentType") or "object") == "object" and isinstance(content, str) and len(content) == 40


@contextlib.contextmanager
def storage_errors(name: str) -> Iterator[None]:
    """Blob REST failures surface as :class:`StorageError` (what storage callers catch), cause kept."""
    try:
        yield
    except WebGMEError as exc:
        raise StorageError(GmeStorage.id, str(exc), name=name) from exc


class _StorageReader:
    """A :class:`BlobReader` whose read errors are storage errors."""

    def __init__(self, reader: BlobReader) -> None:
        self._reader = reader
        #: The bytes the download returns, when known (``None`` for a zip built on the fly).
        self.size = reader.size

    def read(self, size: int = -1) -> bytes:
        with storage_errors(self._reader.metadata_hash):
            return self._reader.read(size)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> _StorageReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
