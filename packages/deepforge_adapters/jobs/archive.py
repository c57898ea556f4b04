"""Bundle archives: safe extraction of an untrusted zip, deterministic zipping, and the bundle hash.

A bundle zip comes from whoever submitted the job, so :func:`safe_extract` treats it as hostile: no member may
escape the destination (absolute names, ``..``, symlinks, special files) and no more than ``max_bytes`` are
ever written, whatever the zip's headers claim.  :func:`zip_bundle` makes the zip a bundle's hash is taken of:
sorted names, fixed timestamps and modes, so the hash depends on the content only.  Used by the bundle
builder and reader (:mod:`.bundle`), the compute backends and the ``deepforge-worker``; depends on
:mod:`deepforge_adapters.errors` and :mod:`deepforge_adapters.hashing` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ..errors import BundleError, ComputeError
from ..hashing import CHUNK_SIZE, file_digest

#: Default cap on the uncompressed size of a bundle zip (bundles hold code, not data).
DEFAULT_MAX_BYTES = 512 * 1024 * 1024

# Fixed zip entry timestamp: a bundle's hash depends on its content only.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name:
        return "contains a NUL byte"
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "contains '..'"
    file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip was made without Unix modes
    if file_type == stat.S_IFLNK:
        return "is a symbolic link"
    if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file or directory"
    return None


def safe_extract(zip_path: str | os.PathLike[str], dest: str | os.PathLike[str], max_bytes: int) -> Path:
    """Extract ``zip_path`` into ``dest``, refusing anything that could escape it or exhaust the disk.

    Rejects (with :class:`BundleError` naming the member and the reason) absolute names, ``..`` parts,
    symlinks and special files, and stops once more than ``max_bytes`` were written, whatever the headers
    claim (a zip bomb lies about sizes).  On error nothing extracted so far is left behind in ``dest``.
    """
    zip_path = Path(zip_path)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{zip_path}: cannot open zip: {exc}") from None
    written: list[Path] = []
    try:
        with zf:
            infos = zf.infolist()
            for info in infos:
                problem = _member_problem(info)
                if problem:
                    raise BundleError(f"{zip_path}: member {info.filename!r} {problem}; refusing to extract")
            declared = sum(i.file_size for i in infos)
            if declared > max_bytes:
                raise BundleError(f"{zip_path}: uncompressed size {declared} bytes exceeds the limit of {max_bytes}")
            total = 0
            for info in infos:
                target = root.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
                if not target.resolve().is_relative_to(root):
                    raise BundleError(f"{zip_path}: member {info.filename!r} resolves outside {dest}")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as out:
                    written.append(target)
                    while chunk := src.read(CHUNK_SIZE):
                        total += len(chunk)
                        if total > max_bytes:
                            raise BundleError(
                                f"{zip_path}: member {info.filename!r} inflates past the limit of {max_bytes} bytes"
                            )
                        out.write(chunk)
    except BundleError:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise BundleError(f"{zip_path}: cannot extract: {exc}") from None
    return dest


def bundle_files(directory: Path) -> list[tuple[str, Path]]:
    """``(posix relative name, path)`` of every regular file, sorted; symlinks are refused."""
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            if os.path.islink(os.path.join(dirpath, name)):
                raise BundleError(f"{os.path.join(dirpath, name)}: bundles may not contain symbolic links")
        for name in filenames:
            path = Path(dirpath) / name
            out.append((path.relative_to(directory).as_posix(), path))
    return sorted(out)


def zip_bundle(directory: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None) -> Path:
    """Zip a bundle directory deterministically (sorted names, fixed timestamps and modes)."""
    directory = Path(directory)
    zip_path = Path(dest) if dest is not None else directory.with_suffix(".zip")
    tmp = zip_path.with_name(f".{zip_path.name}.tmp-{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel, path in bundle_files(directory):
                info = zipfile.ZipInfo(rel, date_time=_ZIP_EPOCH)
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as src, zf.open(info, "w") as out:
                    shutil.copyfileobj(src, out, CHUNK_SIZE)
        os.replace(tmp, zip_path)
    finally:
        tmp.unlink(missing_ok=True)
    return zip_path


def bundle_hash(path: str | os.PathLike[str]) -> str:
    """sha1 of a bundle: of the zip file's bytes, or of a directory's sorted (name, content sha1) list."""
    path = Path(path)
    if path.is_file():
        return file_digest(path, "sha1")
    h = hashlib.sha1()
    for rel, file in bundle_files(path):
        h.update(f"{rel}\0{file_digest(file, 'sha1')}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def staged_bundle(backend: str, bundle: Path) -> Iterator[Path]:
    """The bundle as a directory: itself, or a zip safely extracted into a temp dir removed afterwards (for the
    compute backends that ship a bundle's files elsewhere); errors are ``backend``'s :class:`ComputeError`."""
    if bundle.is_dir():
        yield bundle
        return
    if not bundle.is_file():
        raise ComputeError(backend, f"cannot start bundle: {bundle} does not exist")
    with tempfile.TemporaryDirectory(prefix="deepforge-bundle-") as tmp:
        try:
            safe_extract(bundle, tmp, DEFAULT_MAX_BYTES)
        except BundleError as exc:
            raise ComputeError(backend, f"cannot start bundle: {exc}") from None
        yield Path(tmp)
