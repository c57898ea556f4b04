"""Issue 18 item 7: a job's stderr is kept as the Node webgme-executor-worker keeps it, in ``job_stderr.txt``.

webgme-executor-worker 3.1.1 (``src/ExecutorWorker.js``) pipes a job's stdout to ``job_stdout.txt`` and the
live output, and its stderr to ``job_stderr.txt`` only (in the job dir, so archived when a result pattern
matches it).  DeepForge's bundles rely on that: GenerateJob's ``start.js`` logs its own debug lines to stderr
on purpose and merges the stderr of ``python main.py`` into its stdout itself.  Before the fix our worker
merged stderr into the live console (thousands of debug characters against the Node worker's few).

The bundle here is made as GenerateJob makes it: ``executor_config.json`` ``{"cmd": "node", "args":
["start.js"], "outputInterval": 1500, "resultArtifacts": [<outputs>, stdout, results, debug-files]}`` and a
``start.js`` that behaves as DeepForge's does (ours, written for the test: debug lines to stderr, the
operation's stdout and stderr to stdout, ``results.json``), plus one extra result artifact holding
``job_stderr.txt`` to compare.  Both workers run it against the same server; our own runner's bundles keep
their operation's tracebacks in the live output.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus, get_client
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.jobs.codegen import OperationSource
from deepforge_adapters.webgme.blob import BlobClient
from deepforge_adapters.webgme.executor import ExecutorClient

from tests.fixtures.waiting import wait_for
from tests.fixtures.worker import upload_bundle

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(300)]

#: A stand-in for GenerateJob's start.js: what it does with the streams, not its code.
START_JS = r"""
const {spawn} = require('child_process');
const fs = require('fs');
const debug = (...args) => console.error(...args);  // DeepForge's start.js: a stderr-only logger
for (const dir of ['artifacts', 'outputs']) {
    debug(`makeIfNeeded: ${JSON.stringify(dir)}`);
    fs.mkdirSync(dir, {recursive: true});
}
debug('retrieving artifacts/numbers (debug line that must not reach the live console)');
const job = spawn('python3', ['-u', 'main.py'], {detached: true});
job.stdout.on('data', data => process.stdout.write(data));
job.stderr.on('data', data => process.stdout.write(data));  // merged, as start.js merges them
job.on('close', code => {
    debug('script finished w/ exit code:', code);
    if (code === 0) {
        fs.writeFileSync('results.json', JSON.stringify({total: {type: 'builtins.int', dataInfo: null}}));
    }
    debug(`exiting w/ code ${code}`);
    process.exit(code);
});
"""

MAIN_OK = """
import sys
print('\\n############### Running "Sum" Operation ############### ')
print('total 12')
print('############### "Sum" Operation Complete! ###############')
"""

MAIN_FAILS = """
print('\\n############### Running "Sum" Operation ############### ')
raise ValueError('sum refuses')
"""


def deepforge_bundle(blob: BlobClient, main: str) -> str:
    files = {"start.js": START_JS, "main.py": main, "operations/__init__.py": "", "config.json": "{}"}
    config = {
        "cmd": "node",
        "args": ["start.js"],
        "outputInterval": 1500,
        "resultArtifacts": [
            {"name": "total", "resultPatterns": ["outputs/total"]},
            {"name": "stdout", "resultPatterns": ["job_stdout.txt"]},
            {"name": "results", "resultPatterns": ["results.json"]},
            {"name": "debug-files", "resultPatterns": sorted(files)},
            {"name": "stderr", "resultPatterns": ["job_stderr.txt"]},  # ours, to compare what each worker kept
        ],
    }
    return upload_bundle(blob, files, config, name="Sum_K_1-execution-files")


def run_on(stack: Any, start_worker: Any, main: str) -> dict[str, Any]:
    """Run the DeepForge bundle on one worker; what the server and the blob have of it afterwards."""
    blob, executor = BlobClient(stack.url), ExecutorClient(stack.url)
    worker = start_worker(stack)
    job = deepforge_bundle(blob, main)
    executor.create_job(job)
    info = wait_for(
        lambda: (i := executor.get_info(job))["status"] not in ("CREATED", "RUNNING") and i, 120, "the job to end"
    )
    worker.kill()

    def file_of(artifact: str, name: str) -> str:
        with blob.open(info["resultHashes"][artifact], subpath=name) as fh:
            return fh.read().decode()

    return {
        "status": info["status"],
        "live": "".join(chunk["output"] for chunk in executor.get_output(job)),
        "job_stdout": file_of("stdout", "job_stdout.txt"),
        "job_stderr": file_of("stderr", "job_stderr.txt"),
    }


def lines(text: str) -> list[str]:
    """Lines, sorted (the operation's stdout and stderr reach start.js on two pipes, so their order may vary),
    with the job directory left out of traceback paths (each worker has its own)."""
    return sorted(re.sub(r'File ".*/([^/]+)"', r'File "\1"', line) for line in text.splitlines() if line.strip())


@pytest.mark.parametrize(("main", "status"), [(MAIN_OK, "SUCCESS"), (MAIN_FAILS, "FAILED_TO_EXECUTE")])
def test_a_deepforge_bundle_streams_and_archives_as_on_the_node_worker(
    webgme_stack_factory: Any, worker_factory: Any, node_worker_factory: Any, main: str, status: str
) -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH (make node)")
    stack = webgme_stack_factory(worker_refresh_ms=250)
    node = run_on(stack, node_worker_factory, main)
    ours = run_on(stack, worker_factory, main)

    assert node["status"] == status, node
    assert ours["status"] == status, ours
    # stderr: start.js's debug lines, in job_stderr.txt on both, byte for byte
    assert "makeIfNeeded" in node["job_stderr"] and "script finished w/ exit code" in node["job_stderr"]
    assert ours["job_stderr"] == node["job_stderr"]
    # stdout: the operation's output (its traceback too, merged by start.js) and nothing of the debug lines
    for got in (node, ours):
        assert "makeIfNeeded" not in got["live"] and "retrieving" not in got["live"], got["live"]
        assert "makeIfNeeded" not in got["job_stdout"]
    # Our worker adds one line to a failed job's output saying why (the Node worker posts a bare status).
    reason = [line for line in ours["live"].splitlines() if line.startswith("[deepforge-worker]")]
    assert len(reason) == (status != "SUCCESS")
    assert lines(ours["job_stdout"]) == sorted(lines(node["job_stdout"]) + reason)
    assert lines(ours["live"]) == sorted(lines(node["live"]) + reason)
    if status == "SUCCESS":
        assert "total 12" in ours["live"]
    else:
        assert "Traceback" in ours["live"] and "ValueError: sum refuses" in ours["live"]


RAISES = """
class Boom:
    def execute(self):
        print('about to fail', flush=True)
        raise ValueError('boom in the operation')
"""


def test_our_runner_keeps_its_operations_traceback_in_the_live_output(
    plugin_stack: Any, worker_factory: Any, tmp_path: Path
) -> None:
    """A bundle of ours (``python -m deepforge_adapters.jobs.runner``) on our worker: the runner merges its
    operation's stderr into its stdout, so the traceback is live and in ``job_stdout.txt``, not only archived."""
    worker = worker_factory(plugin_stack)
    directory = build_bundle(
        tmp_path / "bundle",
        storage_id="local",
        storage_dir="proj/executions/boom",
        storage_config={"root": str(tmp_path / "store")},
        outputs=["x"],
        operation=OperationSource("Boom", RAISES, outputs=["x"]),
        output_interval=100,
        project="guest+proj",
    )
    blob = BlobClient(plugin_stack.url)
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    compute = get_client("gme", {"host": plugin_stack.url})
    job_info = compute.start_job(ComputeJob(hash=blob.upload_artifact("boom", files)))
    updates = list(compute.watch(job_info, poll_interval=0.2))
    assert updates[-1].status == JobStatus.FAILED, worker.log()
    live = "".join(u.output for u in updates if u.kind == "output")
    assert "about to fail" in live and "Traceback" in live and "ValueError: boom in the operation" in live, live
    console = compute.get_console_output(job_info)
    assert "ValueError: boom in the operation" in console
    config = json.loads((directory / "executor_config.json").read_text())
    assert [config["cmd"], *config["args"]][-2:] == ["-m", "deepforge_adapters.jobs.runner"]
