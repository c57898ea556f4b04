"""The soak run's report: the figures, printed at the end and written as JSON; PASS when every count is 0."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The audit's counts (:class:`.audit.AuditReport`): the target is 0 for each (``over_cap``: a work dir or
#: cache above its cap).
COUNTS = ("lost", "stuck", "duplicated", "orphaned", "corrupt", "over_cap")


def percentiles(values: list[float]) -> dict[str, float | int]:
    """``n``, ``p50``, ``p95``, ``max`` of ``values`` (nearest rank), seconds rounded to 0.01."""
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def rank(q: float) -> float:
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)

    return {"n": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "max": round(ordered[-1], 2)}


@dataclass
class SoakReport:
    seed: int
    duration_s: float
    jobs_planned: int
    jobs_run: int  # distinct jobs (run, operation) that started at least once
    job_attempts: int  # starts in all (a requeued or re-run job starts again)
    jobs_retried: int  # jobs that started more than once
    executions: int
    executions_by_action: dict[str, int]
    executions_by_outcome: dict[str, int]
    plugin_runs: int
    resumes: int
    faults_planned: dict[str, int]
    faults_injected: dict[str, int]
    faults_skipped: dict[str, int]
    recovery_s: dict[str, dict[str, float | int]]
    unrecovered: dict[str, int]  # faults after which nothing ran again within the recovery bound
    worker_peak_rss_mib: float
    audit: dict[str, Any]
    counts: dict[str, int]
    problems: list[str] = field(default_factory=list)
    marked_processes_left: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    run_dir: str = ""

    @property
    def passed(self) -> bool:
        return all(self.counts.get(k, 1) == 0 for k in COUNTS) and not self.problems

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict, "faults_injected_total": sum(self.faults_injected.values())}

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    def text(self) -> str:
        lines = [
            f"soak report (seed {self.seed}, {self.duration_s:.0f}s)",
            f"  jobs: {self.jobs_run} run of {self.jobs_planned} planned, {self.job_attempts} starts, "
            f"{self.jobs_retried} retried",
            f"  executions: {self.executions} ({_pairs(self.executions_by_action)}; outcomes "
            f"{_pairs(self.executions_by_outcome)}), {self.plugin_runs} plugin runs, {self.resumes} resumes",
            f"  faults injected: {sum(self.faults_injected.values())} ({_pairs(self.faults_injected)})"
            + (f"; skipped {_pairs(self.faults_skipped)}" if self.faults_skipped else ""),
            "  recovery (s):",
        ]
        for kind, figures in self.recovery_s.items():
            if figures.get("n"):
                lines.append(f"    {kind:<15} n={figures['n']:<3} p50={figures['p50']:<7} p95={figures['p95']:<7}"
                             f" max={figures['max']}")  # fmt: skip
        if self.unrecovered:
            lines.append(f"    not recovered within the bound: {_pairs(self.unrecovered)}")
        lines.append(f"  worker peak RSS: {self.worker_peak_rss_mib} MiB")
        lines.append("  audit: " + ", ".join(f"{k} {self.counts.get(k, '?')}" for k in COUNTS))
        for problem in self.problems:
            lines.append(f"  problem: {problem}")
        lines.append(f"  {self.verdict}")
        return "\n".join(lines)


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
