"""A real single-node Slurm cluster on loopback, for the tests (tests/fixtures/slurm.py) and the benchmarks.

:func:`running_cluster` writes a ``slurm.conf`` under a fresh directory (free ports, two fake GPUs through
``gres.conf`` and ``mknod``, ``auth/none`` plus ``auth/jwt`` for slurmrestd, the job completion log for
``sacct -c``), starts ``slurmctld -D`` and ``slurmd -D`` as children, waits for the node to be idle, points
``SLURM_CONF`` at it for the duration, and stops each daemon by pid at the end.  It needs Debian's Slurm
(``make slurm``) and root (slurmd starts jobs as their users).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .stack import free_port, terminate

BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "sinfo", "slurmrestd")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path(f"/usr/sbin/{b}").exists()]


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s, to one daemon we started."""
    terminate(proc, grace=15)


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    cluster: str
    node: str
    env: dict[str, str]
    shared: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def run(self, *argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, check=check, timeout=60, **kwargs
        )

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        return out.split("JobState=", 1)[1].split()[0]

    def jobs(self) -> list[str]:
        """Ids of every job the controller knows (finished ones too, for MinJobAge)."""
        out = self.run("squeue", "-h", "-a", "-t", "all", "-o", "%i").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def config(self, **extra: Any) -> dict[str, Any]:
        """A ``slurm`` compute config for the CLI transport on this host."""
        return {
            "cluster": self.cluster,
            "transport": "cli",
            "python": sys.executable,
            "sharedDir": str(self.shared),
            **extra,
        }


@contextlib.contextmanager
def running_cluster(timeout: float = 60) -> Iterator[SlurmCluster]:
    """The cluster, up and idle (see the module docstring)."""
    # not under pytest's 0700 basetemp: slurmrestd runs as nobody and must read slurm.conf
    root = Path(tempfile.mkdtemp(prefix="deepforge-slurm-"))
    root.chmod(0o755)
    for sub in ("etc", "run", "spool", "state", "log", "dev"):
        (root / sub).mkdir()
    for i in range(2):  # fake GPUs: slurmd only wants character devices to exist
        os.mknod(root / "dev" / f"nvidia{i}", 0o666 | 0o020000, os.makedev(195, i))
    shared = root / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    node = socket.gethostname()
    cluster = f"df{uuid.uuid4().hex[:6]}"
    conf = root / "etc" / "slurm.conf"
    conf.write_text(
        f"""ClusterName={cluster}
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
AuthType=auth/none
CredType=cred/none
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={root}/etc/jwt.key
MpiDefault=none
GresTypes=gpu
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={root}/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=100
MinJobAge=3600
KillWait=5
ReturnToService=2
SchedulerParameters=sched_interval=1
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmdSpoolDir={root}/spool
StateSaveLocation={root}/state
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count() or 1} RealMemory=2000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    )
    (root / "etc" / "gres.conf").write_text(f"NodeName={node} Name=gpu File={root}/dev/nvidia[0-1]\n")
    (root / "etc" / "plugstack.conf").write_text("")
    key = root / "etc" / "jwt.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    handle = SlurmCluster(root, conf, cluster, node, env, shared)
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        for daemon in ("slurmctld", "slurmd"):
            handle.procs[daemon] = subprocess.Popen(
                [daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )

        def idle() -> bool:
            for name, proc in handle.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {handle.log(name)}")
            done = handle.run("sinfo", "-h", "-o", "%t", check=False)
            return done.returncode == 0 and done.stdout.strip() == "idle"

        deadline = time.monotonic() + timeout
        while not idle():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Slurm node was not idle within {timeout:g} s: {handle.log('slurmd')}")
            time.sleep(0.05)
        yield handle
    finally:
        for name in ("slurmrestd", "slurmd", "slurmctld"):
            if name in handle.procs:
                stop(handle.procs[name])
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(root, ignore_errors=True)
