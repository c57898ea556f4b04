"""``sciserver-files``: artifacts in a SciServer Files user volume (``<volumePool>/<owner>/<volume>/<name>``).

DeepForge-compatible: a dataInfo is ``{"backend": "sciserver-files", "data": <the jsontree file entry
(name, size, lastModified, creationTime)> + volume, volumePool, filename}``, so models made by DeepForge's
JavaScript adapter keep working (old ones without the jsontree fields too).

What SciServer makes this adapter careful about (docs/sciserver.md):

* a download of a missing file is **200 with an empty body**: a 200 is trusted only with a
  ``Content-Length`` (and the bytes received must reach it); without one, ``jsontree`` decides whether the
  file exists, so a missing file is a :class:`NotFoundError`, never an empty artifact;
* an upload onto an existing file is a 500 "File already exists." unless ``quiet=true``; we upload to a
  hidden temporary name and move it into place (``replaceExisting``), so an overwrite works and a failed
  upload never replaces or truncates the previous version;
* every failure is a 500 with ``{"status":"error","error":...}``: errors carry that message.

A dataInfo never decides where the token goes (:mod:`deepforge_adapters.endpoints`): its ``volumePool`` must
be ``Storage``/``Temporary``, its ``volume`` ``<owner>/<name>`` and its ``filename`` a relative path, none with
``.``/``..`` segments (requests collapses them, which walked out of ``fileservice/api`` into other services);
a dataInfo that records a ``fileServiceUrl`` or ``loginUrl`` other than this client's is refused naming both;
and the session itself sends the token only under the configured service URLs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import posixpath
import uuid
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote

import requests

from ..config import ConfigSchema, Field
from ..endpoints import parse_endpoint, require_endpoint
from ..errors import DataInfoError, DeepForgeError, IntegrityError, NotFoundError, StorageError
from ..hashing import CHUNK_SIZE
from ..sciserver.session import (
    CREDENTIAL_FIELDS,
    SciServerAuthError,
    SciServerSession,
    server_message,
)
from ..streams import ProgressCallback, ProgressReader, Readable, iter_chunks
from .base import DataInfo, ObjectInfo, StorageClient

log = logging.getLogger(__name__)

POOLS = ("Storage", "Temporary")
#: Stands for the user's own name in ``volume`` (DeepForge's default ``USERNAME/deepforge_data``).
USERNAME_PLACEHOLDER = "USERNAME"
DEFAULT_VOLUME = f"{USERNAME_PLACEHOLDER}/deepforge_data"


class SciServerFilesStorage(StorageClient):
    id = "sciserver-files"
    name = "SciServer Files"
    schema = ConfigSchema(
        "sciserver-files",
        (
            *CREDENTIAL_FIELDS,
            Field(
                "volumePool",
                "Volume Pool",
                "Root volume: Storage (backed up, quota) or Temporary (purged)",
                default="Storage",
                choices=POOLS,
            ),
            Field(
                "volume",
                "Volume",
                "User volume as <owner>/<name>; USERNAME stands for your SciServer user name (the default, "
                "USERNAME/deepforge_data, is created on the first upload)",
                default=DEFAULT_VOLUME,
            ),
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        try:
            self.session = SciServerSession.from_config(self.id, self.config)
        except SciServerAuthError as exc:
            raise StorageError(self.id, str(exc)) from None
        self.base_url = self.config["fileServiceUrl"].rstrip("/") + "/"
        self.pool: str = self.config["volumePool"]
        self._volume_spec = normalize_volume(self.config["volume"], self.pool) or DEFAULT_VOLUME
        self._volume: str | None = None
        #: The volume is the user's own, named with the placeholder: created (quietly) before the first upload.
        self._create_volume = self._volume_spec.split("/")[0] == USERNAME_PLACEHOLDER

    # ------------------------------------------------------------------------------------ locations
    @property
    def volume(self) -> str:
        """``<owner>/<volume>``, ``USERNAME`` replaced by the user's name (default ``<you>/deepforge_data``)."""
        if self._volume is None:
            owner, _, rest = self._volume_spec.partition("/")
            if owner == USERNAME_PLACEHOLDER:
                owner = self._auth(self.session.whoami)
            self._volume = f"{owner}/{rest}"
        return self._volume

    def _ensure_volume(self) -> None:
        """Create the user's ``USERNAME/...`` volume if it does not exist yet (``quiet=true``: no error if it does)."""
        if not self._create_volume:
            return
        owner, name = self.volume.split("/", 1)
        url = self.base_url + "volume/" + "/".join(quote(s, safe="") for s in (self.pool, owner, name))
        response = self._request("PUT", url, f"create volume {self.pool}/{self.volume}", None, params={"quiet": "true"})
        if response.status_code != 200:
            self._fail(f"create volume {self.pool}/{self.volume}", None, response)
        self._create_volume = False

    def url(self, api: str, pool: str, volume: str, path: str = "") -> str:
        segments = [pool, *volume.split("/"), *[p for p in path.split("/") if p]]
        return self.base_url + api + "/" + "/".join(quote(s, safe="") for s in segments)

    def _location(self, data_info: DataInfo) -> tuple[str, str, str]:
        """``(pool, volume, filename)`` of a dataInfo; DeepForge's oldest ones lack ``volumePool``.

        Refuses, before any request, a dataInfo that names another SciServer (``fileServiceUrl``/``loginUrl``
        fields, if it has them) or whose location has ``.``/``..`` segments (see the module docstring).
        """
        self.check_data_info(data_info)
        data = data_info.data
        if not isinstance(data, Mapping) or not data.get("filename") or not data.get("volume"):
            raise DataInfoError(f"{self.id} dataInfo needs 'filename' and 'volume' in its data, got {data!r:.200}")
        for field in ("fileServiceUrl", "loginUrl"):
            if data.get(field):
                configured = parse_endpoint(self.config[field])
                require_endpoint(self.id, f"the dataInfo's {field!r}", data[field], (configured,))
        pool = str(data.get("volumePool") or "Storage")
        if pool not in POOLS:
            raise DataInfoError(f"{self.id} dataInfo 'volumePool' must be one of {', '.join(POOLS)}, got {pool!r:.80}")
        volume = normalize_volume(str(data["volume"]), pool)
        parts = volume.split("/")
        if len(parts) != 2 or any(p in (".", "..") for p in parts):
            raise DataInfoError(f"{self.id} dataInfo 'volume' must be <owner>/<volume>, got {data['volume']!r:.80}")
        filename = str(data["filename"])
        if any(p in (".", "..") for p in filename.split("/")) or not filename.strip("/"):
            raise DataInfoError(
                f"{self.id} dataInfo 'filename' must be a path inside the volume without '.' or '..' segments, "
                f"got {filename!r:.80}"
            )
        return pool, volume, filename

    # ------------------------------------------------------------------------------------ requests
    def _auth(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except SciServerAuthError as exc:
            raise StorageError(self.id, str(exc)) from None

    def _request(self, method: str, url: str, what: str, name: str | None, **kwargs: Any) -> requests.Response:
        try:
            return self._auth(lambda: self.session.request(method, url, what=what, **kwargs))
        except requests.RequestException as exc:
            raise StorageError(self.id, f"{what} failed: {exc}", name) from None

    def _fail(self, what: str, name: str | None, response: requests.Response) -> NoReturn:
        message = server_message(response)
        if response.status_code == 500 and ("does not exist" in message.lower() or "Path does not exist" in message):
            raise NotFoundError(self.id, f"{what} failed: {message}", name)
        raise StorageError(self.id, f"{what} failed: {message}", name)

    # ------------------------------------------------------------------------------------ primitives
    def put_file_stream(
        self, name: str, readable: Readable, progress: ProgressCallback | None = None, size: int | None = None
    ) -> DataInfo:
        """Upload to a temporary name beside ``name``, then move it into place (overwriting)."""
        name = check_name(self.id, name)
        self._ensure_volume()
        pool, volume = self.pool, self.volume
        parent, base = posixpath.split(name)
        temp = posixpath.join(parent, f".{base}.upload-{uuid.uuid4().hex[:12]}")
        body = UploadBody(readable, progress, size)
        try:
            response = self._request(
                "PUT",
                self.url("file", pool, volume, temp),
                f"upload {name!r}",
                name,
                params={"quiet": "true"},
                data=body if size is not None else iter_chunks(body),
                headers={"Content-Type": "application/octet-stream"},
                upload=True,
                rewind=(lambda: body.rewound() if size is not None else iter_chunks(body.rewound()))
                if body.can_rewind
                else None,
            )
            if response.status_code != 200:
                self._fail(f"upload {name!r} to {pool}/{volume}", name, response)
            if size is not None and body.bytes_read != size:
                raise IntegrityError(self.id, f"upload sent {body.bytes_read} bytes, expected {size}", name)
            self._transfer((pool, volume, temp), name, copy=False, what=f"move upload into place as {name!r}")
        except BaseException:
            with contextlib.suppress(DeepForgeError):  # best effort: the original error is the one to report
                self._delete(pool, volume, temp, quiet=True)
            raise
        info = self._stat(pool, volume, name)
        if info.data["size"] != body.bytes_read:
            raise IntegrityError(
                self.id, f"stored size {info.data['size']} differs from the {body.bytes_read} bytes sent", name
            )
        log.debug("%s: stored %s/%s/%s (%d bytes)", self.id, pool, volume, name, body.bytes_read)
        return info

    def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
        """The file's bytes, after checking (``jsontree``) that it is still the file the dataInfo recorded.

        SciServer has no content hash: a file rewritten since (another size or modification time than
        recorded) is refused with :class:`IntegrityError` rather than read as if it were the recorded one.
        """
        pool, volume, filename = self._location(data_info)
        response = self._request(
            "GET", self.url("file", pool, volume, filename), f"download {filename!r}", filename, stream=True
        )
        if response.status_code != 200:
            try:
                self._fail(f"download {filename!r} from {pool}/{volume}", filename, response)
            finally:
                response.close()
        try:
            # A missing file (or a directory) is a 200 with nothing: jsontree tells, and tells what changed.
            current = self._current(pool, volume, filename, data_info.data)
        except BaseException:
            response.close()
            raise
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else int(current["size"])
        return io.BufferedReader(VerifiedStream(response, expected, self.id, filename), CHUNK_SIZE)

    def stat(self, name: str) -> DataInfo:
        return self._stat(self.pool, self.volume, check_name(self.id, name))

    def _stat(self, pool: str, volume: str, filename: str) -> DataInfo:
        """DeepForge's stat: list the parent (``level=2``) and find the file entry."""
        parent, base = posixpath.split(filename.strip("/"))
        response = self._request(
            "GET", self.url("jsontree", pool, volume, parent), f"stat {filename!r}", filename, params={"level": 2}
        )
        if response.status_code != 200:
            self._fail(f"stat {filename!r} in {pool}/{volume}", filename, response)
        try:
            root = response.json()["root"]
        except (ValueError, KeyError, TypeError):
            raise StorageError(self.id, f"stat {filename!r}: unexpected jsontree answer", filename) from None
        for entry in root.get("files") or []:  # older servers omit "files" when empty
            if entry.get("name") == base:
                data = dict(entry)
                data.update(volume=volume, volumePool=pool, filename=filename)
                return DataInfo(self.id, data)
        if any(folder.get("name") == base for folder in root.get("folders") or []):
            raise NotFoundError(self.id, f"{filename!r} in {pool}/{volume} is a directory, not a file", filename)
        raise NotFoundError(self.id, f"the file {filename!r} does not exist in {pool}/{volume}", filename)

    def delete_file(self, data_info: DataInfo) -> None:
        """Idempotent: deleting a file that is already gone succeeds (``quiet=true``)."""
        pool, volume, filename = self._location(data_info)
        self._delete(pool, volume, filename, quiet=True)

    def delete_dir(self, prefix: str) -> None:
        prefix = check_name(self.id, prefix)
        self._delete(self.pool, self.volume, prefix, quiet=True)

    def _delete(self, pool: str, volume: str, path: str, *, quiet: bool) -> None:
        if not path.strip("/"):
            raise StorageError(self.id, f"refusing to delete the root of volume {pool}/{volume}")
        response = self._request(
            "DELETE",
            self.url("data", pool, volume, path),
            f"delete {path!r}",
            path,
            params={"quiet": "true" if quiet else "false"},
        )
        if response.status_code != 200:
            self._fail(f"delete {path!r} in {pool}/{volume}", path, response)

    def info(self, data_info: DataInfo) -> ObjectInfo:
        """What the dataInfo recorded (no request, as DeepForge), or one ``jsontree`` stat for what it lacks.

        No digest (SciServer has none); the version is the location, size and ``lastModified``, since the
        same path is rewritten by every re-run of an operation.  Metadata: times and location.
        """
        pool, volume, filename = self._location(data_info)
        data = data_info.data
        if not isinstance(data.get("size"), int) or not data.get("lastModified"):
            data = self._current(pool, volume, filename, data)  # DeepForge's putFile dataInfo had no mtime
        identity = json.dumps([pool, volume, filename, data["size"], data["lastModified"]])
        meta = {k: data[k] for k in ("lastModified", "creationTime") if k in data}
        meta.update(filename=filename, volume=volume, volumePool=pool)
        return ObjectInfo(int(data["size"]), None, identity, meta)

    def _current(self, pool: str, volume: str, filename: str, recorded: Mapping[str, Any]) -> dict[str, Any]:
        """The file's jsontree entry now, refused if its size or ``lastModified`` differ from ``recorded``."""
        current = self._stat(pool, volume, filename).data
        for field in ("size", "lastModified"):
            if recorded.get(field) is not None and recorded[field] != current.get(field):
                raise IntegrityError(
                    self.id,
                    f"the file changed since this dataInfo was recorded ({field} {current.get(field)!r}, "
                    f"recorded {recorded[field]!r}): it was modified at {current.get('lastModified')} and now "
                    f"holds {current.get('size')} bytes, the dataInfo names the version of "
                    f"{recorded.get('lastModified') or 'an unknown time'} ({recorded.get('size')} bytes); "
                    "refusing to read it as the recorded one",
                    filename,
                )
        return current

    # ------------------------------------------------------------------------------------ overrides
    def copy(self, data_info: DataInfo, name: str, progress: ProgressCallback | None = None) -> DataInfo:
        """Server-side copy (``PUT api/data?doCopy=true``); no bytes pass through this process."""
        pool, volume, filename = self._location(data_info)
        name = check_name(self.id, name)
        self._transfer((pool, volume, filename), name, copy=True, what=f"copy {filename!r} to {name!r}")
        info = self._stat(self.pool, self.volume, name)
        if progress is not None:
            progress(info.data["size"], info.data["size"])
        return info

    def _transfer(self, source: tuple[str, str, str], name: str, *, copy: bool, what: str) -> None:
        """Server-side move or copy of ``(pool, volume, path)`` onto ``name`` in this client's volume."""
        owner, _, user_volume = self.volume.partition("/")
        destination = {
            "destinationPath": name,
            "destinationRootVolume": self.pool,
            "destinationUserVolume": user_volume,
            "destinationOwnerName": owner,
        }
        response = self._request(
            "PUT",
            self.url("data", *source),
            what,
            name,
            params={"replaceExisting": "true", "doCopy": "true" if copy else "false"},
            json=destination,
        )
        if response.status_code != 200:
            self._fail(what, name, response)


# ---------------------------------------------------------------------------------------------- helpers
def normalize_volume(volume: str | None, pool: str) -> str:
    """``alice/data``; DeepForge users sometimes wrote ``Storage/alice/data``."""
    parts = [p for p in (volume or "").split("/") if p]
    if parts and parts[0] == pool and len(parts) == 3:
        parts = parts[1:]
    return "/".join(parts)


def check_name(backend: str, name: str) -> str:
    """A relative path inside the volume: no empty, ``.`` or ``..`` segments."""
    parts = [p for p in str(name).split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise StorageError(backend, "artifact names must be relative paths without '.' or '..' segments", name)
    return "/".join(parts)


class UploadBody(ProgressReader):
    """The request body of an upload: streamed, counted, reported to ``progress``.

    With a known size it has ``len()`` so requests sends a ``Content-Length`` (and streams it in blocks);
    without one it is sent chunked.  It can be rewound for a retry when the source is seekable.
    """

    def __init__(self, raw: Readable, progress: ProgressCallback | None, size: int | None) -> None:
        super().__init__(raw, progress, size)
        self._size = size
        self._start: int | None = None
        try:
            if getattr(raw, "seekable", lambda: False)():
                self._start = raw.tell()  # type: ignore[attr-defined]
        except (OSError, ValueError):
            self._start = None

    def __len__(self) -> int:
        return self._size or 0

    @property
    def can_rewind(self) -> bool:
        return self._start is not None

    def rewound(self) -> UploadBody:
        """Back at the start, for sending again."""
        self._raw.seek(self._start)  # type: ignore[attr-defined]
        self.bytes_read = 0
        return self


class VerifiedStream(io.RawIOBase):
    """A download body that raises :class:`IntegrityError` if it ends before (or runs past) the expected byte
    count.  :meth:`SciServerFilesStorage.get_file_stream` hands it out inside an ``io.BufferedReader``, so
    callers get ``read``/``readline``/``pickle.load`` and a context manager."""

    def __init__(self, response: requests.Response, expected: int, backend: str, name: str) -> None:
        super().__init__()
        self._response = response
        self.expected = expected
        self.received = 0
        self._backend = backend
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._response.raw.read(len(view), decode_content=True)
        except Exception as exc:
            raise StorageError(self._backend, f"download interrupted: {type(exc).__name__}", self._name) from None
        self.received += len(data)
        if not data and self.received < self.expected:
            raise IntegrityError(
                self._backend, f"download ended after {self.received} of {self.expected} bytes", self._name
            )
        if self.received > self.expected:
            raise IntegrityError(
                self._backend, f"download returned more than the expected {self.expected} bytes", self._name
            )
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()
