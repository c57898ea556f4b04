"""Does the s3 adapter move big files as fast as boto3, within its memory budget?

Starts a moto S3 server on loopback, writes one test file (default 1 GiB), then times upload and download of
it through:

* ``adapter``        S3Storage.put_file / get_file (managed transfer, default maxConcurrency x chunkSize)
* ``adapter-stream`` S3Storage.put_file_stream from a non-seekable pipe / get_file_stream read loop
* ``boto3``          raw ``client.upload_file`` / ``download_file`` with boto3's default TransferConfig
* ``single``         one ``put_object`` / one streamed ``get_object``

Each transfer runs in a fresh child process so its peak RSS (``ru_maxrss``) is ours alone: moto keeps
objects in memory, but that is the server's RSS, not the client's.  Prints MiB/s, the ratios
adapter/boto3 (target >= 0.95) and adapter/single, and peak RSS (target < 150 MiB).

    python bench/s3_throughput.py [--mib 1024] [--download-max-mib 256] [--repeat 1] [--ops upload,download]
    (or S3_BENCH_SIZE_MIB / S3_BENCH_DOWNLOAD_MAX_MIB / S3_BENCH_REPEAT)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.s3: the same moto launcher the test suite uses

MiB = 1024 * 1024
BUCKET = "bench"
CREDS = {"accessKeyId": "AKIABENCH", "secretAccessKey": "bench-secret"}
MODES = ("adapter", "adapter-stream", "boto3", "single")


class Pipe:
    """Hides seekability: the adapter must stream part by part, as from a process's stdout."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def read(self, size: int = -1) -> bytes:
        return bytes(self._f.read(size))


def child(mode: str, op: str, endpoint: str, path: str, key: str) -> dict[str, Any]:
    """One timed transfer in this (fresh) process; returns seconds and peak RSS."""
    import boto3
    from deepforge_adapters.storage.s3 import S3Storage
    from deepforge_adapters.streams import copy_stream

    raw = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=CREDS["accessKeyId"],
        aws_secret_access_key=CREDS["secretAccessKey"],
    )
    tuning = json.loads(os.environ.get("S3_BENCH_ADAPTER_CONFIG", "{}"))  # e.g. {"maxConcurrency": 4}
    adapter = S3Storage({"endpoint": endpoint, "bucketName": BUCKET, **CREDS, **tuning})
    adapter.ensure_bucket()  # setup, not timed
    info = adapter.stat(key) if op == "download" else None
    start = time.perf_counter()
    if op == "upload":
        if mode == "adapter":
            adapter.put_file(key, path)
        elif mode == "adapter-stream":
            with open(path, "rb") as f:
                adapter.put_file_stream(key, Pipe(f))
        elif mode == "boto3":
            raw.upload_file(path, BUCKET, key)
        else:
            with open(path, "rb") as f:
                raw.put_object(Bucket=BUCKET, Key=key, Body=f)
    else:
        assert info is not None
        if mode == "adapter":
            adapter.get_file(info, path)
        elif mode == "adapter-stream":
            with adapter.get_file_stream(info) as src, open(path, "wb") as dst:
                copy_stream(src, dst)
        elif mode == "boto3":
            raw.download_file(BUCKET, key, path)
        else:
            body = raw.get_object(Bucket=BUCKET, Key=key)["Body"]
            with open(path, "wb") as dst:
                copy_stream(body, dst)
    seconds = time.perf_counter() - start
    if op == "download" and info is not None and os.path.getsize(path) != info.data["size"]:
        raise SystemExit(f"{mode} download wrote {os.path.getsize(path)} bytes, expected {info.data['size']}")
    return {"seconds": seconds, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(mode: str, op: str, endpoint: str, path: Path, key: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, op, endpoint, str(path), key],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def write_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for i in range(size // MiB):
            f.write(block[i % 251 :] + block[: i % 251])  # distinct blocks; no dedup anywhere
        f.write(block[: size % MiB])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mib",
        type=int,
        default=int(os.environ.get("S3_BENCH_SIZE_MIB", "1024")),
        help="object size in MiB (default 1024)",
    )
    parser.add_argument(
        "--download-max-mib",
        type=int,
        default=int(os.environ.get("S3_BENCH_DOWNLOAD_MAX_MIB", "256")),
        help="moto copies the whole object for every ranged GET (~2 x size per concurrent part), so downloads "
        "use min(size, this); raise it only against a server with real range reads",
    )
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("S3_BENCH_REPEAT", "1")))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--ops", default="upload,download")
    args = parser.parse_args()
    modes, ops = args.modes.split(","), args.ops.split(",")
    sizes = {"upload": args.mib, "download": min(args.mib, args.download_max_mib)}

    import boto3

    from tests.fixtures.s3 import start_moto_server

    with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp:
        work = Path(tmp)
        sources = {op: work / f"src-{op}.bin" for op in ops}
        dest = work / "dest.bin"
        for op, path in sources.items():
            write_file(path, sizes[op] * MiB)
        server = start_moto_server(work / "moto")
        raw = boto3.client(
            "s3",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id=CREDS["accessKeyId"],
            aws_secret_access_key=CREDS["secretAccessKey"],
        )
        try:
            raw.create_bucket(Bucket=BUCKET)
            raw.upload_file(str(sources[ops[0]]), BUCKET, "warm-up")  # the server's first allocation is slow
            raw.delete_object(Bucket=BUCKET, Key="warm-up")
            results: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for _ in range(args.repeat):
                for mode in modes:  # interleaved so server warm-up and drift hit every mode alike
                    key = f"obj-{mode}"
                    for op in ops:
                        if op == "download":  # untimed setup: the object to download, of the download size
                            raw.upload_file(str(sources[op]), BUCKET, key)
                        path = sources[op] if op == "upload" else dest
                        results.setdefault((mode, op), []).append(run_child(mode, op, server.url, path, key))
                        dest.unlink(missing_ok=True)
                        raw.delete_object(Bucket=BUCKET, Key=key)  # moto holds objects in memory
        finally:
            server.stop()

    print(
        f"S3 throughput, moto server on loopback, best of {args.repeat}: "
        + ", ".join(f"{op} {sizes[op]} MiB" for op in ops)
    )
    print(f"{'op':<9} {'mode':<15} {'seconds':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for (mode, op), runs in sorted(results.items(), key=lambda kv: (kv[0][1], modes.index(kv[0][0]))):
        b = best[(mode, op)] = min(runs, key=lambda r: r["seconds"])
        print(f"{op:<9} {mode:<15} {b['seconds']:>8.2f} {sizes[op] / b['seconds']:>8.1f} {b['rss_mib']:>13.1f}")
    for op in ("upload", "download"):
        a = best.get(("adapter", op))
        for base in ("boto3", "single"):
            if a and (base, op) in best:
                ratio = best[(base, op)]["seconds"] / a["seconds"]
                target = " (target >= 0.95)" if base == "boto3" else ""
                print(f"{op}: adapter/{base} throughput ratio = {ratio:.2f}{target}")
    for mode, note in (("adapter", "(target < 150 MiB)"), ("adapter-stream", "(pipe: ~ (maxConcurrency + 1) parts)")):
        peaks = [r["rss_mib"] for (m, _), runs in results.items() if m == mode for r in runs]
        if peaks:
            print(f"{mode} peak RSS = {max(peaks):.1f} MiB {note}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:7])))
    else:
        main()
