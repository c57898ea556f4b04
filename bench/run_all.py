"""Run every benchmark script in ``bench/`` (``make bench``); exit non-zero if any of them fails.

Each script is standalone and prints its own ratios; this runs them one after another (never in parallel:
they measure time and memory), then repeats every ``TARGET`` line (each figure with its ratio and
PASS/FAIL against its target, see ``bench/_targets.py``) in one summary and reports which scripts failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_PREFIX = "TARGET "  # bench/_targets.py


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    failed = []
    figures: list[str] = []
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:  # passed through as it comes; the figures are kept for the summary
            print(line, end="", flush=True)
            if line.startswith(TARGET_PREFIX):
                figures.append(line.rstrip("\n"))
        code = proc.wait()
        if code != 0:
            failed.append(f"{script.name} (exit {code})")
    print("=== every figure against its target")
    for line in figures:
        print(line)
    print(
        f"=== {len(scripts) - len(failed)}/{len(scripts)} benchmarks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
