"""The one place that maps backend ids to classes, for storage and compute alike.

Built-in backends are named as ``"module:Class"`` strings and imported only when first asked for (a user
of the ``local`` backend never imports boto3).  Third-party packages add backends through an entry-point
group (``deepforge.storage`` / ``deepforge.compute``) without touching this repository; a built-in id wins
over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from .errors import MissingDependencyError, UnknownBackendError

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackendRegistry(Generic[T]):
    def __init__(self, kind: str, group: str, builtins: Mapping[str, str], base: type[T]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = dict(builtins)
        self._base = base
        self._loaded: dict[str, type[T]] = {}
        self._registered: dict[str, str | type[T]] = {}

    def register(self, backend_id: str, target: str | type[T]) -> None:
        """Register at run time (tests, embedding applications)."""
        self._registered[backend_id] = target
        self._loaded.pop(backend_id, None)

    def _entry_points(self) -> dict[str, Any]:
        from importlib.metadata import entry_points  # only when asked: it costs every job's start ~0.2 s

        return {ep.name: ep for ep in entry_points(group=self.group)}

    def ids(self) -> list[str]:
        return sorted({*self._builtins, *self._registered, *self._entry_points()})

    def get_class(self, backend_id: str) -> type[T]:
        if backend_id in self._loaded:
            return self._loaded[backend_id]
        target: Any = self._registered.get(backend_id) or self._builtins.get(backend_id)
        if target is None:
            ep = self._entry_points().get(backend_id)
            if ep is None:
                raise UnknownBackendError(self.kind, backend_id, self.ids())
            cls = ep.load()
        elif isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if not exc.name or module_name == exc.name or module_name.startswith(f"{exc.name}."):
                    raise
                package = exc.name.partition(".")[0]
                raise MissingDependencyError(self.kind, backend_id, package, extra_providing(package)) from exc
            cls = getattr(module, attr)
        else:
            cls = target
        if not (isinstance(cls, type) and issubclass(cls, self._base)):
            raise TypeError(f"{self.kind} backend {backend_id!r} resolves to {cls!r}, not a {self._base.__name__}")
        self._loaded[backend_id] = cls
        return cls

    def availability(self) -> tuple[dict[str, type[T]], dict[str, str]]:
        """Try to load every backend: ``(classes that load, {id: why not} for those that do not)``.

        A backend whose optional dependency is missing (or whose module is broken) must not hide the others
        from ``deepforge backends`` or the Execute dialog, so each load failure is reported as data.
        """
        available: dict[str, type[T]] = {}
        unavailable: dict[str, str] = {}
        for backend_id in self.ids():
            try:
                available[backend_id] = self.get_class(backend_id)
            except Exception as exc:
                log.debug("%s backend %r is unavailable", self.kind, backend_id, exc_info=True)
                unavailable[backend_id] = f"{type(exc).__name__}: {exc}"
        return available, unavailable

    def describe(self) -> dict[str, dict[str, Any]]:
        """``{id: {"name": display name, "configStructure": [...]}}`` for every backend that loads."""
        available, unavailable = self.availability()
        for backend_id, reason in unavailable.items():
            log.warning("%s backend %r is unavailable: %s", self.kind, backend_id, reason)
        return {
            backend_id: {"name": getattr(cls, "name", backend_id), "configStructure": _schema_json(cls)}
            for backend_id, cls in available.items()
        }


def _schema_json(cls: type) -> list[dict[str, Any]]:
    schema = getattr(cls, "schema", None)
    return schema.to_config_structure() if schema is not None else []


def extra_providing(package: str, distribution: str = "deepforge-adapters") -> str | None:
    """The extra of ``distribution`` whose requirements name ``package`` (an import name), e.g. ``s3`` for boto3."""
    from importlib.metadata import PackageNotFoundError, requires

    wanted = _normalize(package)
    try:
        requirements = requires(distribution) or []
    except PackageNotFoundError:
        return None
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        extra = re.search(r"""extra\s*==\s*["']([^"']+)["']""", requirement)
        if name and extra and _normalize(name.group(0)) == wanted and extra.group(1) != "dev":
            return extra.group(1)
    return None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
