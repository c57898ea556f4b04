"""Run every benchmark script in ``bench/`` (``make bench``); exit non-zero if any of them fails.

Each script is standalone and prints its own ratios; this only runs them one after another (never in
parallel: they measure time and memory) and reports which failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    failed = []
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        code = subprocess.run([sys.executable, str(script)], check=False).returncode
        if code != 0:
            failed.append(f"{script.name} (exit {code})")
    print(
        f"=== {len(scripts) - len(failed)}/{len(scripts)} benchmarks passed"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
