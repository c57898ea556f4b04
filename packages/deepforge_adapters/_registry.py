"""The one place that maps backend ids to classes, for storage and compute alike.

Built-in backends are named as ``"module:Class"`` strings and imported only when first asked for (a user
of the ``local`` backend never imports boto3).  Third-party packages add backends through an entry-point
group (``deepforge.storage`` / ``deepforge.compute``) without touching this repository; a built-in id wins
over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from .errors import UnknownBackendError

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
            cls = getattr(importlib.import_module(module_name), attr)
        else:
            cls = target
        if not (isinstance(cls, type) and issubclass(cls, self._base)):
            raise TypeError(f"{self.kind} backend {backend_id!r} resolves to {cls!r}, not a {self._base.__name__}")
        self._loaded[backend_id] = cls
        return cls
