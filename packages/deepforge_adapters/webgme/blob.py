"""A streaming client for WebGME's blob REST API (``/rest/blob``): files, metadata, complex artifacts.

The blob is content addressed.  A file's *content hash* is the sha1 of its bytes; its *metadata hash* (what
dataInfos, job ids and artifacts refer to) is the sha1 of its metadata serialised exactly as WebGME's
``BlobMetadata.serialize`` does (:func:`metadata_hash`).  Both are computed here while the bytes stream and
compared with the server's answer, so a truncated upload or a server that hashes differently is an error,
not a silently wrong dataInfo.

Uploads stream from any readable (bounded memory, ``Content-Type: application/octet-stream`` so Express
doesn't eat the body).  Downloads stream too, and a download of a single file that breaks off (a server
restart) is resumed by re-requesting it and skipping what was already delivered; the content sha1 is then
checked at the end.  Complex artifacts (zips built on the fly) can't be resumed, so those fail clearly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, cast

import requests
import urllib3

from ..errors import IntegrityError, InvalidHashError, NotFoundError, WebGMEError
from ..hashing import CHUNK_SIZE, BackgroundHasher, HashingReader, check_sha1_hex
from ..http import describe_response
from ..streams import ProgressCallback, ProgressReader, Readable, atomic_write, copy_stream, iter_chunks
from ._rest import DEFAULT_HOST, auth_headers, check, json_body, quote_segment, request_with_replay, session_with

log = logging.getLogger(__name__)

BACKEND = "gme"
HASH_LENGTH = 40
#: How many times a broken download is re-requested before giving up.
MAX_RESUMES = 3
#: How long a resume waits for the server to come back (seconds).
RESUME_WAIT = 60.0
#: Tries of an upload from a seekable source (a stream gets one).
UPLOAD_ATTEMPTS = 3
#: Files :meth:`BlobClient.upload_artifact` sends at once (the session's connection pool holds 10).
UPLOAD_THREADS = 4
_SERIALIZED_KEYS = ("name", "size", "mime", "isPublic", "tags", "content", "contentType")
#: WebGME (npm ``mime``) types that Python's ``mimetypes`` names differently or not at all.
_MIME_OVERRIDES = {".py": "text/x-python", ".js": "text/javascript", ".json": "application/json",
                   ".md": "text/markdown", ".yaml": "text/yaml", ".yml": "text/yaml", ".zip": "application/zip",
                   ".csv": "text/csv", ".txt": "text/plain", ".webgmex": "application/octet-stream"}  # fmt: skip


def metadata_hash(metadata: Mapping[str, Any]) -> str:
    """The metadata hash WebGME gives ``metadata`` (docs/protocols.md, "The blob: hashes").

    sha1 of ``JSON.stringify(BlobMetadata.serialize())``: the keys in a fixed order, WebGME's defaults for
    absent ones, sorted tags and, for complex blobs, entries sorted by path.  ``lastModified`` (added by the
    server on read) is not part of it.
    """
    md = {
        "name": metadata.get("name"),
        "size": metadata.get("size") or 0,
        "mime": metadata.get("mime") or "",
        "isPublic": metadata.get("isPublic") or False,
        "tags": sorted(metadata.get("tags") or []),
        "content": metadata.get("content"),
        "contentType": metadata.get("contentType") or "object",
    }
    if md["contentType"] == "complex" and isinstance(md["content"], Mapping):
        md["content"] = {key: md["content"][key] for key in sorted(md["content"])}
    if md["content"] is None:  # JSON.stringify drops undefined members
        del md["content"]
    text = json.dumps({k: md[k] for k in _SERIALIZED_KEYS if k in md}, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def guess_mime(name: str) -> str:
    """The mime WebGME's ``mime.getType(name)`` gives for common names, else ``application/octet-stream``."""
    ext = os.path.splitext(name)[1].lower()
    return _MIME_OVERRIDES.get(ext) or mimetypes.guess_type(name, strict=True)[0] or "application/octet-stream"


def file_metadata(name: str, size: int, content_hash: str) -> dict[str, Any]:
    """The metadata ``createFile`` stores for a file (the mime is only a guess of WebGME's; see guess_mime)."""
    return {
        "name": name,
        "size": size,
        "mime": guess_mime(name),
        "isPublic": False,
        "tags": [],
        "content": content_hash,
        "contentType": "object",
    }


def check_hash(value: str, what: str = "blob hash") -> str:
    """:func:`~deepforge_adapters.hashing.check_sha1_hex` raising :class:`WebGMEError` (what blob callers catch)."""
    try:
        return check_sha1_hex(value, what)
    except InvalidHashError as exc:
        raise WebGMEError(str(exc)) from None


class BlobClient:
    """``/rest/blob`` of one WebGME server; auth headers go on every request, downloads included."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        api_token: str | None = None,
        webgme_token: str | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self.session = session_with(auth_headers(api_token, webgme_token), session)

    def __repr__(self) -> str:
        return f"BlobClient({self.host!r})"

    def url(self, *parts: str) -> str:
        """Each part is percent-encoded as one path segment (a ``/`` or ``..`` in a part cannot change the route)."""
        return f"{self.host}/rest/blob/" + "/".join(quote_segment(p) for p in parts)

    def content_url(self, metadata_hash: str, subpath: str | None = None, view: bool = False) -> str:
        """``.../download/<hash>/<subpath>`` (always the trailing slash, as WebGME's client builds it)."""
        check_hash(metadata_hash)
        return self.url("view" if view else "download", metadata_hash, subpath or "")

    # ------------------------------------------------------------------------------------ uploads
    def create_file(
        self, name: str, readable: Readable, size: int | None = None, progress: ProgressCallback | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Stream ``readable`` into a new blob file; returns ``(metadata hash, metadata)``.

        The content sha1 and byte count are taken while sending and must match the server's metadata.  A
        seekable source is replayed after a server error; a pure stream is sent once (a half-consumed stream
        can't be sent again), and the error says so.
        """
        what = f"blob createFile {name!r} at {self.host}"
        start = _tell(readable)
        attempts = 1 if start is None else UPLOAD_ATTEMPTS
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.5 * 2**attempt)
                readable.seek(start)  # type: ignore[attr-defined]
                log.warning("%s: retrying the upload from the start (%d/%d)", what, attempt, attempts - 1)
            last = attempt + 1 == attempts
            note = "" if start is not None else " (the source is a stream, which can't be sent twice: not retried)"
            hashing = HashingReader(cast(BinaryIO, ProgressReader(readable, progress, size)), ("sha1",))
            try:
                response = self.session.post(
                    self.url("createFile", name),
                    data=iter_chunks(hashing) if size is None else SizedBody(hashing, size, what),
                    headers={"Content-Type": "application/octet-stream"},
                    allow_redirects=False,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if not last:
                    continue
                raise WebGMEError(f"{what}: upload failed after {hashing.bytes_read} bytes: {exc}{note}") from None
            if response.status_code >= 500 and not last:
                continue
            if response.status_code >= 500:
                raise WebGMEError(f"{what}: {describe_response(response)}{note}", response.status_code)
            check(response, what)
            md_hash, metadata = _single_entry(json_body(response, what), what)
            self._verify_file(what, md_hash, metadata, hashing.hexdigest("sha1"), hashing.bytes_read, size)
            return md_hash, metadata
        raise AssertionError("unreachable")  # pragma: no cover

    def _verify_file(
        self, what: str, md_hash: str, metadata: Mapping[str, Any], sha1: str, sent: int, size: int | None
    ) -> None:
        if size is not None and sent != size:
            raise IntegrityError(BACKEND, f"{what}: the source gave {sent} bytes, expected {size}")
        if metadata.get("content") != sha1 or metadata.get("size") != sent:
            raise IntegrityError(
                BACKEND,
                f"{what}: server stored content {metadata.get('content')} ({metadata.get('size')} bytes) "
                f"but {sent} bytes with sha1 {sha1} were sent",
            )
        if metadata_hash(metadata) != md_hash:
            raise IntegrityError(BACKEND, f"{what}: server's metadata hash {md_hash} does not match its metadata")

    def create_metadata(self, metadata: Mapping[str, Any]) -> str:
        """Store a metadata descriptor (a complex artifact, usually); returns its hash, checked locally."""
        body = json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        what = f"blob createMetadata {metadata.get('name')!r} at {self.host}"
        response = request_with_replay(
            lambda: self.session.post(
                self.url("createMetadata"),
                data=body,
                headers={"Content-Type": "application/octet-stream"},
                allow_redirects=False,
            ),
            what,
        )
        check(response, what)
        md_hash, _ = _single_entry(json_body(response, what), what)
        expected = metadata_hash(metadata)
        if md_hash != expected:
            raise IntegrityError(BACKEND, f"{what}: server answered hash {md_hash}, computed {expected} locally")
        return md_hash

    def create_artifact(self, name: str, entries: Mapping[str, str], sizes: Mapping[str, int] | None = None) -> str:
        """A complex artifact ``<name>.zip`` whose ``{relpath: metadata hash}`` entries are soft links.

        ``sizes`` (per relpath) saves a metadata request per entry when the caller just uploaded them.
        """
        content: dict[str, dict[str, str]] = {}
        total = 0
        for relpath, md_hash in entries.items():
            check_hash(md_hash, f"artifact {name!r} entry {relpath!r}")
            size = sizes.get(relpath) if sizes else None
            total += size if size is not None else int(self.metadata(md_hash).get("size") or 0)
            content[relpath] = {"content": md_hash, "contentType": "softLink"}
        return self.create_metadata(
            {
                "name": f"{name}.zip",
                "size": total,
                "mime": "application/zip",
                "isPublic": False,
                "tags": [],
                "content": content,
                "contentType": "complex",
            }
        )

    def upload_artifact(
        self, name: str, files: Mapping[str, str | os.PathLike[str]], progress: ProgressCallback | None = None
    ) -> str:
        """Upload each ``{relpath: local path}`` (streaming) and link them into one complex artifact.

        Without ``progress``, up to :data:`UPLOAD_THREADS` files are sent at once: a job bundle is ~8 small
        files, and one request after the other was ~0.1 s of every job a plugin starts (bench/scale_pipelines.py).
        The artifact lists its entries in the order of ``files`` whatever order the uploads end in.
        """
        sizes = {relpath: os.path.getsize(path) for relpath, path in files.items()}

        def upload(relpath: str) -> str:
            with open(files[relpath], "rb") as f:
                md_hash, _ = self.create_file(os.path.basename(relpath), f, size=sizes[relpath], progress=progress)
            return md_hash

        threads = 1 if progress is not None else min(UPLOAD_THREADS, len(files))
        if threads <= 1:
            entries = {relpath: upload(relpath) for relpath in files}
        else:
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="blob-upload") as pool:
                futures = {relpath: pool.submit(upload, relpath) for relpath in files}
                entries = {relpath: future.result() for relpath, future in futures.items()}
        return self.create_artifact(name, entries, sizes)

    # ------------------------------------------------------------------------------------ reads
    def metadata(self, metadata_hash: str) -> dict[str, Any]:
        """The metadata of a blob (with ``lastModified``); :class:`NotFoundError` if the server has none."""
        check_hash(metadata_hash)
        what = f"blob metadata {metadata_hash} at {self.host}"
        response = self.session.get(self.url("metadata", metadata_hash), allow_redirects=False)
        if response.status_code == 404:
            raise NotFoundError(BACKEND, f"no blob metadata at {self.host}", name=metadata_hash)
        check(response, what)
        body = json_body(response, what)
        if not isinstance(body, dict):
            raise WebGMEError(f"{what}: expected a JSON object, got {type(body).__name__}", response.status_code)
        return body

    def open(self, metadata_hash: str, subpath: str | None = None, view: bool = False) -> BlobReader:
        """A readable over the blob's bytes (a zip for a complex artifact without ``subpath``).

        Use as a context manager.  Single files are resumed if the connection breaks and checked against
        their content sha1 at the end.
        """
        target = self._resolve_file(metadata_hash, subpath)
        return BlobReader(self, self.content_url(metadata_hash, subpath, view), metadata_hash, *target)

    def download(
        self,
        metadata_hash: str,
        dest: str | os.PathLike[str],
        subpath: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Path:
        """Stream the blob into ``dest`` atomically (temp file + rename); returns ``dest``."""
        with self.open(metadata_hash, subpath) as src, atomic_write(dest) as dst:
            copy_stream(src, dst, total=src.size, progress=progress)
        return Path(dest)

    def _resolve_file(self, metadata_hash: str, subpath: str | None) -> tuple[str | None, int | None]:
        """``(content sha1, size)`` of the bytes a download returns, or ``(None, None)`` for a built zip."""
        md = self.metadata(metadata_hash)
        for _ in range(16):  # soft links may chain; WebGME follows them, so do we (bounded)
            kind, content = md.get("contentType"), md.get("content")
            if kind == "complex":
                if not subpath:
                    return None, None
                if not isinstance(content, Mapping) or subpath not in content:
                    raise NotFoundError(BACKEND, f"artifact {metadata_hash} has no entry {subpath!r}", name=subpath)
                entry, subpath = content[subpath], None
                if entry.get("contentType") == "object":
                    return str(entry.get("content")), None
                md = self.metadata(str(entry.get("content")))
            elif kind == "softLink":
                md = self.metadata(str(content))
            else:
                return str(content), int(md.get("size") or 0)
        raise WebGMEError(f"blob {metadata_hash}: soft links nested too deeply")


class BlobReader:
    """A file-like reader over a blob download that resumes after a broken connection (single files only)."""

    def __init__(
        self, client: BlobClient, url: str, metadata_hash: str, content_hash: str | None, size: int | None
    ) -> None:
        self._client = client
        self._url = url
        self.metadata_hash = metadata_hash
        self.content_hash = content_hash
        self.size = size
        self._sha1 = BackgroundHasher(("sha1",))  # beside the socket reads and the caller's writes
        self.bytes_read = 0
        self._resumes = 0
        self._buffer = b""
        self._response: requests.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._eof = False
        self._connect(skip=0)

    def _connect(self, skip: int) -> None:
        what = f"blob download {self.metadata_hash} from {self._client.host}"
        try:
            # identity: the server would otherwise gzip the body on the fly, single-threaded, capping a
            # download at ~40 MiB/s (and artifacts are mostly incompressible anyway)
            response = self._client.session.get(
                self._url, stream=True, headers={"Accept-Encoding": "identity"}, allow_redirects=False
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise WebGMEError(f"{what}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 404:
            response.close()
            raise NotFoundError(BACKEND, f"no blob at {self._client.host}", name=self.metadata_hash)
        check(response, what)
        self._response = response
        self._chunks = response.iter_content(CHUNK_SIZE)
        while skip > 0:  # the blob server has no Range support: re-read and drop what was delivered
            chunk = next(self._chunks, b"")
            if not chunk:
                raise WebGMEError(f"{what}: resumed stream ended before byte {self.bytes_read}")
            if len(chunk) > skip:
                self._buffer = chunk[skip:]
            skip -= len(chunk)

    def _next_chunk(self) -> bytes:
        assert self._chunks is not None
        while True:
            try:
                return next(self._chunks, b"")
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.ProtocolError) as exc:  # fmt: skip
                self._resume(exc)

    def _resume(self, exc: Exception) -> None:
        what = f"blob download {self.metadata_hash} from {self._client.host}"
        if self.content_hash is None:
            raise WebGMEError(
                f"{what}: connection broke after {self.bytes_read} bytes ({exc}); a zip built on the fly "
                "cannot be resumed, download it again"
            ) from None
        if self._resumes >= MAX_RESUMES:
            raise WebGMEError(f"{what}: connection broke after {self.bytes_read} bytes, {MAX_RESUMES} resumes "
                              f"used up: {exc}") from None  # fmt: skip
        self._resumes += 1
        log.warning("%s: connection broke after %d bytes (%s); resuming (%d/%d)",
                    what, self.bytes_read, exc, self._resumes, MAX_RESUMES)  # fmt: skip
        if self._response is not None:
            self._response.close()
        deadline = time.monotonic() + RESUME_WAIT
        while True:  # a restarting server refuses connections for a few seconds: wait for it, bounded
            try:
                self._connect(skip=self.bytes_read)
                return
            except WebGMEError as again:
                if time.monotonic() > deadline or (again.status_code is not None and again.status_code < 500):
                    raise
                time.sleep(1.0)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        while not self._buffer and not self._eof:
            chunk = self._next_chunk()
            if chunk:
                self._buffer = chunk
            else:
                self._eof = True
                self._finish()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        self.bytes_read += len(data)
        self._sha1.update(data)
        return data

    def _finish(self) -> None:
        what = f"blob download {self.metadata_hash} from {self._client.host}"
        got = self.bytes_read  # _finish runs when the buffer is empty: every byte has been delivered
        if self.size is not None and got != self.size:
            raise IntegrityError(BACKEND, f"{what}: got {got} bytes, metadata says {self.size}")
        if self.content_hash is not None:
            digest = self._sha1.hexdigest("sha1")
            if digest != self.content_hash:
                raise IntegrityError(BACKEND, f"{what}: content sha1 {digest}, expected {self.content_hash}")

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._sha1.close()
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SizedBody:
    """A request body of known length: sent with ``Content-Length`` instead of chunked framing (faster, and
    what curl does).  The source must give exactly ``size`` bytes; anything else aborts the upload."""

    def __init__(self, raw: Readable, size: int, what: str) -> None:
        self._raw = raw
        self.len = size  # requests reads .len for Content-Length
        self._left = size
        self._what = what

    def read(self, n: int = -1) -> bytes:
        # http.client asks for 16 KiB blocks; it sends whatever it gets, and 1 MiB blocks cut the per-call
        # overhead (hash update, progress, Python frames) 64-fold.
        want = self._left if n is None or n < 0 else min(max(n, CHUNK_SIZE), self._left)
        data = self._raw.read(want) if want else b""
        self._left -= len(data)
        if want and not data:
            raise IntegrityError(BACKEND, f"{self._what}: the source ended {self._left} bytes short of "
                                          f"the expected {self.len}")  # fmt: skip
        if not self._left and self._raw.read(1):
            raise IntegrityError(BACKEND, f"{self._what}: the source has more than the expected {self.len} bytes")
        return data


def _tell(readable: Readable) -> int | None:
    """The position of a seekable source (so a failed upload can be replayed), else ``None``."""
    seekable = getattr(readable, "seekable", None)
    try:
        if callable(seekable) and seekable():
            return int(readable.tell())  # type: ignore[attr-defined]
    except (OSError, ValueError):
        pass
    return None


def _single_entry(body: Any, what: str) -> tuple[str, dict[str, Any]]:
    """WebGME answers ``{<hash>: metadata}``; the client takes the first key."""
    if not isinstance(body, dict) or len(body) != 1:
        raise WebGMEError(f"{what}: expected {{<hash>: metadata}}, got {str(body)[:200]}")
    md_hash, metadata = next(iter(body.items()))
    return check_hash(md_hash, f"{what}: answered hash"), metadata
