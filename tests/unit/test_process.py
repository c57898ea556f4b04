"""``deepforge_adapters.process``: the one job runner, with real processes (no fakes)."""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import pytest
from deepforge_adapters import process


def collect() -> tuple[list[bytes], process.Sink]:
    chunks: list[bytes] = []
    return chunks, chunks.append


def test_output_is_merged_and_the_exit_code_kept(tmp_path: Path) -> None:
    chunks, sink = collect()
    code = "import sys; print('out', flush=True); print('err', file=sys.stderr, flush=True); sys.exit(3)"
    result = process.run([sys.executable, "-c", code], tmp_path, os.environ, sink)
    assert result.returncode == 3 and not result.canceled and result.sink_error is None
    assert b"".join(chunks) == b"out\nerr\n"


def test_with_a_stderr_sink_stderr_is_kept_apart(tmp_path: Path) -> None:
    out, out_sink = collect()
    err, err_sink = collect()
    code = (
        "import sys\n"
        "for i in range(200):\n"
        "    print('out', i, flush=True)\n"
        "    print('err', i, file=sys.stderr, flush=True)\n"
    )
    result = process.run([sys.executable, "-c", code], tmp_path, os.environ, out_sink, stderr_sink=err_sink)
    assert result.returncode == 0 and result.sink_error is None
    assert b"".join(out) == b"".join(b"out %d\n" % i for i in range(200))
    assert b"".join(err) == b"".join(b"err %d\n" % i for i in range(200))


def test_a_command_killed_by_a_signal_reads_as_killed_by_it(tmp_path: Path) -> None:
    result = process.run(["sh", "-c", "kill -9 $$"], tmp_path, os.environ, collect()[1])
    assert result.returncode == -signal.SIGKILL


def test_a_command_that_cannot_start_raises_oserror_with_its_errno(tmp_path: Path) -> None:
    with pytest.raises(OSError) as exc:
        process.spawn([str(tmp_path / "no-such-program")], tmp_path, os.environ)
    assert exc.value.errno == errno.ENOENT and exc.value.strerror


def test_pass_fds_reach_the_command(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        result = process.run(
            [sys.executable, "-c", f"import os; os.write({write_end}, b'secret-channel')"],
            tmp_path,
            os.environ,
            collect()[1],
            pass_fds=(write_end,),
        )
        os.close(write_end)
        assert result.returncode == 0
        assert os.read(read_end, 100) == b"secret-channel"
    finally:
        os.close(read_end)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")
def test_user_and_group_apply_to_the_command(tmp_path: Path) -> None:
    chunks, sink = collect()
    result = process.run(
        ["sh", "-c", "id -u; id -g"], tmp_path, os.environ, sink, user=65534, group=65534, extra_groups=[]
    )
    assert result.returncode == 0
    assert b"".join(chunks).split() == [b"65534", b"65534"]


def test_a_failing_sink_stops_the_job_and_is_reported(tmp_path: Path) -> None:
    def full_disk(chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    flood = "while True: print('x' * 1000, flush=True)"
    result = process.run([sys.executable, "-c", flood], tmp_path, os.environ, full_disk)
    assert isinstance(result.sink_error, OSError) and result.sink_error.errno == errno.ENOSPC
    assert result.returncode == -signal.SIGKILL


def test_cancel_sigints_then_kills_a_command_that_ignores_sigint(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    code = (
        f"import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); open({str(ready)!r}, 'w'); time.sleep(600)"
    )
    result = process.run(
        [sys.executable, "-c", code], tmp_path, os.environ, collect()[1], should_cancel=ready.exists, grace=0.5
    )
    assert result.canceled and result.returncode == -signal.SIGKILL
