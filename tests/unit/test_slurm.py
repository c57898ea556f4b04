"""``slurm`` compute without a cluster: Slurm's output formats, the status table, the batch script, the
policy's rules for it and its dialog fields.  (The real cluster: tests/integration/test_slurm_compute.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deepforge_adapters.compute import ComputeJob, JobStatus
from deepforge_adapters.compute.slurm import STATUS_TABLE, SlurmCompute
from deepforge_adapters.compute.slurm_transport import JobOptions, _minutes, base_state, parse_scontrol
from deepforge_adapters.errors import ComputeError
from deepforge_adapters.policy import Policy, PolicyError
from deepforge_plugins.targets import dialog_fields

#: Every state ``squeue --help`` lists for Slurm 22.05 ("JOB STATE CODES").
SLURM_STATES = [
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "CONFIGURING",
    "COMPLETING",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PENDING",
    "PREEMPTED",
    "RUNNING",
    "RESV_DEL_HOLD",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "REQUEUED",
    "RESIZING",
    "REVOKED",
    "SIGNALING",
    "SPECIAL_EXIT",
    "STAGE_OUT",
    "STOPPED",
    "SUSPENDED",
    "TIMEOUT",
]


def test_every_slurm_state_is_in_the_table_and_every_failure_has_a_reason() -> None:
    assert set(SLURM_STATES) <= set(STATUS_TABLE.codes())
    for state in SLURM_STATES:
        mapping = STATUS_TABLE[state]
        if mapping.status == JobStatus.FAILED:
            assert mapping.reason and mapping.reason.startswith(state + ": "), state
    assert STATUS_TABLE["PENDING"].status == JobStatus.QUEUED
    assert STATUS_TABLE["CANCELLED"].status == JobStatus.CANCELED
    assert STATUS_TABLE["NEW_IN_SLURM_99"].status == JobStatus.FAILED  # unknown codes fail loudly


def test_scontrol_one_line_output_is_parsed_with_spaces_in_values() -> None:
    line = (
        "JobId=7 JobName=my job UserId=root(0) JobState=CANCELLED Reason=None ExitCode=0:15 "
        "TimeLimit=00:10:00 WorkDir=/tmp/a dir StdOut=/dev/null"
    )
    fields = parse_scontrol(line)
    assert fields["JobName"] == "my job" and fields["WorkDir"] == "/tmp/a dir"
    assert fields["ExitCode"] == "0:15" and fields["TimeLimit"] == "00:10:00"
    assert base_state("CANCELLED by 0") == "CANCELLED"


@pytest.mark.parametrize(
    ("limit", "minutes"), [("10", 10), ("00:30", 1), ("01:30:00", 90), ("2-00:00:00", 2880), ("1-2", 1560)]
)
def test_time_limits_become_minutes_for_rest(limit: str, minutes: int) -> None:
    assert _minutes(limit) == minutes


def test_resources_come_from_config_then_labels_and_bad_labels_are_refused() -> None:
    compute = SlurmCompute({"partition": "cpu", "gpus": 1, "timeLimit": "00:10:00", "sharedDir": "/tmp"})
    options = compute.job_options(
        ComputeJob(name="train net", labels=("partition=gpu", "gpus=2", "mem=4G")), "/tmp", "o"
    )
    assert (options.partition, options.gpus, options.memory, options.time_limit) == ("gpu", 2, "4G", "00:10:00")
    assert "#SBATCH --gres=gpu:2" in options.directives() and "#SBATCH --job-name=train_net" in options.directives()
    assert compute.job_options(ComputeJob(labels=("gpu",)), "/tmp", "o").gpus == 1
    with pytest.raises(ComputeError, match="label 'partition=a b;rm'"):
        compute.job_options(ComputeJob(labels=("partition=a b;rm",)), "/tmp", "o")


def test_the_batch_script_carries_the_bundle_and_never_the_deployment_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPFORGE_SECRET_KEY", "k1:" + "A" * 43)
    compute = SlurmCompute({"sharedDir": str(tmp_path)})
    script = compute.batch_script(JobOptions(partition="debug"), {"bundle": "eJzT", "channel": {}})
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and "#SBATCH --partition=debug" in lines
    exec_line = next(i for i, line in enumerate(lines) if line.startswith("exec "))
    marker = lines[exec_line].rsplit("<<'", 1)[1].rstrip("'")
    assert json.loads(lines[exec_line + 1]) == {"bundle": "eJzT", "channel": {}} and lines[exec_line + 2] == marker
    assert "A" * 43 not in script


def test_config_errors_name_the_cluster() -> None:
    with pytest.raises(ComputeError, match=r"cluster 'hpc': the rest transport needs restUrl, restUser, restToken"):
        SlurmCompute({"cluster": "hpc", "transport": "rest"})
    with pytest.raises(ComputeError, match=r"cluster 'hpc': the ssh transport needs sshHost"):
        SlurmCompute({"cluster": "hpc", "transport": "ssh"})


def test_the_policy_never_offers_slurm_without_a_file_and_keeps_its_host_paths_server_side() -> None:
    default = Policy.default()
    assert not default.allows("compute", "slurm")
    doc = {"compute": {"allow": ["slurm"]}}
    policy = Policy.from_mapping(doc, "test policy")
    for field in ("extraDirectives", "sharedDir", "sshIdentityFile", "sshKnownHosts"):
        with pytest.raises(PolicyError, match=f"compute.slurm.{field} = "):
            policy.apply("compute", "slurm", {field: "--x" if field == "extraDirectives" else "/etc/x"})
    assert policy.apply("compute", "slurm", {"partition": "gpu"}) == {"partition": "gpu"}


def test_the_dialogs_show_slurm_where_the_policy_allows_it() -> None:
    policy = Policy.from_mapping({"compute": {"allow": ["slurm", "local"]}}, "test policy")
    execute = dialog_fields("compute", include_secrets=True, policy=policy)
    assert "slurm" in execute[0]["valueItems"]
    names = [f["name"] for f in execute]
    assert {"compute.slurm.partition", "compute.slurm.gpus", "compute.slurm.restToken"} <= set(names)
    assert "compute.slurm.sharedDir" not in names  # fixed by the built-in rule: the server's setting
    targets = [f["name"] for f in dialog_fields("compute", include_secrets=False, policy=policy, keep=True)]
    assert "compute.slurm.partition" in targets and "compute.slurm.restToken" not in targets
    assert "slurm" not in dialog_fields("compute", include_secrets=True, policy=Policy.default())[0]["valueItems"]
