"""Committing to a WebGME branch from a long-running Python plugin, and reading the pipeline metamodel.

The bindings give a plugin ``util.save`` (a ``makeCommit`` on one parent) and nothing like DeepForge's
TwoPhaseCommit.  A pipeline run commits for minutes while users keep editing, so every change goes through
:meth:`ModelSession.change`: reload the branch head if it moved, apply the edit *by node path*, commit; if
the commit comes back FORKED (someone committed in between) do it again on the new head.  Only when the
branch keeps moving under us do we continue on a fork branch, as DeepForge does, and tell the user.
Reading the head before every change is also how the plugin sees a cancel request written into the model.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, TypeVar

from .branch_lock import BranchLock

log = logging.getLogger(__name__)

T = TypeVar("T")
Node = dict[str, Any]


class CommitStatus(StrEnum):
    """The ``status`` of a commit's result (webgme-engine's ``storage/constants.js``)."""

    SYNCED = "SYNCED"  # inserted and the branch moved onto it
    FORKED = "FORKED"  # inserted, but the branch did not move (someone committed in between)
    CANCELED = "CANCELED"  # never inserted
    MERGED = "MERGED"  # forked at first, then merged into the branch


#: Meta nodes that mark the pipeline language (DeepForge's ``pipeline`` library, or a project of its own).
LANGUAGE_MARKERS = ("Pipeline", "Operation", "Inputs", "Outputs", "Data", "Transporter", "Execution", "Job")
#: The name DeepForge attaches its library under (its UI runs plugins with ``namespace: "pipeline"``).
LANGUAGE_LIBRARY = "pipeline"


def language_meta(meta: dict[str, Node], namespace: str = "") -> dict[str, Node]:
    """``meta`` (fully qualified names, as ``util.META(root, "")`` gives them) plus the pipeline language's
    nodes under their short names.

    The language is found whatever the namespace the plugin runs under: webgme-engine's REST plugin route
    drops ``namespace`` (names are then ``pipeline.Pipeline``), DeepForge's UI sends ``"pipeline"``, and a
    project may define the language at its root.  The namespace the plugin runs under wins, then the project's
    own nodes, then the ``pipeline`` library, then any other library that holds the language.
    """

    def qualified(ns: str, name: str) -> str:
        return f"{ns}.{name}" if ns else name

    namespaces = sorted({name.rpartition(".")[0] for name in meta})
    for ns in dict.fromkeys([namespace, "", LANGUAGE_LIBRARY, *namespaces]):
        if all(qualified(ns, marker) in meta for marker in LANGUAGE_MARKERS):
            prefix = qualified(ns, "")
            short = {n[len(prefix) :]: node for n, node in meta.items() if n.startswith(prefix)}
            return {**meta, **{n: node for n, node in short.items() if "." not in n}}
    raise LookupError(
        f"this project has no pipeline language: no namespace holds the meta nodes {', '.join(LANGUAGE_MARKERS)} "
        f"(namespaces: {', '.join(repr(n) for n in namespaces)})"
    )


#: A node path as the core writes it (``""`` for the root, ``/a/b`` below it): one :meth:`ModelSession.node`
#: can hand to the server as is.
NODE_PATH = re.compile(r"(?:/[^/\s]+)*")
#: A commit that moved the branch: onto its head, or merged into it.
SYNCED_STATUSES = (CommitStatus.SYNCED, CommitStatus.MERGED)
#: How long a change keeps retrying on a moving branch before it continues on a fork.  Five tries in 0.75 s
#: (what we had) lost to a busy fleet: the soak run's 250 jobs on 8 slots put four runs and two cancel
#: requests on forks, where the runner never saw the cancel and the Execution on master stayed running.
FORK_RETRY_SECONDS = 30.0
#: The back-off between tries: doubling from the first, capped, each drawn in [0.5, 1.5) of it so that
#: writers that forked together do not retry together.
FORK_RETRY_FIRST_SLEEP = 0.05
FORK_RETRY_MAX_SLEEP = 2.0


def fork_retry_sleeps(seconds: float = FORK_RETRY_SECONDS) -> Iterator[float]:
    """The sleeps between a forked commit's tries, until ``seconds`` have passed (monotonic clock)."""
    deadline = time.monotonic() + seconds
    sleep = FORK_RETRY_FIRST_SLEEP
    while time.monotonic() < deadline:
        yield sleep * random.uniform(0.5, 1.5)
        sleep = min(FORK_RETRY_MAX_SLEEP, sleep * 2)


class ModelSession:
    """The plugin's view of its branch: the current root, the last commit we know, and node lookup."""

    def __init__(self, plugin: Any) -> None:
        self.plugin = plugin
        self.core = plugin.core
        self.project = plugin.project
        self.util = plugin.util
        self.branch: str | None = plugin.branch_name or None
        self.commit_hash: str = plugin.commit_hash
        self.root: Node = plugin.root_node
        self.commits: list[str] = []
        self._applied: list[tuple[str, Callable[[], object]]] = []
        self._meta: dict[str, Node] | None = None
        #: ``is_a`` answers by (root, meta type path, meta name): a node's type changes only by :meth:`set_base`
        #: (which drops them all; never call ``core.set_base`` directly) or with the root.
        self._types: dict[tuple[Any, str, str], bool] = {}
        #: Each node's meta type (its path; None: it has none), by (root, node path): see :meth:`is_a`.
        self._meta_types: dict[tuple[Any, str], str | None] = {}
        self._lock: BranchLock | None = None

    # ---------------------------------------------------------------------------------------- reading
    @property
    def META(self) -> dict[str, Node]:
        """Meta nodes by name: the pipeline language's by their short names (``Pipeline``), whatever the
        namespace the plugin runs under, plus every meta node by its fully qualified name."""
        if self._meta is None:
            self._meta = language_meta(self.util.META(self.root, ""), self.plugin.namespace or "")
        return self._meta

    def node(self, path: str) -> Node:
        """The node at ``path`` under :attr:`root`: a path this run read from the model.

        webgme-bindings' node handles are ``{"rootId", "nodePath"}``, and the server resolves the path again
        on every call given one (corezmq.js ``getNode``), so the handle is made here: asking for it
        (``load_by_path``) was ~15 of the ~166 model requests a job cost (bench/scale_pipelines.py).  A path
        that may name nothing (one a user gave) goes through :meth:`load`.
        """
        root_id = self.root.get("rootId") if isinstance(self.root, dict) else None
        if isinstance(root_id, str) and NODE_PATH.fullmatch(path):
            return {"rootId": root_id, "nodePath": path}
        return self.core.load_by_path(self.root, path)

    def load(self, path: str) -> Node | None:
        """The node at ``path``, or None if there is none (asks the server)."""
        return self.core.load_by_path(self.root, path)

    def path(self, node: Node) -> str:
        """The node's path.  webgme-bindings' node dicts carry it (``{"rootId", "nodePath"}``,
        corezmq.js ``getNodeDataWrapper``), so asking the server costs a round trip for nothing (390 of
        5,500 requests of a 30-operation run, bench/scale_pipelines.py); anything else is asked."""
        path = node.get("nodePath") if isinstance(node, dict) else None
        return path if isinstance(path, str) else str(self.core.get_path(node))

    def attr(self, node: Node, name: str) -> Any:
        return self.core.get_attribute(node, name)

    def is_a(self, node: Node, meta_name: str) -> bool:
        """Whether ``node`` is a ``meta_name``; answers are remembered (a run asks it of the same nodes again
        and again: 716 of 5,500 requests of a 30-operation run, bench/scale_pipelines.py).

        Asked through the node's meta type (``get_meta_type``, once per node, whatever the names asked): the
        meta types in a node's base chain are its meta type and those in its meta type's chain, so ``node``
        is a ``meta_name`` exactly when its meta type is, and that is asked once per meta type and name."""
        meta = self.META.get(meta_name)
        if meta is None:
            return False
        path = node.get("nodePath") if isinstance(node, dict) else None
        if not isinstance(path, str):
            return bool(self.core.is_type_of(node, meta))
        root = node.get("rootId")
        if (root, path) not in self._meta_types:
            found = self.core.get_meta_type(node)
            self._meta_types[(root, path)] = found.get("nodePath") if isinstance(found, dict) else None
        meta_path = self._meta_types[(root, path)]
        if meta_path is None:
            return False  # no meta node in its chain: it is none of them
        if meta_path == meta.get("nodePath"):
            return True
        key = (root, meta_path, meta_name)
        if key not in self._types:
            self._types[key] = bool(self.core.is_type_of({"rootId": root, "nodePath": meta_path}, meta))
        return self._types[key]

    def set_base(self, node: Node, base: Node) -> None:
        """``core.set_base`` (the one way to change a node's type here: it drops the :meth:`is_a` answers)."""
        self._types.clear()
        self._meta_types.clear()
        self.core.set_base(node, base)

    def children(self, node: Node, meta_name: str | None = None) -> list[Node]:
        kids = self.core.load_children(node)
        return [k for k in kids if meta_name is None or self.is_a(k, meta_name)]

    def child_named(self, node: Node, name: str) -> Node | None:
        for kid in self.core.load_children(node):
            if self.attr(kid, "name") == name:
                return kid
        return None

    def refresh(self) -> bool:
        """Move onto the branch head if someone else committed; True if the root changed.  Edits applied and
        not committed yet (:meth:`apply`) are committed first."""
        self.flush()
        if not self.branch:
            return False
        head = self.project.get_branch_hash(self.branch)
        if not head or head == self.commit_hash:
            return False
        self.commit_hash = head
        self.root = self.core.load_root(self.project.get_root_hash(head))
        self._meta = None
        self._types.clear()
        self._meta_types.clear()
        return True

    def discard(self) -> None:
        """Drop the edits not committed: back to the root of the last commit."""
        self.root = self.core.load_root(self.project.get_root_hash(self.commit_hash))
        self._meta = None
        self._types.clear()
        self._meta_types.clear()

    # ---------------------------------------------------------------------------------------- writing
    def _committing(self) -> contextlib.AbstractContextManager[bool]:
        """Hold this host's commit lock of the branch (:mod:`.branch_lock`) around load-edit-commit."""
        if not self.branch:
            return contextlib.nullcontext(True)
        if self._lock is None or self._lock.branch != self.branch:  # a fork moves the session to a new branch
            project_id = getattr(self.plugin, "project_id", None)
            self._lock = BranchLock(str(project_id() if callable(project_id) else "project"), self.branch)
        return self._lock.held()

    def change(self, message: str, edit: Callable[[], T]) -> T:
        """Apply ``edit`` (which must find its nodes by path through :meth:`node`) and commit it."""
        with self._committing():
            self.refresh()
            result = edit()
            if self._commit(message):
                return result
        for attempt, sleep in enumerate(fork_retry_sleeps(), start=1):
            log.info("commit %r forked (attempt %d); retrying on the new branch head", message, attempt)
            time.sleep(sleep)
            with self._committing():
                self.refresh()
                result = edit()
                if self._commit(message):
                    return result
        self.discard()  # the last try's edit is on the root: apply it once, on the newest head
        self.refresh()
        result = edit()
        self._fork(message)
        return result

    def apply(self, message: str, edit: Callable[[], T]) -> T:
        """Apply ``edit`` to :attr:`root` now (later reads see it) and commit it with the next :meth:`flush`,
        together with every other edit applied since.  :meth:`refresh` and :meth:`change` flush first, so
        no applied edit is lost when the root moves onto the branch head."""
        result = edit()
        self._applied.append((message, edit))
        return result

    @property
    def applied(self) -> list[str]:
        """The messages of the edits applied and not committed yet."""
        return [message for message, _ in self._applied]

    def flush(self, message: str | None = None) -> None:
        """Commit the applied edits as one commit (``message``, default: the single edit's); if the branch
        moved meanwhile, they are applied again on the new head as :meth:`change` does."""
        if not self._applied:
            return
        batch, self._applied = self._applied, []
        message = message or batch[0][0]

        def replay() -> None:
            for _, edit in batch:
                edit()

        with self._committing():
            if self._commit(message):
                return
            log.info("commit %r forked; applying it again on the new branch head", message)
            self.change(message, replay)  # still holding the lock: no other plugin of ours commits first

    def _commit(self, message: str) -> bool:
        outcome = self.util.save(self.root, self.commit_hash, self.branch, message)
        status = outcome.get("status") if self.branch else CommitStatus.SYNCED
        new_hash = outcome.get("hash")
        if status in SYNCED_STATUSES or (not self.branch and new_hash):
            self.commit_hash = new_hash
            self.commits.append(new_hash)
            return True
        return False

    def _fork(self, message: str) -> None:
        """The branch keeps moving: commit on our parent and carry on in a new branch."""
        base = self.branch or "master"
        outcome = self.util.save(self.root, self.commit_hash, None, message)
        self.commit_hash = outcome["hash"]
        existing = set(self.project.get_branches())
        n = 1
        while f"{base}_fork_{n}" in existing:
            n += 1
        self.branch = f"{base}_fork_{n}"
        self.project.create_branch(self.branch, self.commit_hash)
        self.commits.append(self.commit_hash)
        log.warning("branch %s kept changing; continuing on fork %s", base, self.branch)
        self.plugin.send_notification({"message": f"Execution continues on branch {self.branch}", "severity": "warn"})
