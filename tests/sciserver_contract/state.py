"""The contract server's state: users, tokens, volumes on disk, settings, and a request log.

One :class:`State` per server process, guarded by one lock.  Volumes live on disk the way the real
FileService lays them out (``<root>/fs/<rootVolume>/<keystoneUserId>/<dirName>/``; ``dirName`` is the plain
name for the default volumes and a random UUID for user-created ones), so a job the server runs sees the
same bytes through its mapped ``/home/idies/workspace/...`` paths.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT_VOLUMES = ("Storage", "Temporary")
FILE_SERVICE_NAME = "FileServiceJHU"
FILE_SERVICE_ID = "52be8218-d10a-4040-b899-e406616a743e"
ALL_ACTIONS = ("delete", "grant", "read", "write")


@dataclass
class Settings:
    """Knobs a test flips through ``POST /_contract/settings`` to provoke each documented behaviour."""

    token_lifetime: float = 86400.0  # seconds; the real Keystone default is 24 h
    pending_seconds: float = 0.2  # how long a job stays PENDING before a job manager takes it
    step_seconds: float = 0.05  # dwell time in QUEUED, ACCEPTED and FINISHED
    missing_download: str = "empty"  # "empty" (current server: 200 + empty body) or "error" (500)
    legacy_jsontree: bool = False  # 2018-era servers omitted empty "files"/"folders" in level=2 listings
    max_login_attempts: int = 5
    job_timeout: int = 172800  # seconds; set on the job when a job manager accepts it

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if not hasattr(self, key):
                raise KeyError(key)
            setattr(self, key, type(getattr(self, key))(value))


@dataclass
class UserVolume:
    id: int
    root: str
    owner: str
    name: str
    dir_name: str
    resource_uuid: str
    description: str = ""
    shared_with: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class User:
    name: str
    password: str
    keystone_id: str
    email: str
    failed_logins: int = 0


@dataclass
class Token:
    value: str
    username: str
    issued_at: float
    expires_at: float


class State:
    """Everything the server knows; every handler takes ``lock`` around reads and writes of the dicts."""

    def __init__(self, root: Path, base_url: str = "") -> None:
        self.root = root
        self.base_url = base_url
        self.lock = threading.RLock()
        self.settings = Settings()
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}
        self.volumes: dict[int, UserVolume] = {}
        self.data_volumes: dict[str, dict[str, Any]] = {}
        self.request_log: list[dict[str, Any]] = []
        self._next_volume_id = 50241
        (root / "fs").mkdir(parents=True, exist_ok=True)
        self.add_data_volume("SDSS_DAS", "SDSS DAS")

    # ------------------------------------------------------------------------------------------ users
    def add_user(self, name: str, password: str) -> User:
        with self.lock:
            if name in self.users:
                raise ValueError(f"user {name!r} exists")
            user = User(name, password, uuid.uuid4().hex, f"{name}@example.org")
            self.users[name] = user
            self.create_volume("Storage", name, "persistent", default=True, description="Default user volume")
            self.create_volume("Temporary", name, "scratch", default=True, description="Default user volume")
            return user

    def issue_token(self, username: str) -> Token:
        with self.lock:
            now = time.time()
            token = Token(secrets.token_urlsafe(96), username, now, now + self.settings.token_lifetime)
            self.tokens[token.value] = token
            return token

    def user_for_token(self, value: str | None) -> User | None:
        """The user a valid, unexpired token belongs to."""
        if not value:
            return None
        with self.lock:
            token = self.tokens.get(value)
            if token is None or token.expires_at <= time.time():
                return None
            return self.users.get(token.username)

    def expire_tokens(self, username: str) -> int:
        with self.lock:
            expired = 0
            for token in self.tokens.values():
                if token.username == username and token.expires_at > time.time():
                    token.expires_at = time.time() - 1
                    expired += 1
            return expired

    # ---------------------------------------------------------------------------------------- volumes
    def add_data_volume(self, name: str, display_name: str) -> None:
        path = self.root / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        self.data_volumes[name] = {
            "id": 7 + len(self.data_volumes),
            "resourceUUID": str(uuid.uuid4()),
            "name": name,
            "displayName": display_name,
            "description": f"{display_name} (read-only data volume)",
            "path": path,
        }

    def create_volume(
        self, root: str, owner: str, name: str, *, default: bool = False, description: str = ""
    ) -> UserVolume:
        with self.lock:
            volume = UserVolume(
                id=self._next_volume_id,
                root=root,
                owner=owner,
                name=name,
                dir_name=name if default else str(uuid.uuid4()),
                resource_uuid=str(uuid.uuid4()),
                description=description,
            )
            self._next_volume_id += 1
            self.volumes[volume.id] = volume
            self.volume_dir(volume).mkdir(parents=True, exist_ok=True)
            return volume

    def find_volume(self, root: str, owner: str, name: str) -> UserVolume | None:
        with self.lock:
            for volume in self.volumes.values():
                if (volume.root, volume.owner, volume.name) == (root, owner, name):
                    return volume
            return None

    def volume_dir(self, volume: UserVolume) -> Path:
        return self.root / "fs" / volume.root / self.users[volume.owner].keystone_id / volume.dir_name

    def allowed_actions(self, volume: UserVolume, username: str) -> list[str]:
        if volume.owner == username:
            return list(ALL_ACTIONS)
        for share in volume.shared_with:
            if share.get("type", "USER") == "USER" and share.get("name") == username:
                return sorted(share.get("allowedActions", []))
        return []

    def visible_volumes(self, username: str) -> list[UserVolume]:
        with self.lock:
            return [v for v in self.volumes.values() if self.allowed_actions(v, username)]

    # ------------------------------------------------------------------------------------ request log
    def log_request(self, method: str, path: str, query: str, username: str | None) -> None:
        with self.lock:
            self.request_log.append(
                {"method": method, "path": path, "query": query, "user": username, "time": time.time()}
            )
