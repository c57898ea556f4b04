"""The one way a benchmark states a figure against its target (issue 14's "Targets" table).

Each script builds a :class:`Targets`, records every figure with :meth:`Targets.at_least` (a ratio) or
:meth:`Targets.below` (a bound, e.g. peak RSS), then calls :meth:`Targets.finish`, which prints the table and
returns the exit code.  Every figure line starts with ``TARGET`` so ``bench/run_all.py`` (``make bench``) can
repeat them all in one summary at the end::

    TARGET s3 download 1024 MiB, adapter / best raw client (boto3) = 1.04 (target >= 1.00) PASS

A ratio is always ours ÷ the baseline as a speed (baseline seconds / our seconds), measured in the same run
on the same machine: a number that means the same on any hardware.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "TARGET"


def load_note() -> str:
    """The 1-minute load average per core, so a reader can judge how busy the machine was."""
    try:
        one, _, _ = os.getloadavg()
    except OSError:
        return "load unknown"
    cores = os.cpu_count() or 1
    busy = " (busy machine: figures are pessimistic)" if one > cores else ""
    return f"load average {one:.2f} on {cores} cores{busy}"


@dataclass
class Targets:
    """The figures of one benchmark script and whether each meets its target."""

    bench: str
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def at_least(self, what: str, value: float, target: float, unit: str = "") -> bool:
        return self._record(what, value, target, value >= target, ">=", unit)

    def below(self, what: str, value: float, bound: float, unit: str = "MiB") -> bool:
        return self._record(what, value, bound, value < bound, "<", unit)

    def check(self, what: str, ok: bool) -> bool:
        """A condition without a number (the bytes came back identical, a job succeeded)."""
        line = f"{PREFIX} {self.bench}: {what} {'PASS' if ok else 'FAIL'}"
        self.lines.append(line)
        if not ok:
            self.failed.append(what)
        return ok

    def _record(self, what: str, value: float, target: float, ok: bool, op: str, unit: str) -> bool:
        suffix = f" {unit}" if unit else ""
        line = f"{PREFIX} {self.bench}: {what} = {value:.2f}{suffix} (target {op} {target:g}{suffix}) "
        self.lines.append(line + ("PASS" if ok else "FAIL"))
        if not ok:
            self.failed.append(what)
        return ok

    def finish(self) -> int:
        """Print every figure and the verdict; 0 when all met their targets."""
        for line in self.lines:
            print(line)
        verdict = "PASS" if not self.failed else f"FAIL ({len(self.failed)} below target)"
        print(f"{self.bench}: {verdict}; {load_note()}", flush=True)
        return 0 if not self.failed else 1


# ------------------------------------------------------------------------------------------------ memory
def peak_rss_mib() -> float:
    """This process's own peak RSS in MiB: ``VmHWM`` of its address space where Linux has it.

    Not ``ru_maxrss``: Linux keeps that across ``execve``, so a child started by a bench that had itself
    grown (boto3's models, a raw 1 GiB upload) reported the *parent's* peak when that was higher (the s3
    bench's children "started" at the parent's 60-140 MiB before they had allocated anything).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: A line for a ``python -c`` child: makes :func:`peak_rss_mib` importable there (bench/ is not a package).
IMPORT_PEAK = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from _targets import peak_rss_mib"
)


# ------------------------------------------------------------------------------------------------ baselines
#: Bytes per write of :func:`start_timed_step`'s scratch file.
_SCRATCH_BLOCK = 1024 * 1024


def start_timed_step(directory: str | os.PathLike[str], size: int) -> None:
    """Make the next ``size`` bytes of new page cache as cheap for whatever step comes next: call right before
    starting its clock.

    ``os.sync()`` first, so no step pays for the previous one's write-back.  Then ``size`` bytes of page cache
    are written to a scratch file in ``directory`` and freed (the file is unlinked, its dirty pages dropped
    unwritten).  Why: this machine is a VM that hands memory freed for about 2 s back to its host (virtio-balloon
    free-page reporting), and a new file's page cache in memory the host took back costs a host fault per
    4 KiB page, ~12-24 ms per MiB: a copy of 256 MiB into a new file took 2-7 s, the same copy right after an
    equal file was deleted 0.1-0.17 s (docs/benchmarks.md, "The VM's memory").  Whether a step found freed
    pages decided the figure more than the code did (every `local` get "slower than its put" was the put
    reusing the pages of the ``cp`` baseline's deleted copy).  With this before every timed step, baseline
    and adapter alike write into recently freed memory, as on a machine whose memory stays its own.
    """
    os.sync()
    scratch = Path(directory) / ".bench-fresh-pages"
    block = bytes(_SCRATCH_BLOCK)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(-(-size // _SCRATCH_BLOCK)):
            os.write(fd, block)
    finally:
        os.close(fd)
        os.unlink(scratch)


def cp_fsync_seconds(src: Path, dest: Path) -> float:
    """``cp`` then ``sync FILE`` (an fsync of the copy), from no dirty pages: a durable copy, nothing more."""
    start_timed_step(dest.parent, src.stat().st_size)
    t0 = time.perf_counter()
    subprocess.run(["cp", str(src), str(dest)], check=True)
    subprocess.run(["sync", str(dest)], check=True)
    elapsed = time.perf_counter() - t0
    dest.unlink()
    return elapsed


def sha256_seconds(src: Path) -> float:
    """sha256 of ``src`` alone: the faster of ``sha256sum`` and ``hashlib.file_digest`` (SHA-NI where present)."""
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["sha256sum", str(src)], check=True, stdout=subprocess.DEVNULL)
    shell = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(src, "rb", buffering=0) as f:
        hashlib.file_digest(f, "sha256")
    return min(shell, time.perf_counter() - t0)
