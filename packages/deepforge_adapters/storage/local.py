"""``local``: artifacts as plain files under one root directory on this machine.

The backend for single-machine use (``deepforge run`` with compute ``local``, tests, demos) and the model
the other backends are measured against.  A dataInfo looks like::

    {"backend": "local",
     "data": {"filename": "guest+proj/executions/_K_a_b/model",   # name relative to the root
              "size": 1234,                                        # bytes
              "blake3": "9f86d08...",                              # content hash, 64 hex digits
              "mtime": 1732582800.123}}                            # file mtime when it was written

The root is *not* recorded: a dataInfo stays valid when the root moves (say, a volume mounted elsewhere) and
never leaks a local path into a model.  ``size`` and the hash are computed while the bytes stream in (the hash
in a thread beside the write) and are checked again on the way out: opening a file whose size changed, or
reading one to its end whose hash changed, raises :class:`~deepforge_adapters.errors.IntegrityError` instead
of handing stale bytes to a job.  A transfer from a file into a file (``put_file``, a put of an open file,
``get_file``, a fetch into the worker cache) never passes the bytes through Python: ``os.copy_file_range``
copies them in the kernel and a thread hashes what landed in the destination, read back from the page cache
(:class:`~deepforge_adapters.hashing.WrittenFileHasher`), so a verified copy costs what ``cp`` + fsync does.

**The hash is BLAKE3** (:data:`~deepforge_adapters.hashing.LOCAL_HASH`): about twice sha256's speed, so a
verified copy runs at the speed of ``cp`` + fsync.  dataInfos written before it record ``"sha256"`` instead
of ``"blake3"``; they are read, verified and cached with sha256 as before (never rewritten).

Names are confined to the root: empty names, NUL bytes, absolute paths, ``..`` parts and symlinks that
resolve outside the root are rejected with a :class:`~deepforge_adapters.errors.StorageError` naming the
name.  ``get_download_url`` returns ``None``: there is no server in front of the directory, and a
``file://`` URL would be a path on *this* machine that a browser elsewhere cannot open.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from ..config import ConfigSchema, Field
from ..errors import DataInfoError, IntegrityError, NotFoundError, StorageError
from ..hashing import CHUNK_SIZE, LOCAL_HASH, BackgroundHasher, HashingReader, WrittenFileHasher, file_digest
from ..streams import ProgressCallback, Readable, atomic_write, copy_fd, copy_stream, regular_fd
from ..timestamps import iso_ms
from .base import DataInfo, ObjectInfo, StorageClient

log = logging.getLogger(__name__)

ROOT_ENV = "DEEPFORGE_STORAGE_ROOT"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: The content-hash fields a local dataInfo may carry, the current one first (sha256: written before blake3).
DIGEST_FIELDS = (LOCAL_HASH, "sha256")


def changed_when(mtime: float, recorded: Any) -> str:
    """`` (modified at <UTC>, after the dataInfo recorded <UTC>)``: when a file changed under its dataInfo."""
    now = iso_ms(datetime.fromtimestamp(mtime, UTC))
    if isinstance(recorded, int | float) and not isinstance(recorded, bool):
        return f" (modified at {now}, after the dataInfo recorded {iso_ms(datetime.fromtimestamp(recorded, UTC))})"
    return f" (modified at {now})"


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/deepforge/storage``, else ``~/.local/share/deepforge/storage``."""
    environ = os.environ if environ is None else environ
    data_home = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "deepforge" / "storage"


class LocalStorage(StorageClient):
    """Files under ``root``; see the module docstring for the dataInfo shape and the guarantees."""

    id = "local"
    name = "Local Storage"
    schema = ConfigSchema(
        "local",
        (
            Field(
                "root",
                "Root directory",
                f"Directory that holds the artifacts (default: ${ROOT_ENV}, else ~/.local/share/deepforge/storage)",
                env=(ROOT_ENV,),
            ),
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        root = self.config["root"] or default_root()
        # Resolved once so that confinement checks compare real paths (the root itself may be a symlink).
        self.root = Path(os.path.realpath(Path(root).expanduser()))

    # ------------------------------------------------------------------------------------ names
    def normalize_name(self, name: str) -> str:
        """The canonical form of ``name`` (``a/b``), or :class:`StorageError` if it could escape the root."""
        if not isinstance(name, str) or not name.strip("/ "):
            raise StorageError(self.id, "empty name; expected a path relative to the storage root", repr(name))
        if "\x00" in name:
            raise StorageError(self.id, "name contains a NUL byte", repr(name))
        if name.startswith("/") or PurePosixPath(name).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", name):
            raise StorageError(self.id, "absolute paths are not allowed; names are relative to the root", name)
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise StorageError(self.id, "'..' is not allowed in a name", name)
        if not parts:
            raise StorageError(self.id, "name refers to the storage root itself", name)
        return "/".join(parts)

    def path_for(self, name: str) -> Path:
        """The file that holds ``name``, after checking that it (and any symlink on the way) stays inside."""
        canonical = self.normalize_name(name)
        path = self.root.joinpath(*canonical.split("/"))
        real = os.path.realpath(path)
        if real != str(self.root) and not real.startswith(str(self.root) + os.sep):
            raise StorageError(self.id, f"resolves outside the storage root {self.root} (symlink?)", name)
        return path

    def _data(self, data_info: DataInfo) -> dict[str, Any]:
        """The ``data`` of a local dataInfo, checked for shape; the error names what is wrong."""
        self.check_data_info(data_info)
        data = data_info.data
        if not isinstance(data, Mapping):
            raise DataInfoError(f"local dataInfo 'data' must be an object, got {type(data).__name__}: {data!r}")
        problems = []
        if not isinstance(data.get("filename"), str):
            problems.append("'filename' (string)")
        if not isinstance(data.get("size"), int) or isinstance(data.get("size"), bool) or data["size"] < 0:
            problems.append("'size' (non-negative integer)")
        present = [f for f in DIGEST_FIELDS if f in data]
        if not present:
            problems.append("'blake3' (64 lowercase hex digits; 'sha256' in older dataInfos)")
        for f in present:
            if not isinstance(data[f], str) or not _HEX64.match(data[f]):
                problems.append(f"{f!r} (64 lowercase hex digits)")
        if problems:
            raise DataInfoError(f"local dataInfo is missing or has a bad {', '.join(problems)}: {dict(data)!r}")
        return dict(data)

    @staticmethod
    def _digest(data: Mapping[str, Any]) -> tuple[str, str]:
        """``(algorithm, hex)`` a checked dataInfo's data records: blake3, or sha256 in an older one."""
        algorithm = next(f for f in DIGEST_FIELDS if f in data)
        return algorithm, str(data[algorithm])

    def _data_info(self, name: str, size: int, digest: str, mtime: float) -> DataInfo:
        return DataInfo(self.id, {"filename": name, "size": size, LOCAL_HASH: digest, "mtime": mtime})

    def _open_existing(self, name: str) -> tuple[Path, os.stat_result]:
        path = self.path_for(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFoundError(self.id, f"no such file under {self.root}", name) from None
        except OSError as exc:
            raise StorageError(self.id, f"cannot stat: {exc.strerror}", name) from None
        if not path.is_file():
            raise StorageError(self.id, "is a directory, not a file", name)
        return path, st

    # ------------------------------------------------------------------------------------ primitives
    def put_file_stream(
        self, name: str, readable: Readable, progress: ProgressCallback | None = None, size: int | None = None
    ) -> DataInfo:
        """Stream into a temp file beside the target, hashing as it goes, then rename it into place.

        If ``size`` is given and the stream delivers a different number of bytes, nothing is stored.
        """
        canonical = self.normalize_name(name)
        path = self.path_for(canonical)
        src_fd = regular_fd(readable)
        if src_fd is not None and not callable(getattr(readable, "tell", None)):
            src_fd = None  # where it stands is unknown: read it through read()
        try:
            with atomic_write(path) as dst:
                count, digest = self._write_hashed(readable, src_fd, dst, size, progress, name)
                # mtime of the data we wrote; the rename that follows does not change it.
                mtime = os.fstat(dst.fileno()).st_mtime
        except IsADirectoryError:
            raise StorageError(self.id, "a directory of that name exists", name) from None
        except (NotADirectoryError, FileExistsError):
            raise StorageError(self.id, "a parent of this name is a file, not a directory", name) from None
        except PermissionError as exc:
            raise StorageError(self.id, f"cannot write: {exc.strerror}", name) from None
        log.debug("local: stored %s (%d bytes) under %s", canonical, count, self.root)
        return self._data_info(canonical, count, digest, mtime)

    def _write_hashed(
        self,
        readable: Readable,
        src_fd: int | None,
        dst: BinaryIO,
        size: int | None,
        progress: ProgressCallback | None,
        name: str,
    ) -> tuple[int, str]:
        """Write ``readable`` into the temp file ``dst`` and fsync it; ``(bytes, hash)`` of what was written."""
        if src_fd is None:
            reader = HashingReader(cast(BinaryIO, readable), (LOCAL_HASH,))
            count = copy_stream(reader, dst, total=size, progress=progress)
            self._check_count(count, size, name)
            dst.flush()
            os.fsync(dst.fileno())  # while the hash thread finishes; atomic_write's fsync finds nothing left
            return count, reader.hexdigest(LOCAL_HASH)
        # A file: copied in the kernel, and the copy hashed as it lands (one read of the source's pages).
        hasher = WrittenFileHasher(dst.fileno(), (LOCAL_HASH,))
        start = cast(BinaryIO, readable).tell()
        try:
            count = copy_fd(src_fd, dst.fileno(), src_offset=start, total=size, progress=progress,
                            written=hasher.advance)  # fmt: skip
            cast(BinaryIO, readable).seek(start + count)
            self._check_count(count, size, name)
            os.fsync(dst.fileno())  # while the hash thread finishes; atomic_write's fsync finds nothing left
        except BaseException:
            hasher.abandon()  # while dst is still open
            raise
        return count, hasher.hexdigest(LOCAL_HASH)

    def _check_count(self, count: int, size: int | None, name: str) -> None:
        if size is not None and count != size:
            raise IntegrityError(self.id, f"upload delivered {count} bytes, expected {size}; nothing stored", name)

    #: get_file_stream checks the recorded hash (what :meth:`info` gives as the digest) at end of file.
    verifies_digest = True

    def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
        """A reader that checks the recorded size now and the recorded hash when read to the end."""
        data = self._data(data_info)
        name = data["filename"]
        path, _ = self._open_existing(name)
        f = open(path, "rb")  # noqa: SIM115 - handed to the caller, who closes it
        size = os.fstat(f.fileno()).st_size  # of the file we actually opened, not of a path that may change
        if size != data["size"]:
            when = changed_when(os.fstat(f.fileno()).st_mtime, data.get("mtime"))
            f.close()
            raise IntegrityError(
                self.id, f"file is {size} bytes but the dataInfo records {data['size']}; it changed{when}", name
            )
        return cast(BinaryIO, _VerifyingFile(f, self.id, name, data["size"], self._digest(data)))

    def stat(self, name: str) -> DataInfo:
        """The dataInfo of the file at ``name``; hashes the file (one streaming read) to fill ``blake3``."""
        canonical = self.normalize_name(name)
        path, st = self._open_existing(canonical)
        return self._data_info(canonical, st.st_size, file_digest(path, LOCAL_HASH), st.st_mtime)

    def delete_file(self, data_info: DataInfo) -> None:
        """Remove the file (:class:`NotFoundError` if it is gone) and any directories it leaves empty."""
        name = self._data(data_info)["filename"]
        path, _ = self._open_existing(name)
        path.unlink()
        self._prune_empty_parents(path.parent)

    def delete_dir(self, prefix: str) -> None:
        """Remove everything under ``prefix/``; a prefix that does not exist is already deleted."""
        path = self.path_for(prefix)
        if path.is_symlink() or path.is_file():
            raise StorageError(self.id, "is a file, not a directory; use delete_file", prefix)
        if not path.exists():
            return
        shutil.rmtree(path)  # rmtree never follows symlinks inside the tree
        self._prune_empty_parents(path.parent)

    def info(self, data_info: DataInfo) -> ObjectInfo:
        """Content-addressed by the recorded hash, after checking the file still has the recorded size.

        Cache key ``local/<h[:2]>/<h[2:]>``: a rewritten file is a new cache entry; digest ``("blake3", h)``
        (``("sha256", h)`` for an older dataInfo); metadata ``{size, blake3 (or sha256), mtime}``.
        """
        data = self._data(data_info)
        _, st = self._open_existing(data["filename"])
        if st.st_size != data["size"]:
            when = changed_when(st.st_mtime, data.get("mtime"))
            raise IntegrityError(
                self.id,
                f"file is {st.st_size} bytes but the dataInfo records {data['size']}; it changed{when}",
                data["filename"],
            )
        algorithm, digest = self._digest(data)
        metadata = {algorithm: digest, "mtime": data.get("mtime", st.st_mtime)}
        return ObjectInfo(data["size"], (algorithm, digest), digest, metadata)

    def get_download_url(self, data_info: DataInfo) -> str | None:
        """Always ``None``: no server serves the directory (see the module docstring)."""
        self._data(data_info)
        return None

    # ------------------------------------------------------------------------------------ helpers
    def _prune_empty_parents(self, directory: Path) -> None:
        """Remove now-empty directories up to (not including) the root, so deleted trees leave no husks."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty (or raced with a writer): stop
                return
            directory = directory.parent


class _VerifyingFile(io.RawIOBase):
    """Reader over a local file that hashes what passes and checks size and hash at end of file.

    The hash runs in a :class:`BackgroundHasher` beside the reads (and the caller's writes): ``read``
    hands the same immutable ``bytes`` to the caller and to the hasher, so a verified copy costs one pass.
    """

    def __init__(self, f: BinaryIO, backend: str, name: str, size: int, digest: tuple[str, str]) -> None:
        super().__init__()
        self._f = f
        self._backend = backend
        self._name = name
        self._size = size
        self._algorithm, self._expected = digest
        self._hasher = BackgroundHasher((self._algorithm,))
        self._readback: WrittenFileHasher | None = None  # the hasher of a kernel copy (copy_into)
        self._done = 0
        self._verified = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        data = self._f.read(size)
        if data:
            self._done += len(data)
            if self._done > self._size:
                raise IntegrityError(self._backend, f"file grew past the recorded {self._size} bytes", self._name)
            self._hasher.update(data)
        elif size and not self._verified:
            self._verify()
        return data

    def copy_into(self, dst_fd: int, *, total: int | None = None, progress: ProgressCallback | None = None) -> int:
        """Copy the (unread) file into the regular file ``dst_fd`` in the kernel, checking size and hash.

        :func:`~deepforge_adapters.streams.copy_stream` calls this instead of ``read``: the bytes never enter
        Python, and what is hashed (in a thread) is what landed in ``dst_fd``, read back from the page cache.
        """
        if self._done or self._verified:
            raise ValueError("copy_into() after read(): the kernel copy starts at the beginning of the file")
        start = os.lseek(dst_fd, 0, os.SEEK_CUR)
        hasher_reads_dst = fcntl.fcntl(dst_fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
        if hasher_reads_dst:
            hasher = WrittenFileHasher(dst_fd, (self._algorithm,), start=start)
            written = hasher.advance
        else:  # a write-only destination (a shell redirect) cannot be read back: hash the source's pages
            hasher = WrittenFileHasher(self._f.fileno(), (self._algorithm,))

            def written(end: int) -> None:
                hasher.advance(end - start)

        self._readback = hasher  # what _verify reads the digest from
        try:
            self._done = copy_fd(self._f.fileno(), dst_fd, limit=self._size + 1, total=total, progress=progress,
                                 written=written)  # fmt: skip
            if self._done > self._size:
                raise IntegrityError(self._backend, f"file grew past the recorded {self._size} bytes", self._name)
            if hasher_reads_dst:
                # A read-write destination is a temp file of ours (atomic_write, the worker cache), fsynced
                # before its rename anyway: flush it to disk now, while the hash thread catches up.
                os.fsync(dst_fd)
        except BaseException:
            hasher.abandon()
            raise
        self._verify()
        return self._done

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(CHUNK_SIZE):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def _verify(self) -> None:
        if self._done != self._size:
            raise IntegrityError(
                self._backend, f"read {self._done} bytes but the dataInfo records {self._size}", self._name
            )
        digest = (self._readback or self._hasher).hexdigest(self._algorithm)
        if digest != self._expected:
            raise IntegrityError(
                self._backend,
                f"{self._algorithm} is {digest} but the dataInfo records {self._expected}; it changed",
                self._name,
            )
        self._verified = True

    def close(self) -> None:
        self._hasher.close()
        if self._readback is not None:
            self._readback.abandon()
        with contextlib.suppress(Exception):
            self._f.close()
        super().close()
