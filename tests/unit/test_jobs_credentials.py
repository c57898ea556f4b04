"""jobs/credentials.py: opening one job's sealed fields, and the pipe that hands them to a real child."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deepforge_adapters import secrets
from deepforge_adapters.errors import SecretsError
from deepforge_adapters.jobs.bundle import build_bundle
from deepforge_adapters.jobs.credentials import (
    CREDENTIALS_FD_ENV,
    CredentialPipe,
    is_runner_command,
    job_environment,
    open_job_credentials,
)
from deepforge_adapters.jobs.layout import JOB_FILE
from deepforge_adapters.storage import DataInfo

S3 = {"endpoint": "http://127.0.0.1:9", "accessKeyId": "AKIA-cred-test", "secretAccessKey": "s3cr3t-cred-test"}


def _bundle(tmp_path: Path, key: str, project: str = "guest+p") -> Path:
    data = DataInfo("s3", {"filename": "a", "size": 1, "bucketName": "deepforge", "endpoint": S3["endpoint"]})
    return build_bundle(
        tmp_path / "b",
        storage_id="s3",
        storage_dir="d",
        storage_config=S3,
        inputs={"x": (data, None)},
        main_py="print(1)",
        secret_key=key,
        project=project,
    )


def test_open_job_credentials_gives_only_the_sealed_fields_plain(tmp_path: Path) -> None:
    key = secrets.generate_key()
    bundle = _bundle(tmp_path, key)
    assert S3["secretAccessKey"].encode() not in (bundle / JOB_FILE).read_bytes()
    creds = open_job_credentials(bundle, key, env={"DEEPFORGE_GME_API_TOKEN": "t0ken"})
    plain = {"accessKeyId": S3["accessKeyId"], "secretAccessKey": S3["secretAccessKey"]}
    bind = {"endpoint": S3["endpoint"]}
    assert creds == {
        "storage": plain,
        "inputs": {"x": plain},
        "bind": {"storage": bind, "inputs": {"x": bind}},
        "env": {"DEEPFORGE_GME_API_TOKEN": "t0ken"},
    }


def test_a_retargeted_job_fails_naming_the_config_and_the_field(tmp_path: Path) -> None:
    key = secrets.generate_key()
    bundle = _bundle(tmp_path, key)
    job = json.loads((bundle / JOB_FILE).read_text())
    job["storage"]["config"]["endpoint"] = "http://attacker.invalid"
    (bundle / JOB_FILE).write_text(json.dumps(job))
    with pytest.raises(SecretsError, match=r"job storage: cannot open the sealed config of s3 storage: .*'accessK"):
        open_job_credentials(bundle, key)


def test_credential_pipe_reaches_a_real_child_and_nothing_else(tmp_path: Path) -> None:
    creds = {"storage": {"secretAccessKey": "s3cr3t-pipe"}, "inputs": {}, "env": {}}
    reader = (
        "import json, os; from deepforge_adapters.jobs.credentials import receive_credentials\n"
        "env = dict(os.environ); got = receive_credentials(env)\n"
        f"print(json.dumps({{'got': got, 'fd_var_left': {CREDENTIALS_FD_ENV!r} in env}}))\n"
    )
    base_env = job_environment({"PATH": "/usr/bin:/bin", secrets.KEY_ENV: "k", secrets.KEY_FILE_ENV: "/k"})
    assert base_env == {"PATH": "/usr/bin:/bin"}
    with CredentialPipe(creds) as pipe:
        child = subprocess.Popen(
            [sys.executable, "-c", reader], env={**base_env, **pipe.env}, pass_fds=pipe.pass_fds, stdout=subprocess.PIPE
        )
        pipe.started()
    out, _ = child.communicate(timeout=60)
    result = json.loads(out)
    assert result == {"got": {**creds, "bind": {"storage": {}, "inputs": {}}}, "fd_var_left": False}
    with CredentialPipe(None) as none:
        assert none.pass_fds == () and none.env == {}


def test_only_the_runner_command_is_handed_credentials() -> None:
    assert is_runner_command("python3", ["-m", "deepforge_adapters.jobs.runner"])
    assert is_runner_command("/usr/bin/python", ["-m", "deepforge_adapters.jobs.runner"])
    assert not is_runner_command("python3", ["-c", "print(open('/proc/self/environ').read())"])
    assert not is_runner_command("sh", ["-m", "deepforge_adapters.jobs.runner"])
