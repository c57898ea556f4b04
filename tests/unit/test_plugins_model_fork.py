"""ModelSession.change on a branch others keep committing to: it retries for a bounded time, not five tries.

The soak run (issue 15) found four ExecutePipeline runs and two CancelExecution requests continued on
``master_fork_N`` branches: five tries in 0.75 s lost to a busy fleet, and on a fork the runner never saw the
cancel request.  The branch here is a small in-memory stand-in for the bindings' project/util/core (what a
commit against a moving branch answers: FORKED while someone else's commit came first), so the retry policy
is checked exactly; the clock is the test's, so no test sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from deepforge_plugins import model
from deepforge_plugins.model import CommitStatus, ModelSession


class MovingBranch:
    """A branch that another writer commits to before each of our first ``busy`` commits."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.heads = ["c0"]
        self.branches = {"master": "c0"}
        self.saves: list[tuple[str, str | None]] = []

    # project
    def get_branch_hash(self, branch: str) -> str:
        return self.branches[branch]

    def get_root_hash(self, commit: str) -> str:
        return f"root-of-{commit}"

    def get_branches(self) -> dict[str, str]:
        return dict(self.branches)

    def create_branch(self, name: str, commit: str) -> None:
        self.branches[name] = commit

    # util
    def save(self, root: Any, parent: str, branch: str | None, message: str) -> dict[str, str]:
        self.saves.append((parent, branch))
        new = f"c{len(self.saves)}"
        if branch is None:
            return {"hash": new}
        if self.busy > 0:  # someone else's commit landed first
            self.busy -= 1
            self.branches[branch] = f"other{self.busy}"
            return {"status": CommitStatus.FORKED, "hash": new}
        self.branches[branch] = new
        return {"status": CommitStatus.SYNCED, "hash": new}

    # core
    def load_root(self, root_hash: str) -> dict[str, Any]:
        return {"root": root_hash, "edits": 0}


class Plugin:
    def __init__(self, branch: MovingBranch) -> None:
        self.core = self.project = self.util = branch
        self.branch_name = "master"
        self.commit_hash = "c0"
        self.root_node = branch.load_root("root-of-c0")
        self.namespace = ""
        self.notifications: list[dict[str, str]] = []

    def send_notification(self, message: dict[str, str]) -> None:
        self.notifications.append(message)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The module's clock, moved only by its own sleeps."""
    now = [0.0]
    monkeypatch.setattr(model.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(model.time, "sleep", lambda seconds: now.__setitem__(0, now[0] + seconds))
    return now


def _edit(session: ModelSession) -> Any:
    def edit() -> int:
        session.root["edits"] += 1
        return int(session.root["edits"])

    return edit


def test_a_change_outlasts_a_busy_branch_instead_of_forking(clock: list[float]) -> None:
    branch = MovingBranch(busy=12)  # twelve commits by others in a row: more than five tries ever saw
    plugin = Plugin(branch)
    session = ModelSession(plugin)
    assert session.change("status: running", _edit(session)) == 1  # applied once, on the newest head
    assert session.branch == "master"
    assert set(branch.branches) == {"master"}, "continued on a fork branch"
    assert plugin.notifications == []
    assert clock[0] < model.FORK_RETRY_SECONDS


def test_a_branch_that_never_settles_still_forks_after_the_deadline(clock: list[float]) -> None:
    branch = MovingBranch(busy=10**6)
    plugin = Plugin(branch)
    session = ModelSession(plugin)
    assert session.change("status: running", _edit(session)) == 1  # the fork holds the edit once
    assert session.branch == "master_fork_1"
    assert branch.branches["master_fork_1"] == session.commit_hash
    assert clock[0] >= model.FORK_RETRY_SECONDS
    assert len(branch.saves) < 60, "the back-off grows: a bounded number of tries"
    assert "master_fork_1" in plugin.notifications[-1]["message"]


def test_retry_sleeps_grow_and_stay_capped(clock: list[float]) -> None:
    sleeps = []
    for sleep in model.fork_retry_sleeps(10.0):
        sleeps.append(sleep)
        clock[0] += sleep
    assert sleeps[0] < sleeps[3]
    assert max(sleeps) <= 1.5 * model.FORK_RETRY_MAX_SLEEP
    assert sum(sleeps) >= 10.0
