"""``python -m deepforge_dev.soak``: the soak run (docs/reliability.md); exit 1 unless every audit count is 0."""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
from pathlib import Path
from types import FrameType

from .run import SoakOptions, soak
from .workload import WorkloadOptions

#: ``--reduced``: the small workload of the test suite's run (tests/soak/test_soak_reduced.py).
REDUCED = {"jobs": 40, "faults": 9, "workers": 4, "slots": 2, "parallel": 2}
REDUCED_WORKLOAD = WorkloadOptions(jobs=40, ops_per_run=8, large_output=1024 * 1024, sleep=4.0, lines=2000)


def reduced_options(seed: int, **overrides: object) -> SoakOptions:
    """The reduced run: ~40 jobs, every fault kind once, short pauses (under 3 minutes on a quiet machine)."""
    values: dict[str, object] = {**REDUCED, "workload": REDUCED_WORKLOAD, "fault_gap": (0.5, 1.5),
                                 "stop_seconds": 14.0, "duration": 600.0, "recovery_timeout": 60.0}  # fmt: skip
    values.update(overrides)
    return SoakOptions(seed=seed, **values)  # type: ignore[arg-type]


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """SIGTERM and SIGINT stop the run the way Ctrl-C does (everything it started, by pid).  SIGINT too,
    because a shell starts a background job with SIGINT ignored, and Python then never installs its handler."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _interrupt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepforge_dev.soak", description=__doc__)
    parser.add_argument("--seed", type=int, default=None, help="the seed of the workload and faults (default: random)")
    parser.add_argument("--jobs", type=int, default=None, help="operations (jobs) in all [1000; reduced 40]")
    parser.add_argument("--faults", type=int, default=None, help="faults to inject [50; reduced 9]")
    parser.add_argument("--workers", type=int, default=None, help="deepforge-workers [4]")
    parser.add_argument("--slots", type=int, default=None, help="slots (--processes) per worker [2]")
    parser.add_argument("--parallel", type=int, default=None, help="ExecutePipeline runs at once [4; reduced 3]")
    parser.add_argument("--duration", type=float, default=None, help="cap on the whole run, seconds [14400]")
    parser.add_argument("--run-dir", type=Path, default=None, help="state and logs [.run/soak-<seed>]")
    parser.add_argument("--report", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--reduced", action="store_true", help="the small run of the test suite")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    given = {k: v for k, v in vars(args).items() if k in ("jobs", "faults", "workers", "slots", "parallel",
                                                           "duration", "run_dir") and v is not None}  # fmt: skip
    options = reduced_options(seed, **given) if args.reduced else SoakOptions(seed=seed, **given)
    print(f"seed {seed}", flush=True)
    stop_on_signals()
    try:
        report = soak(options)
    except KeyboardInterrupt:
        print(f"interrupted; everything stopped (replay: --seed {seed})", file=sys.stderr)
        return 130
    print(report.text(), flush=True)
    if args.report:
        report.write(args.report)
        print(f"report: {args.report}", flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
