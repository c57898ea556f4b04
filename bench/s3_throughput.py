"""Does the s3 adapter move 1 GiB as fast as the best raw client, within its memory budget, on a real server?

Starts SeaweedFS on loopback (``tests.fixtures.s3.start_seaweedfs``: the server the integration tests use;
it checks SigV4 and serves ranged GETs without copying the object, unlike moto), writes one test file
(default 1 GiB), then times upload and download of it, interleaved round by round, through:

* ``adapter``        S3Storage.put_file / get_file (managed transfer, default maxConcurrency x chunkSize;
                     the download is fsynced and renamed into place, which the raw clients do not do)
* ``adapter-stream`` S3Storage.put_file_stream from a non-seekable pipe / get_file_stream read loop
* ``boto3``          raw ``client.upload_file`` / ``download_file`` with boto3's default TransferConfig

* ``crt``            the CRT transfer client (``awscrt``), when it is installed (``pip install awscrt``): boto3's
                     own switch (``TransferConfig(preferred_transfer_client="crt")``) builds its request
                     serializer with ``endpoint_url=None`` (``boto3/crt.py``) and so always addresses AWS
                     (``AWS_IO_DNS_INVALID_NAME`` for ``bench.127.0.0.1``); this mode builds the same
                     ``s3transfer.crt.CRTTransferManager`` with the server's endpoint, path-style, 8 MiB parts

Each transfer runs in a fresh child process so its peak RSS (``VmHWM``, ``_targets.peak_rss_mib``) is the
client's alone.  Figures (``TARGET`` lines, ``bench/_targets.py``): adapter ÷ the raw client each way
(target >= 1.0), peak RSS from a file and from a pipe (target < 128 MiB each).

    python bench/s3_throughput.py [--mib 1024] [--repeat 3] [--modes adapter,boto3,...] [--ops upload,download]
    (or S3_BENCH_SIZE_MIB / S3_BENCH_REPEAT; S3_BENCH_ADAPTER_CONFIG='{"maxConcurrency": 4}' tunes the adapter)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.s3: the same SeaweedFS launcher the test suite uses
sys.path.insert(0, str(ROOT / "bench"))
from _targets import Targets, peak_rss_mib, start_timed_step  # noqa: E402 - bench/ is not a package: from beside this

MiB = 1024 * 1024
BUCKET = "bench"
RAW_MODES = ("boto3", "crt") if importlib.util.find_spec("awscrt") else ("boto3",)
SERVER_ENV = "S3_BENCH_SERVER"  # {"url", "accessKeyId", "secretAccessKey"} for the child processes
MODES = ("adapter", "adapter-stream", *RAW_MODES)


class Pipe:
    """Hides seekability: the adapter must stream part by part, as from a process's stdout."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def read(self, size: int = -1) -> bytes:
        return bytes(self._f.read(size))


def child(mode: str, op: str, server: dict[str, str], path: str, key: str) -> dict[str, Any]:
    """One timed transfer in this (fresh) process; returns seconds and peak RSS."""
    import boto3
    from botocore.config import Config
    from deepforge_adapters.storage.s3 import S3Storage
    from deepforge_adapters.streams import copy_stream

    tuning = json.loads(os.environ.get("S3_BENCH_ADAPTER_CONFIG", "{}"))  # e.g. {"maxConcurrency": 4}
    creds = {"accessKeyId": server["accessKeyId"], "secretAccessKey": server["secretAccessKey"]}
    adapter = S3Storage({"endpoint": server["url"], "bucketName": BUCKET, **creds, **tuning})
    adapter.ensure_bucket()  # setup, not timed
    info = adapter.stat(key) if op == "download" else None
    raw = None
    if mode in RAW_MODES:  # only then: a second client's service models would count in the adapter's RSS
        raw = boto3.client(
            "s3",
            endpoint_url=server["url"],
            region_name="us-east-1",
            aws_access_key_id=server["accessKeyId"],
            aws_secret_access_key=server["secretAccessKey"],
            config=Config(s3={"addressing_style": "path"}),  # as the adapter addresses a non-AWS endpoint
        )
    crt = crt_transfer_manager(server) if mode == "crt" else None
    size = os.path.getsize(path) if op == "upload" else int(info.data["size"])  # type: ignore[union-attr]
    start_timed_step(os.path.dirname(os.path.abspath(path)), size)  # the server writes a new file too
    start = time.perf_counter()
    if crt is not None:
        with crt:
            if op == "upload":
                crt.upload(path, BUCKET, key).result()
            else:
                crt.download(BUCKET, key, path).result()
    elif op == "upload":
        if mode == "adapter":
            adapter.put_file(key, path)
        elif mode == "adapter-stream":
            with open(path, "rb") as f:
                adapter.put_file_stream(key, Pipe(f))
        else:
            assert raw is not None
            raw.upload_file(path, BUCKET, key)
    else:
        assert info is not None
        if mode == "adapter":
            adapter.get_file(info, path)
        elif mode == "adapter-stream":
            with adapter.get_file_stream(info) as src, open(path, "wb") as dst:
                copy_stream(src, dst)
        else:
            assert raw is not None
            raw.download_file(BUCKET, key, path)
    seconds = time.perf_counter() - start
    if op == "download" and info is not None and os.path.getsize(path) != info.data["size"]:
        raise SystemExit(f"{mode} download wrote {os.path.getsize(path)} bytes, expected {info.data['size']}")
    return {"seconds": seconds, "rss_mib": peak_rss_mib()}


def crt_transfer_manager(server: dict[str, str]) -> Any:
    """boto3's CRT transfer manager, pointed at ``server`` (what boto3's ``preferred_transfer_client`` cannot)."""
    import botocore.session
    from awscrt.auth import AwsCredentialsProvider
    from botocore.config import Config
    from s3transfer.crt import BotocoreCRTRequestSerializer, CRTTransferManager, create_s3_crt_client

    serializer = BotocoreCRTRequestSerializer(
        botocore.session.Session(),
        {
            "region_name": "us-east-1",
            "endpoint_url": server["url"],
            "aws_access_key_id": server["accessKeyId"],
            "aws_secret_access_key": server["secretAccessKey"],
            "config": Config(s3={"addressing_style": "path"}),
        },
    )
    credentials = AwsCredentialsProvider.new_static(server["accessKeyId"], server["secretAccessKey"])
    client = create_s3_crt_client(
        "us-east-1", credentials, use_ssl=server["url"].startswith("https:"), part_size=8 * MiB
    )
    return CRTTransferManager(client, serializer)


def run_child(mode: str, op: str, server: dict[str, str], path: Path, key: str) -> dict[str, Any]:
    env = {**os.environ, SERVER_ENV: json.dumps(server)}  # the secret goes by environment, not argv
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, op, str(path), key], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} {op} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 251 :] + block[: i % 251])  # distinct blocks; no dedup anywhere
        f.write(block[: size % MiB])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=int(os.environ.get("S3_BENCH_SIZE_MIB", "1024")))
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("S3_BENCH_REPEAT", "3")))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--ops", default="upload,download")
    parser.add_argument("--rss-mib", type=float, default=128, help="peak RSS bound in MiB (default 128)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    ops = args.ops.split(",")

    from tests.fixtures.s3 import start_seaweedfs

    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp:
        work = Path(tmp)
        src, dest = work / "src.bin", work / "dest.bin"
        write_file(src, args.mib * MiB)
        server = start_seaweedfs(work / "seaweedfs")
        creds = {"url": server.url, "accessKeyId": server.access_key_id, "secretAccessKey": server.secret_access_key}
        raw = server.client()
        try:
            raw.create_bucket(Bucket=BUCKET)
            raw.upload_file(str(src), BUCKET, "download-source")  # untimed: what every download reads
            for _ in range(args.repeat):
                for mode in modes:  # interleaved so server warm-up and drift hit every mode alike
                    for op in ops:
                        key = f"up-{mode}" if op == "upload" else "download-source"
                        path = src if op == "upload" else dest
                        results.setdefault((mode, op), []).append(run_child(mode, op, creds, path, key))
                        dest.unlink(missing_ok=True)
                        if op == "upload":
                            raw.delete_object(Bucket=BUCKET, Key=key)
        finally:
            server.stop()

    print(f"S3 throughput, SeaweedFS on loopback, {args.mib} MiB each way, best of {args.repeat}")
    print(f"{'op':<9} {'mode':<15} {'seconds':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (mode, op), runs in sorted(results.items(), key=lambda kv: (kv[0][1], modes.index(kv[0][0]))):
        b = best[(mode, op)] = min(runs, key=lambda r: r["seconds"])
        print(f"{op:<9} {mode:<15} {b['seconds']:>8.2f} {args.mib / b['seconds']:>8.1f} {b['rss_mib']:>13.1f}")
    targets = Targets("s3_throughput")
    for op in ops:
        raws = [(best[(m, op)]["seconds"], m) for m in RAW_MODES if (m, op) in best]
        if ("adapter", op) in best and raws:
            seconds, name = min(raws)
            ratio = seconds / best[("adapter", op)]["seconds"]
            targets.at_least(f"s3 {op} {args.mib} MiB, adapter / best raw client ({name})", ratio, 1.0)
    for mode, what in (("adapter", "from a file"), ("adapter-stream", "from a pipe")):
        peaks = [r["rss_mib"] for (m, _), runs in results.items() if m == mode for r in runs]
        if peaks:
            targets.below(f"s3 adapter peak RSS {what}", max(peaks), args.rss_mib)
    return targets.finish()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], sys.argv[3], json.loads(os.environ[SERVER_ENV]), sys.argv[4], sys.argv[5])))
    else:
        sys.exit(main())
