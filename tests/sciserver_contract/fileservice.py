"""FileService routes (sciserver-api.md section 3), mounted at ``/fileservice/api``.

Quirks kept on purpose: upload onto an existing file is a 500 "File already exists." unless ``quiet=true``;
download of a missing file (or of a directory) is 200 with an EMPTY body and no Content-Length; not-found and
permission failures are 500 with ``{"status":"error","error":...}``, never 404/403; only a missing or invalid
token is a 401 (Spring's default body); ``level=2`` listings always carry ``files``/``folders`` while tree
listings omit empty ones; deleting a volume root through ``api/data`` is a 200 no-op.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from .errors import BadQuery, ServiceError, query_bool, service_error, spring_error
from .state import FILE_SERVICE_ID, FILE_SERVICE_NAME, ROOT_VOLUMES, State, UserVolume

bp = Blueprint("fileservice", __name__)
CHUNK = 1024 * 1024
UNBOUNDED_LEVEL = 32767  # Short.MAX_VALUE


def state() -> State:
    return current_app.config["STATE"]


@bp.before_request
def authenticate() -> Any:
    if request.endpoint == "fileservice.ping":
        return None
    token = request.headers.get("X-Auth-Token") or request.cookies.get("portalCookie")
    user = state().user_for_token(token)
    state().log_request(request.method, request.path, request.query_string.decode(), user.name if user else None)
    if user is None:
        return spring_error(401, "Unauthorized", "Full authentication is required to access this resource")
    g.user = user.name
    return None


@bp.errorhandler(ServiceError)
def on_service_error(exc: ServiceError) -> Any:
    return service_error(exc)


@bp.errorhandler(BadQuery)
def on_bad_query(exc: BadQuery) -> Any:
    return spring_error(400, "Bad Request", str(exc))


# ------------------------------------------------------------------------------------------ paths
@dataclass
class Target:
    """A resolved ``TOP/...`` path: which volume, the relative segments, and where it lives on disk."""

    display: str  # "<root>/<owner>/<uvol>/<rel>" or "<dataVol>/<rel>", as the server prints it
    volume_root: Path
    rel: list[str]
    actions: list[str]
    volume_name: str  # the user-volume (or data-volume) name
    volume: UserVolume | None

    @property
    def path(self) -> Path:
        return self.volume_root.joinpath(*self.rel) if self.rel else self.volume_root

    def require(self, action: str) -> None:
        if action not in self.actions:
            raise ServiceError("Missing required permissions on volume")


def resolve(raw: str) -> Target:
    """Parse a ``TOP/...`` path the way the FileService does (repeated slashes collapse)."""
    segments = [s for s in raw.split("/") if s]
    if not segments:
        raise ServiceError("Path variable 'ownerName' and 'userVolume' were not provided")
    st = state()
    if segments[0] in ROOT_VOLUMES:
        if len(segments) == 1:
            raise ServiceError("Path variable 'ownerName' and 'userVolume' were not provided")
        if len(segments) == 2:
            raise ServiceError("Path variable 'userVolume' was not provided")
        root, owner, name, *rel = segments
        volume = st.find_volume(root, owner, name)
        actions = st.allowed_actions(volume, g.user) if volume else []
        if volume is None or not actions:
            raise ServiceError("Volume does not exist")
        _check_rel(rel)
        display = "/".join([root, owner, name, *rel])
        return Target(display, st.volume_dir(volume), rel, actions, name, volume)
    data = st.data_volumes.get(segments[0]) or next(
        (d for d in st.data_volumes.values() if d["displayName"] == segments[0]), None
    )
    if data is None:
        raise ServiceError("Volume does not exist")
    rel = segments[1:]
    _check_rel(rel)
    return Target("/".join([segments[0], *rel]), data["path"], rel, ["read"], data["name"], None)


def _check_rel(rel: list[str]) -> None:
    if any(part in ("..", ".") for part in rel):
        raise ServiceError("Attempted to access a path outside of the requested volume")


def java_time(ns: int) -> str:
    """``FileTime.toString()``: ISO-8601 UTC, fraction digits without trailing zeros (possibly none)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{frac:09d}".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + "Z"


def etag(path: Path) -> str:
    return f"W/{path.stat().st_mtime_ns // 1_000_000}"


def java_glob(pattern: str) -> re.Pattern[str]:
    """Java ``PathMatcher("glob:...")``: ``**`` crosses directories, ``*`` and ``?`` do not, ``{a,b}``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            end = pattern.find("}", i)
            if end < 0:
                out.append(re.escape(c))
            else:
                out.append("(?:" + "|".join(re.escape(p) for p in pattern[i + 1 : end].split(",")) + ")")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


# ------------------------------------------------------------------------------------------ routes
@bp.get("/ping")
def ping() -> Any:
    return Response("Service is alive", mimetype="text/plain")


@bp.get("/volumes")
@bp.get("/volumes/")
def volumes() -> Any:
    st = state()
    base = st.base_url + "fileservice/"
    roots = []
    for index, root in enumerate(ROOT_VOLUMES, start=1):
        user_volumes = [
            {
                "id": v.id,
                "resourceUUID": v.resource_uuid,
                "name": v.name,
                "description": v.description,
                "relativePath": f"{st.users[v.owner].keystone_id}/{v.dir_name}/",
                "owner": v.owner,
                "allowedActions": st.allowed_actions(v, g.user),
                "sharedWith": v.shared_with,
            }
            for v in st.visible_volumes(g.user)
            if v.root == root
        ]
        roots.append(
            {
                "id": index,
                "resourceUUID": f"00000000-0000-0000-0000-00000000000{index}",
                "name": root,
                "description": "",
                "pathOnFileSystem": f"/srv/{root}/",
                "containsSharedVolumes": True,
                "allowedActions": ["create", "grant"],
                "userVolumes": user_volumes,
            }
        )
    data_volumes = [
        {k: v for k, v in d.items() if k != "path"} | {"allowedActions": ["read"], "sharedWith": [], "url": ""}
        for d in st.data_volumes.values()
    ]
    return jsonify(
        {
            "identifier": FILE_SERVICE_ID,
            "name": FILE_SERVICE_NAME,
            "description": "",
            "apiEndpoint": base,
            "rootVolumes": roots,
            "dataVolumes": data_volumes,
        }
    )


@bp.put("/file/<path:raw>")
def upload(raw: str) -> Any:
    target = resolve(raw)
    target.require("write")
    quiet = query_bool("quiet")
    dest = target.path
    if not target.rel or dest.is_dir():
        raise ServiceError(f"Error when creating '{target.display}'.  Is a directory.")
    if dest.exists() and not quiet:
        raise ServiceError(f"Error when creating '{target.display}'.  File already exists.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.upload-", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            stream = request.stream
            while chunk := stream.read(CHUNK):
                out.write(chunk)
        expected = request.content_length
        if expected is not None and os.path.getsize(tmp) != expected:
            raise OSError(f"request body ended after {os.path.getsize(tmp)} of {expected} bytes")
        os.replace(tmp, dest)
    except OSError as exc:
        # The real server deletes the partial file, then answers 500.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise ServiceError(f"Error when creating '{target.display}'.  {exc}") from None
    response = Response(b"", status=200)
    response.headers["Etag"] = etag(dest)
    return response


@bp.get("/file/<path:raw>")
def download(raw: str) -> Any:
    target = resolve(raw)
    target.require("read")
    path = target.path
    if not path.is_file():
        if state().settings.missing_download == "error":
            raise ServiceError(f"Error when reading '{target.display}'. File does not exist.")
        # The documented quirk: nothing written, 200, octet-stream, no Content-Length.
        return Response(iter(()), status=200, mimetype="application/octet-stream")

    def body() -> Iterator[bytes]:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    response = Response(body(), status=200, mimetype=_content_type(path))
    response.headers["Content-Length"] = str(path.stat().st_size)
    response.headers["Etag"] = etag(path)
    if not query_bool("inline"):
        response.headers["Content-disposition"] = f'attachment; filename="{path.name}"'
    return response


def _content_type(path: Path) -> str:
    return "text/plain" if path.suffix in (".txt", ".json", ".py", ".sh", ".md") else "application/octet-stream"


@bp.get("/jsontree/<path:raw>")
def jsontree(raw: str) -> Any:
    target = resolve(raw)
    target.require("read")
    level_raw = request.args.get("level")
    if level_raw in (None, ""):
        level = UNBOUNDED_LEVEL
    else:
        try:
            level = int(level_raw)
        except ValueError:
            raise BadQuery(
                f"Failed to convert value of type 'java.lang.String' to required type 'short'; {level_raw!r}"
            ) from None
        if level < 1:
            raise ServiceError("Parameter 'level' must be an integer greater than 0.")
    glob_text = request.args.get("options", "")
    matcher = java_glob(glob_text) if glob_text else None
    path = target.path
    if not path.exists():
        raise ServiceError(f"Error when listing contents of '{target.display}'. Path does not exist.")
    if not path.is_dir():
        raise ServiceError(f"java.nio.file.NotDirectoryException: {path}")
    query_path = target.display + ("/" if not target.rel and target.volume is not None else "")
    if level == 2:
        root = _flat_listing(path, matcher)
    else:
        root = _tree(path, level - 1, matcher)
        if not target.rel:
            root["name"] = target.volume_name
    return jsonify({"root": root, "queryPath": query_path})


def _node(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "lastModified": java_time(st.st_mtime_ns), "creationTime": java_time(st.st_mtime_ns)}


def _file_node(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "name": path.name,
        "size": st.st_size,
        "lastModified": java_time(st.st_mtime_ns),
        "creationTime": java_time(st.st_mtime_ns),
    }


def _visible(entry: Path) -> bool:
    """In-progress upload temp files are not part of the listing."""
    return not (entry.name.startswith(".") and ".upload-" in entry.name)


def _flat_listing(path: Path, matcher: re.Pattern[str] | None) -> dict[str, Any]:
    """``level == 2``: the immediate children; ``files``/``folders`` always present (unless legacy)."""
    entries = sorted(e for e in path.iterdir() if _visible(e))
    if matcher is not None:
        entries = [e for e in entries if matcher.match(str(e))]
    root = _node(path)
    folders = [_node(e) for e in entries if e.is_dir()]
    files = [_file_node(e) for e in entries if e.is_file()]
    if state().settings.legacy_jsontree:
        root.update({k: v for k, v in (("folders", folders), ("files", files)) if v})
    else:
        root.update(folders=folders, files=files)
    return root


def _tree(path: Path, depth: int, matcher: re.Pattern[str] | None) -> dict[str, Any]:
    """Tree mode: nodes down to ``depth`` below ``path``; empty ``files``/``folders`` keys are omitted."""
    node = _node(path)
    if depth <= 0:
        return node
    entries = sorted(e for e in path.iterdir() if _visible(e))
    folders = [_tree(e, depth - 1, matcher) for e in entries if e.is_dir()]
    files = [_file_node(e) for e in entries if e.is_file() and (matcher is None or matcher.match(str(e)))]
    if folders:
        node["folders"] = folders
    if files:
        node["files"] = files
    return node


@bp.put("/folder/<path:raw>")
def make_folder(raw: str) -> Any:
    target = resolve(raw)
    target.require("write")
    if target.path.exists():
        if not query_bool("quiet"):
            raise ServiceError(f"Error when creating directory '{target.display}'. Directory already exists.")
        if not target.path.is_dir():
            raise ServiceError(f"Error when creating directory '{target.display}'. A file exists at that path.")
    target.path.mkdir(parents=True, exist_ok=True)
    return Response(b"", status=200)


@bp.delete("/data/<path:raw>")
def delete(raw: str) -> Any:
    target = resolve(raw)
    target.require("write")
    if not target.rel:
        return Response(b"", status=200)  # deleting the volume root is a no-op
    path = target.path
    if not path.exists() and not path.is_symlink():
        if query_bool("quiet"):
            return Response(b"", status=200)
        raise ServiceError(f"Error when deleting '{target.display}'. It does not exist.")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
    return Response(b"", status=200)


@bp.put("/data/<path:raw>")
def move_or_copy(raw: str) -> Any:
    source = resolve(raw)
    replace = query_bool("replaceExisting")
    do_copy = query_bool("doCopy")
    source.require("read")
    if not do_copy:
        source.require("write")
    body = request.get_json(silent=True) or {}
    dest_path = body.get("destinationPath")
    if not dest_path:
        raise ServiceError("Parameter 'destinationPath' was not provided")
    service = body.get("destinationFileService")
    if service not in (None, "", FILE_SERVICE_NAME):
        raise ServiceError("Copying or moving data to another FileService is not currently supported")
    data_volume = body.get("destinationDataVolume")
    root = body.get("destinationRootVolume")
    if bool(data_volume) == bool(root):
        raise ServiceError("Exactly one of 'destinationDataVolume' and 'destinationRootVolume' must be provided")
    if root:
        owner, uvol = body.get("destinationOwnerName"), body.get("destinationUserVolume")
        if not owner or not uvol:
            raise ServiceError("Path variable 'userVolume' was not provided")
        dest = resolve(f"{root}/{owner}/{uvol}/{dest_path}")
    else:
        dest = resolve(f"{data_volume}/{dest_path}")
    dest.require("write")
    if not source.path.exists():
        raise ServiceError("Source file or directory does not exist.")
    if dest.path.exists():
        if dest.path.is_dir():
            raise ServiceError("Destination directory already exists.")
        if not replace:
            raise ServiceError("Destination file already exists")
    dest.path.parent.mkdir(parents=True, exist_ok=True)
    if do_copy:
        if source.path.is_dir():
            shutil.copytree(source.path, dest.path)
        else:
            shutil.copyfile(source.path, dest.path)
    else:
        os.replace(source.path, dest.path)
    return Response(b"", status=200)


@bp.put("/volume/<root>/<owner>/<name>")
def create_volume(root: str, owner: str, name: str) -> Any:
    if root not in ROOT_VOLUMES:
        raise ServiceError("Root volume does not exist")
    if owner != g.user:
        raise ServiceError("Not allowed to create user volume on behalf of another user.")
    if state().find_volume(root, owner, name) is not None:
        if query_bool("quiet"):
            return Response(b"", status=200)
        raise ServiceError(
            f"User volume '{name}' already exists in root volume '{root}' within fileService '{FILE_SERVICE_NAME}'"
        )
    body = request.get_json(silent=True) or {}
    state().create_volume(root, owner, name, description=str(body.get("description", "")))
    return Response(b"", status=200)


def volume_with(root: str, owner: str, name: str, action: str) -> UserVolume:
    """The caller's view of a user volume: invisible ones do not exist; visible ones need ``action``."""
    volume = state().find_volume(root, owner, name)
    if volume is None or not state().allowed_actions(volume, g.user):
        raise ServiceError("Volume does not exist")
    if action not in state().allowed_actions(volume, g.user):
        raise ServiceError("Missing required permissions on volume")
    return volume


@bp.delete("/volume/<root>/<owner>/<name>")
def delete_volume(root: str, owner: str, name: str) -> Any:
    st = state()
    volume = volume_with(root, owner, name, "delete")
    if owner != g.user:
        raise ServiceError("Missing required permissions on volume")
    with st.lock:
        shutil.rmtree(st.volume_dir(volume), ignore_errors=True)
        del st.volumes[volume.id]
    return Response(b"", status=200)


@bp.patch("/share/<root>/<owner>/<name>")
def share_volume(root: str, owner: str, name: str) -> Any:
    st = state()
    volume = volume_with(root, owner, name, "grant")
    entries = request.get_json(silent=True)
    if not isinstance(entries, list):
        raise ServiceError("Could not parse the sharing request body")
    with st.lock:
        for index, entry in enumerate(entries):
            volume.shared_with = [s for s in volume.shared_with if s.get("name") != entry.get("name")]
            volume.shared_with.append(
                {
                    "id": 12 + index,
                    "name": entry.get("name"),
                    "type": entry.get("type", "USER"),
                    "allowedActions": list(entry.get("allowedActions", [])),
                }
            )
    return Response(b"", status=200)
