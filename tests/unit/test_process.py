"""``deepforge_adapters.process``: the one job runner, with real processes (no fakes).

Each test of a job runs twice: under a shim started for it (``cold``) and under one a :class:`ShimPool` started
ahead (``warm``); both must behave alike."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deepforge_adapters import process


def collect() -> tuple[list[bytes], process.Sink]:
    chunks: list[bytes] = []
    return chunks, chunks.append


@pytest.fixture(params=["cold", "warm"])
def shims(request: pytest.FixtureRequest) -> Iterator[process.ShimPool | None]:
    if request.param == "cold":
        yield None
        return
    with process.ShimPool(1) as pool:
        yield pool


def warm(shims: process.ShimPool | None, **kind: object) -> dict[str, object]:
    """Start a shim of the kind a call with ``kind`` needs (so the warm case does run under one)."""
    if shims is not None:
        shims.refill(process.ShimKind.of(**kind))  # type: ignore[arg-type]
    return {"shims": shims}


def used_warm(shims: process.ShimPool | None, count: int = 1) -> bool:
    return shims is None or shims.taken == count


def test_output_is_merged_and_the_exit_code_kept(tmp_path: Path, shims: process.ShimPool | None) -> None:
    chunks, sink = collect()
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True); sys.exit(3)"
    result = process.run([sys.executable, "-c", code], tmp_path, os.environ, sink, **warm(shims))
    assert result.returncode == 3 and not result.canceled and result.sink_error is None
    assert b"".join(chunks) == b"out\nerr\n"
    assert used_warm(shims)


def test_with_a_stderr_sink_stderr_is_kept_apart(tmp_path: Path, shims: process.ShimPool | None) -> None:
    out, out_sink = collect()
    err, err_sink = collect()
    code = (
        "import sys\n"
        "for i in range(200):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
    )
    result = process.run(
        [sys.executable, "-c", code], tmp_path, os.environ, out_sink, stderr_sink=err_sink,
        **warm(shims, separate_stderr=True),
    )  # fmt: skip
    assert result.returncode == 0 and result.sink_error is None and used_warm(shims)
    assert b"".join(out) == b"".join(b"out %d\n" % i for i in range(200))
    assert b"".join(err) == b"".join(b"err %d\n" % i for i in range(200))


def test_a_command_killed_by_a_signal_reads_as_killed_by_it(tmp_path: Path, shims: process.ShimPool | None) -> None:
    result = process.run(["sh", "-c", "kill -9 $$"], tmp_path, os.environ, collect()[1], **warm(shims))
    assert result.returncode == -signal.SIGKILL and used_warm(shims)


def test_a_command_that_cannot_start_raises_oserror_with_its_errno(
    tmp_path: Path, shims: process.ShimPool | None
) -> None:
    with pytest.raises(OSError) as exc:
        process.spawn([str(tmp_path / "no-such-program")], tmp_path, os.environ, **warm(shims))  # type: ignore[arg-type]
    assert exc.value.errno == errno.ENOENT and exc.value.strerror and used_warm(shims)
    with pytest.raises(OSError) as exc:  # and a working directory that is not there, as Popen says it
        process.spawn(["true"], tmp_path / "no-such-dir", os.environ, **warm(shims))  # type: ignore[arg-type]
    assert exc.value.errno == errno.ENOENT and exc.value.strerror and used_warm(shims, 2)


def test_pass_fds_reach_the_command(tmp_path: Path, shims: process.ShimPool | None) -> None:
    read_end, write_end = os.pipe()
    try:
        result = process.run(
            [sys.executable, "-c", f"import os; os.write({write_end}, b'secret-channel')"],
            tmp_path,
            os.environ,
            collect()[1],
            pass_fds=(write_end,),
            **warm(shims),  # type: ignore[arg-type]
        )
        os.close(write_end)
        assert result.returncode == 0 and used_warm(shims)
        assert os.read(read_end, 100) == b"secret-channel"
    finally:
        os.close(read_end)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")
def test_user_and_group_apply_to_the_command(tmp_path: Path, shims: process.ShimPool | None) -> None:
    chunks, sink = collect()
    result = process.run(
        ["sh", "-c", "id -u; id -g"], tmp_path, os.environ, sink, user=65534, group=65534, extra_groups=[],
        **warm(shims, user=65534, group=65534, extra_groups=[]),
    )  # fmt: skip
    assert result.returncode == 0 and used_warm(shims)
    assert b"".join(chunks).split() == [b"65534", b"65534"]


def test_a_failing_sink_stops_the_job_and_is_reported(tmp_path: Path, shims: process.ShimPool | None) -> None:
    def full_disk(chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    flood = "while True: print('x' * 1000, flush=True)"
    result = process.run([sys.executable, "-c", flood], tmp_path, os.environ, full_disk, **warm(shims))
    assert used_warm(shims)
    assert isinstance(result.sink_error, OSError) and result.sink_error.errno == errno.ENOSPC
    assert result.returncode == -signal.SIGKILL


def test_cancel_sigints_then_kills_a_command_that_ignores_sigint(
    tmp_path: Path, shims: process.ShimPool | None
) -> None:
    ready = tmp_path / "ready"
    code = (
        f"import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); open({str(ready)!r}, 'w'); time.sleep(600)"
    )
    result = process.run(
        [sys.executable, "-c", code], tmp_path, os.environ, collect()[1], should_cancel=ready.exists, grace=0.5,
        **warm(shims),
    )  # fmt: skip
    assert result.canceled and result.returncode == -signal.SIGKILL and used_warm(shims)


# ------------------------------------------------------------------------------------------------ warm shims
def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_a_warm_shim_gives_the_command_exactly_its_environment_and_directory(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "JOB_ONLY": "value with spaces", "UNDECODABLE": "caf\udce9"}
    chunks, sink = collect()
    with process.ShimPool(1) as pool:
        pool.refill(process.ShimKind.of())
        result = process.run(["sh", "-c", "pwd; env | sort"], tmp_path, env, sink, shims=pool)
        assert result.returncode == 0 and pool.taken == 1
        assert len(pool.idle_pids()) == 1  # the next one is ready
    lines = b"".join(chunks).splitlines()
    assert lines[0] == str(tmp_path).encode()
    assert {line for line in lines[1:] if not line.startswith((b"PWD=", b"SHLVL=", b"_="))} == {
        b"PATH=" + os.environ["PATH"].encode(),
        b"JOB_ONLY=value with spaces",
        b"UNDECODABLE=caf\xe9",
    }


PASS_FDS_SCRIPT = """
import fcntl, os, sys
from deepforge_adapters import process
# Four pipes whose write ends are at 6, 5, 4, 3: the lowest numbers, where the shim's own descriptors and the
# ones it receives land, so a careless remapping would cross or close them.
pipes = [os.pipe() for _ in range(4)]
readers = [fcntl.fcntl(r, fcntl.F_DUPFD, 50) for r, _ in pipes]
writers = [fcntl.fcntl(w, fcntl.F_DUPFD, 50) for _, w in pipes]
for r, w in pipes:
    os.close(r)
    os.close(w)
wanted = [6, 5, 4, 3]
for w, fd in zip(writers, wanted):
    os.dup2(w, fd)
    os.close(w)
code = "import os\\nfor fd in (6, 5, 4, 3): os.write(fd, b'fd%d' % fd)"
with process.ShimPool(1) as pool:
    pool.refill(process.ShimKind.of())
    result = process.run([sys.executable, "-c", code], "/", os.environ, lambda c: sys.stdout.buffer.write(c),
                         pass_fds=wanted, shims=pool)
    assert pool.taken == 1, pool.taken
for fd in wanted:
    os.close(fd)
print(result.returncode, [os.read(r, 10).decode() for r in readers], flush=True)
"""


def test_a_warm_shim_puts_every_passed_descriptor_back_at_its_number(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", PASS_FDS_SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "0 ['fd6', 'fd5', 'fd4', 'fd3']"


def test_idle_shims_end_when_their_pool_closes() -> None:
    with process.ShimPool(2) as pool:
        pool.refill(process.ShimKind.of())
        pids = pool.idle_pids()
        assert len(pids) == 2
    assert all(gone(pid) for pid in pids) and pool.idle_pids() == []


def test_idle_shims_end_when_their_owner_dies() -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom deepforge_adapters import process\n"
         "pool = process.ShimPool(1); pool.refill(process.ShimKind.of())\n"
         "print(pool.idle_pids()[0], flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert not gone(pid, within=0.5)
    finally:
        owner.kill()
        owner.wait()
    assert gone(pid)  # its socket read EOF: no job came, none will


def test_a_dead_idle_shim_is_passed_over(tmp_path: Path) -> None:
    chunks, sink = collect()
    with process.ShimPool(1) as pool:
        pool.refill(process.ShimKind.of())
        (pid,) = pool.idle_pids()
        os.kill(pid, signal.SIGKILL)
        assert gone(pid)
        result = process.run(["sh", "-c", "echo fine"], tmp_path, os.environ, sink, shims=pool)
        assert result.returncode == 0 and b"".join(chunks) == b"fine\n"
        assert pool.taken == 0 and len(pool.idle_pids()) == 1
