"""S3 and S3-compatible servers (MinIO, Ceph RGW) through boto3's managed transfer (s3transfer).

**Why boto3's HTTP stack and not** :func:`deepforge_adapters.http.make_session`: every S3 request is
signed (SigV4, with a payload hash), multipart uploads, ranged parallel downloads and server-side copies are
orchestrated by s3transfer, and botocore's retry modes know S3's own throttling and transient codes
(``SlowDown``, ``RequestTimeout``, 5xx, clock skew).  Rebuilding that on ``requests`` would duplicate
botocore, so this backend sets botocore's equivalents of the ``make_session`` policy instead: connect/read
timeouts, ``standard``/``adaptive`` retries with a bounded attempt count, and a connection pool as large as
the transfer concurrency.  One boto3 client per :class:`S3Storage`, built once and reused by every transfer.

**dataInfo** (DeepForge-compatible, ``s3/Client.js``): the ``head_object`` fields made JSON-serialisable
(``LastModified`` as the ISO string aws-sdk writes) plus ``filename`` (the key), ``size``, ``bucketName`` and
``endpoint``.

**Credentials are bound to the configured endpoint** (:mod:`deepforge_adapters.endpoints`): a dataInfo is
data other users write, so its ``endpoint`` never decides where this client's signed requests go.  Every
path that takes a dataInfo (``get_file``, ``get_file_stream``, ``info`` and what derives from it:
``get_metadata``, ``get_cache_key``, ``get_content_digest``; ``copy``, ``delete_file``, ``get_download_url``;
hence the worker cache and the runner) refuses one that names another endpoint, before any request, with
:class:`~deepforge_adapters.endpoints.EndpointMismatchError` naming both.
"Same endpoint" is the same scheme, host, port and path, or the virtual-host form ``<bucket>.<host>`` of it;
for a client without an endpoint (AWS) the global ``s3.amazonaws.com`` (what DeepForge records) or the
region's own S3 host.  The dataInfo's ``bucketName`` and ``filename`` are checked too (no ARNs, ``@``, ``..``
or ``.`` segments) so neither can steer botocore to another host, and a ``before-sign`` hook on the client
refuses to sign any request whose URL is not on the configured endpoint (AWS: an AWS S3 host).  There is
no anonymous fallback for foreign endpoints: the server would fetch any URL a model names (SSRF) and copy
its bytes into the real bucket.

A read names the ``ETag`` it expects (``If-Match``; the ``VersionId`` when present), so an object
overwritten after its dataInfo was recorded fails loudly (:class:`IntegrityError`) instead of feeding a job
different bytes than its provenance says; the error names the bucket and key and says when the key was
overwritten and what it holds now.  A dataInfo that records no ``ETag`` (DeepForge's reads are never pinned)
reads as DeepForge reads it: whatever the key holds now, described by one ``HeadObject``.

**Memory budget**: an upload from a stream (a pipe) buffers at most ``min(maxConcurrency, 4)`` parts of
``chunkSize`` bytes (s3transfer reads each part into memory before sending it, and botocore holds about one
more copy of each part in flight): with the defaults (10 x 8 MiB) 32 MiB.  A download runs at most
``min(maxConcurrency, 8)`` ranged GETs of ``chunkSize`` bytes at once, each writing its part into the file as
it reads it (:mod:`.s3_ranged`), so it holds one 256 KiB chunk per thread whatever the object's size.  A 1 GiB
transfer peaks under 128 MiB RSS from a pipe, ~64 MiB downloading (``bench/s3_throughput.py``; botocore's
models are most of it). Files (``put_file``, or ``put_file_stream``
of a regular file at offset 0) are uploaded by path and read lazily, part by part, in the sending threads:
nothing is buffered, so all ``maxConcurrency`` parts are in flight.

**Cache key**: the base's format, ``s3/<h[:2]>/<h[2:]>`` with ``h`` the sha256 of (endpoint, bucket, key,
ETag, VersionId): a new upload to the same key gets a new key in the worker cache (DeepForge keyed by path
and served stale bytes).

**Integrity**: the byte count of every download is checked against ``ContentLength``; botocore validates a
full-object checksum (CRC32, SHA256, ...) when the server returns one; :meth:`S3Storage.info`
offers the ETag as an MD5 only for single-part, non-KMS objects (a multipart ETag is not an MD5).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, NoReturn, cast
from urllib.parse import urlsplit

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from s3transfer.exceptions import RetriesExceededError
from s3transfer.subscribers import BaseSubscriber

from ..config import ConfigSchema, Field
from ..endpoints import BadEndpointError, Endpoint, parse_endpoint, refusal, require_endpoint, require_within
from ..errors import ConfigError, DataInfoError, DeepForgeError, IntegrityError, NotFoundError, StorageError
from ..secrets import redact
from ..streams import ProgressCallback, ProgressReader, Readable, atomic_write
from .base import DataInfo, ObjectInfo, StorageClient
from .s3_ranged import RangeMismatchError, download_ranges

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from s3transfer.futures import TransferFuture
    from s3transfer.manager import TransferManager

log = logging.getLogger(__name__)

MiB = 1024 * 1024
#: What DeepForge records as ``endpoint`` when none is configured (``s3/Client.js``).
AWS_ENDPOINT = "https://s3.amazonaws.com"
MIN_PART_SIZE = 5 * MiB  # S3 rejects smaller parts (except the last)
MAX_PART_SIZE = 5 * 1024 * MiB
DELETE_BATCH = 1000  # the most keys one DeleteObjects request accepts
#: Parts buffered in memory by a stream upload (see above).
BUFFERED_PARTS = 4
#: Parallel ranged GETs of one download, at most (:mod:`.s3_ranged`; each holds one 256 KiB chunk).
DOWNLOAD_THREADS = 8
#: Hosts of AWS S3 itself that botocore signs for when no endpoint is configured: ``s3.amazonaws.com``,
#: ``s3.<region>.amazonaws.com`` (after a region redirect too), dual-stack/FIPS/access-point forms, each
#: optionally behind a bucket label (virtual-host addressing).  Only used by the before-sign guard.
AWS_S3_HOST = re.compile(
    r"(?:[a-z0-9][a-z0-9.-]*\.)?s3(?:[.-](?:accesspoint|dualstack|fips|[a-z]{2}(?:-[a-z]+)+-\d+))*"
    r"\.amazonaws\.com(?:\.cn)?"
)
#: A bucket a dataInfo may name: S3's (legacy, generous) name rules, no ARN, no ``@``/``:``/``/``, no ``..``.
BUCKET_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.))*[A-Za-z0-9]")

#: head_object fields copied into a dataInfo (DeepForge stored the whole headObject response).
HEAD_FIELDS = (
    "AcceptRanges",
    "LastModified",
    "ContentLength",
    "ETag",
    "VersionId",
    "ContentType",
    "ContentEncoding",
    "Metadata",
    "StorageClass",
    "ServerSideEncryption",
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
    "ChecksumType",
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchVersion"})
HINTS = {
    "InvalidAccessKeyId": "the access key id is not known to the server; check accessKeyId",
    "SignatureDoesNotMatch": "the secret key does not match the access key id; check secretAccessKey",
    "AccessDenied": "the credentials are valid but lack permission for this operation",
    "SlowDown": "the server is throttling requests; retries were exhausted",
    "PreconditionFailed": "the object changed since this dataInfo was recorded (ETag differs)",
    "ExpiredToken": "the session token has expired; get new temporary credentials",
    "InvalidToken": "the session token is not valid; get new temporary credentials",
}
#: With a sessionToken, these codes mean the temporary credentials are no longer (or never were) valid.
SESSION_CODES = frozenset({"InvalidAccessKeyId", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"})
SESSION_HINT = (
    "temporary credentials (sessionToken): expired or not issued by this server; get new ones "
    "(accessKeyId, secretAccessKey and sessionToken together)"
)


def iso_timestamp(value: datetime) -> str:
    """``2021-03-04T05:06:07.000Z``: what ``JSON.stringify(new Date())`` writes, as in DeepForge's dataInfos."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def normalize_endpoint(url: str) -> str:
    """Scheme and host lower-cased, default port and trailing slash dropped: equal strings, same server."""
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "https").lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def is_aws(url: str | None) -> bool:
    """AWS S3 itself (any ``*.amazonaws.com`` host), where boto3 resolves regions and endpoints."""
    if not url:
        return True
    host = (urlsplit(url).hostname or "").lower()
    return host == "amazonaws.com" or host.endswith(".amazonaws.com")


def aws_endpoints(region: str) -> tuple[Endpoint, ...]:
    """The spellings of "AWS S3 for ``region``" a dataInfo may record: the global host first (DeepForge's)."""
    hosts = (
        "s3.amazonaws.com",
        f"s3.{region}.amazonaws.com",
        f"s3-{region}.amazonaws.com",
        f"s3.dualstack.{region}.amazonaws.com",
    )
    return tuple(Endpoint("https", host, 443, "") for host in hosts)


def check_key(key: object, what: str) -> str:
    """An object key: a non-empty string without control characters or ``.``/``..`` segments.

    Dot segments are refused because proxies and some servers collapse them (``a/../../other-bucket/k``);
    no key we or DeepForge write has one.  ``what`` names the field in the :class:`DataInfoError`.
    """
    if not isinstance(key, str) or not key.strip("/"):
        raise DataInfoError(f"{what} must be a non-empty string, got {key!r:.80}")
    if any(not c.isprintable() for c in key):
        raise DataInfoError(f"{what} {key!r:.80} contains control characters")
    if any(part in (".", "..") for part in key.split("/")):
        raise DataInfoError(f"{what} {key!r:.80} has '.' or '..' segments")
    return key


def check_bucket(bucket: object, what: str) -> str:
    """A bucket name that cannot steer botocore elsewhere (an ARN is routed to another host)."""
    if not isinstance(bucket, str) or not 3 <= len(bucket) <= 255 or not BUCKET_NAME.fullmatch(bucket):
        raise DataInfoError(
            f"{what} {bucket!r:.80} is not a bucket name (letters, digits, '.', '-', '_'; no ARN, '@', '..')"
        )
    return bucket


@dataclass(frozen=True)
class Location:
    """Where a dataInfo points: the object plus the identity it had when the dataInfo was written."""

    endpoint: str
    bucket: str
    key: str
    etag: str | None
    version_id: str | None
    #: ``LastModified`` as the dataInfo recorded it (for the message when the object changed since).
    modified: str | None = None

    def object_args(self) -> dict[str, Any]:
        """``Bucket``/``Key`` plus ``VersionId`` when the dataInfo pins one."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            args["VersionId"] = self.version_id
        return args

    def conditional_args(self) -> dict[str, Any]:
        """:meth:`object_args` plus ``IfMatch`` so a changed object is refused rather than read."""
        args = self.object_args()
        if self.etag and not self.version_id:
            args["IfMatch"] = self.etag
        return args


class TransferProgress(BaseSubscriber):
    """Turns s3transfer's per-thread byte increments into our ``progress(done, total)`` calls."""

    def __init__(self, progress: ProgressCallback | None, total: int | None) -> None:
        self._progress = progress
        self.total = total
        self.done = 0
        self._reported: int | None = None
        self._lock = threading.Lock()

    def on_progress(self, future: TransferFuture, bytes_transferred: int, **kwargs: Any) -> None:
        self.add(bytes_transferred)

    def add(self, bytes_transferred: int) -> None:
        """Count ``bytes_transferred`` more (from any thread) and report the new total."""
        with self._lock:  # serialised so the callback sees a monotonic-ish sequence from many threads
            self.done += bytes_transferred  # negative when s3transfer rewinds a retried part
            self._report()

    def finish(self) -> None:
        with self._lock:
            if self._reported != self.done or self.done == 0:
                self._report()

    def _report(self) -> None:
        self._reported = self.done
        if self._progress is not None:
            self._progress(max(self.done, 0), self.total)


class S3ObjectReader(io.RawIOBase):
    """A readable over a GetObject body: streams, counts bytes, and checks the count at EOF."""

    def __init__(self, body: Any, expected: int | None, fail: Callable[[Exception], NoReturn]) -> None:
        super().__init__()
        self._body = body
        self._expected = expected
        self._fail = fail
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        whole = size is None or size < 0
        try:
            data: bytes = self._body.read(None if whole else size)
        except Exception as exc:  # botocore/urllib3 errors surface here, mid-stream
            self._fail(exc)
        self.bytes_read += len(data)
        if whole or (not data and size != 0):
            self._check_complete()
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _check_complete(self) -> None:
        if self._expected is not None and self.bytes_read != self._expected:
            self._fail(IncompleteReadError(actual_bytes=self.bytes_read, expected_bytes=self._expected))

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Storage(StorageClient):
    """Artifacts as objects ``<bucketName>/<name>`` on AWS S3 or an S3-compatible server."""

    id = "s3"
    name = "S3 Storage"
    schema = ConfigSchema(
        "s3",
        (
            Field(
                "endpoint",
                "Endpoint",
                "URL of the S3 server (e.g. http://minio:9000); empty for AWS S3",
                env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
                binds_secrets=True,
            ),
            Field(
                "accessKeyId",
                "Access Key ID",
                "Empty: the standard AWS chain (AWS_ACCESS_KEY_ID, profile, instance role)",
                is_auth=True,
            ),
            Field("secretAccessKey", "Secret Access Key", "Secret for the access key id", is_auth=True),
            Field("sessionToken", "Session Token", "Only for temporary (STS) credentials", is_auth=True),
            Field("bucketName", "Bucket", "Bucket that holds the artifacts (created if missing)", default="deepforge"),
            Field("region", "Region", "Empty: from AWS_REGION / the profile, else us-east-1", env=("AWS_REGION",)),
            Field("profile", "AWS Profile", "Named profile from ~/.aws when no keys are given"),
            Field(
                "addressingStyle",
                "Addressing Style",
                "auto: path-style for non-AWS endpoints, boto3's choice for AWS",
                default="auto",
                choices=("auto", "path", "virtual"),
            ),
            Field("verifyTLS", "Verify TLS", "Check the server's TLS certificate", "boolean", default=True),
            Field("caBundle", "CA Bundle", "Path to a CA bundle for a private certificate authority"),
            Field(
                "maxConcurrency",
                "Max Concurrency",
                "Parallel part requests per transfer; memory budget = maxConcurrency x chunkSize",
                "integer",
                default=10,
                minimum=1,
            ),
            Field(
                "chunkSize",
                "Chunk Size",
                "Multipart part size and threshold in bytes (min 5 MiB)",
                "integer",
                default=8 * MiB,
                minimum=MIN_PART_SIZE,
            ),
            Field(
                "retryMode",
                "Retry Mode",
                "botocore retry mode",
                default="standard",
                choices=("standard", "adaptive"),
            ),
            Field("maxAttempts", "Max Attempts", "Attempts per request, first included", "integer", 5, minimum=1),
            Field("connectTimeout", "Connect Timeout", "Seconds", "float", 10.0, minimum=0.1),
            Field("readTimeout", "Read Timeout", "Seconds without a byte before a retry", "float", 60.0, minimum=0.1),
            Field(
                "requestChecksums",
                "Request Checksums",
                "when_required for old S3-compatible servers that reject botocore's default CRC32 trailers",
                default="when_supported",
                choices=("when_supported", "when_required"),
            ),
            Field(
                "urlExpiry", "URL Expiry", "Seconds a pre-signed download URL stays valid", "integer", 3600, minimum=1
            ),
        ),
    )

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if bool(cfg["accessKeyId"]) != bool(cfg["secretAccessKey"]):
            missing = "secretAccessKey" if cfg["accessKeyId"] else "accessKeyId"
            raise ConfigError(self.id, missing, "accessKeyId and secretAccessKey must be given together")
        if cfg["chunkSize"] > MAX_PART_SIZE:
            raise ConfigError(self.id, "chunkSize", f"must be <= {MAX_PART_SIZE} (S3's largest part)")
        endpoint = cfg["endpoint"] or None
        if endpoint is not None:
            try:
                parse_endpoint(endpoint)
            except BadEndpointError as exc:
                raise ConfigError(self.id, "endpoint", f"must be a plain http(s) URL: {exc}") from None
        self.bucket: str = cfg["bucketName"]
        #: What dataInfos record and what routing compares against.
        self.endpoint: str = normalize_endpoint(endpoint) if endpoint else AWS_ENDPOINT
        self._session = boto3.session.Session(
            aws_access_key_id=cfg["accessKeyId"] or None,
            aws_secret_access_key=cfg["secretAccessKey"] or None,
            aws_session_token=cfg["sessionToken"] or None,
            profile_name=cfg["profile"] or None,
            region_name=cfg["region"] or None,
        )
        self._ready_buckets: set[str] = set()
        self.transfer_config = self._transfer_config()
        #: For non-seekable sources: s3transfer buffers each part, so fewer of them (BUFFERED_PARTS).
        self.stream_transfer_config = self._transfer_config(buffered_uploads=True)
        #: AWS S3 itself: boto3 resolves the host from the region (an AWS endpoint URL in the config too).
        self._aws = is_aws(endpoint)
        region = cfg["region"] or self._session.region_name or "us-east-1"
        #: Where this client's credentials may go: the configured endpoint first, then its other spellings.
        self._bound: tuple[Endpoint, ...] = (
            *((parse_endpoint(endpoint),) if endpoint else ()),
            *(aws_endpoints(region) if self._aws else ()),
        )
        self.client: S3Client = self._make_client(None if self._aws else endpoint)
        self._virtual = self._addressing_style(self._aws) == "virtual"
        self.client.meta.events.register("before-sign.s3", self._guard_request)

    # ------------------------------------------------------------------------------------ clients
    def _transfer_config(self, buffered_uploads: bool = False) -> TransferConfig:
        """s3transfer's settings for uploads and copies (downloads are :mod:`.s3_ranged`'s)."""
        concurrency, chunk = self.config["maxConcurrency"], self.config["chunkSize"]
        tc = TransferConfig(
            multipart_threshold=chunk,
            multipart_chunksize=chunk,
            max_concurrency=concurrency,
            preferred_transfer_client="classic",  # CRT ignores the memory budget below
        )
        # The explicit budget: s3transfer holds this many parts of an upload in memory.
        tc.max_in_memory_upload_chunks = min(concurrency, BUFFERED_PARTS) if buffered_uploads else concurrency
        return tc

    def _guard_request(self, request: Any, **kwargs: Any) -> None:
        """botocore ``before-sign``: never sign a request for another host than the configured endpoint's.

        :meth:`locate` already refused foreign dataInfos; this is the last line, for what botocore itself
        derives (a bucket ARN routed to an access-point host, a region redirect, a virtual-host bucket).
        """
        url = str(request.url)
        what = f"a signed {kwargs.get('operation_name') or 'S3'} request to"
        if not self._aws:
            require_within(self.id, what, url, self._bound[:1], any_subdomain=self._virtual)
            return
        parts = urlsplit(url)
        netloc = parts.netloc.lower().removesuffix(":443")
        if parts.scheme == "https" and AWS_S3_HOST.fullmatch(netloc):  # no user info, no other port
            return
        raise refusal(self.id, what, url.partition("?")[0], self._bound[0], "is not an AWS S3 host")

    def _addressing_style(self, aws: bool) -> Literal["auto", "virtual", "path"]:
        """``addressingStyle`` with ``auto`` resolved: boto3's choice for AWS, path-style anywhere else."""
        style = cast('Literal["auto", "virtual", "path"]', self.config["addressingStyle"])
        return ("auto" if aws else "path") if style == "auto" else style

    def _make_client(self, endpoint_url: str | None) -> S3Client:
        cfg = self.config
        style = self._addressing_style(is_aws(endpoint_url))
        region = cfg["region"] or self._session.region_name or ("us-east-1" if endpoint_url else None)
        botocore_config = BotoConfig(
            region_name=region,
            signature_version="s3v4",
            # total_max_attempts counts the first try; botocore's "max_attempts" would count retries only.
            retries={"mode": cfg["retryMode"], "total_max_attempts": cfg["maxAttempts"]},
            connect_timeout=cfg["connectTimeout"],
            read_timeout=cfg["readTimeout"],
            max_pool_connections=max(10, cfg["maxConcurrency"] + 2),
            tcp_keepalive=True,
            s3={"addressing_style": style},
            request_checksum_calculation=cfg["requestChecksums"],
            response_checksum_validation="when_supported",
        )
        verify: bool | str = cfg["caBundle"] or bool(cfg["verifyTLS"])
        log.debug("s3: client for %s (addressing %s, region %s)", endpoint_url or "AWS", style, region)
        return self._session.client("s3", endpoint_url=endpoint_url, verify=verify, config=botocore_config)

    # ------------------------------------------------------------------------------------ dataInfo
    def locate(self, data_info: DataInfo) -> Location:
        """Parse an s3 dataInfo (ours or DeepForge's) into bucket, key and expected identity.

        Refuses (before any request) a dataInfo whose ``endpoint`` is not this client's (see the module
        docstring) and a ``bucketName``/``filename`` that could steer a request elsewhere.  A dataInfo
        without an ``endpoint`` (older DeepForge ones) means the configured endpoint.
        """
        self.check_data_info(data_info)
        data = data_info.data
        if not isinstance(data, Mapping):
            raise DataInfoError(f"s3 dataInfo 'data' must be an object, got {type(data).__name__}")
        if data.get("filename") is None:
            raise DataInfoError(f"s3 dataInfo has no 'filename' (the object key): {redact(repr(dict(data)))[:200]}")
        bucket = data.get("bucketName") or self.bucket
        if bucket != self.bucket:  # the configured bucket is the operator's choice; one from a dataInfo is not
            check_bucket(bucket, "s3 dataInfo 'bucketName'")
        endpoint = data.get("endpoint")
        if endpoint is not None and endpoint != "":
            require_endpoint(self.id, "the dataInfo's 'endpoint'", endpoint, self._bound, subdomain=str(bucket))
        key = check_key(data.get("filename"), "s3 dataInfo 'filename' (the object key)")
        version = data.get("VersionId")
        return Location(
            endpoint=self.endpoint,
            bucket=str(bucket),
            key=key,
            etag=data.get("ETag") or None,
            version_id=str(version) if version and version != "null" else None,
            modified=str(data["LastModified"]) if data.get("LastModified") else None,
        )

    def _data_info(self, key: str, head: Mapping[str, Any], bucket: str | None = None) -> DataInfo:
        data: dict[str, Any] = {}
        for name in HEAD_FIELDS:
            if name in head and head[name] is not None:
                value = head[name]
                data[name] = iso_timestamp(value) if isinstance(value, datetime) else value
        data.update(filename=key, size=int(head["ContentLength"]), bucketName=bucket or self.bucket)
        data["endpoint"] = self.endpoint
        return DataInfo(self.id, data)

    # ------------------------------------------------------------------------------------ errors
    def _raise(self, exc: BaseException, op: str, bucket: str, key: str | None, endpoint: str) -> NoReturn:
        """Re-raise ``exc`` as our error naming the operation, bucket, key, endpoint and S3 error code."""
        if isinstance(exc, DeepForgeError):
            raise exc
        where = f"bucket {bucket!r}" + (f", key {key!r}" if key else "") + f" at {endpoint}"
        name = f"{bucket}/{key}" if key else bucket
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code") or status or "Unknown")
            detail = error.get("Message") or ""
            if code == "404" and status == 404:
                code = "NoSuchKey" if key else "NoSuchBucket"
            if code in ("412", "PreconditionFailed"):
                code = "PreconditionFailed"
            text = f"{op} failed: {code} (HTTP {status}){': ' + detail if detail else ''}; {where}"
            hint = SESSION_HINT if code in SESSION_CODES and self.config["sessionToken"] else HINTS.get(code)
            text = redact(f"{text} ({hint})" if hint else text)
            if code in NOT_FOUND_CODES:
                raise NotFoundError(self.id, text, name) from None
            if code == "PreconditionFailed":
                raise IntegrityError(self.id, text, name) from None
            raise StorageError(self.id, text, name) from None
        if isinstance(exc, FlexibleChecksumError | IncompleteReadError | RangeMismatchError):
            raise IntegrityError(self.id, redact(f"{op}: {exc}; {where}"), name) from None
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            raise StorageError(
                self.id,
                f"{op}: no usable AWS credentials ({type(exc).__name__}); set accessKeyId and "
                f"secretAccessKey, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a profile; {where}",
                name,
            ) from None
        if isinstance(exc, BotoConnectionError):
            raise StorageError(self.id, redact(f"{op}: cannot reach the server: {exc}; {where}"), name) from None
        if isinstance(exc, BotoCoreError | RetriesExceededError):
            raise StorageError(self.id, redact(f"{op} failed: {exc}; {where}"), name) from None
        raise StorageError(self.id, redact(f"{op} failed: {type(exc).__name__}: {exc}; {where}"), name) from exc

    def _raise_read(self, exc: BaseException, op: str, loc: Location) -> NoReturn:
        """:meth:`_raise` for a read pinned to ``loc``'s ETag/VersionId (see :meth:`_check_changed`)."""
        self._check_changed(exc, op, loc)
        self._raise(exc, op, loc.bucket, loc.key, loc.endpoint)

    def _check_changed(self, exc: BaseException, op: str, loc: Location) -> None:
        """A read pinned to ``loc``'s ETag/VersionId that the server refused (HTTP 412) raises an
        :class:`IntegrityError` saying which object changed, when, and what its key holds now (one
        ``HeadObject``); any other error returns."""
        if (loc.etag or loc.version_id) and _precondition_failed(exc):
            raise IntegrityError(self.id, self._changed_message(op, loc), f"{loc.bucket}/{loc.key}") from None

    def _changed_message(self, op: str, loc: Location) -> str:
        recorded = f"ETag {loc.etag}" if loc.etag else f"VersionId {loc.version_id}"
        recorded += f", last modified {loc.modified}" if loc.modified else ""
        try:
            head = self.client.head_object(Bucket=loc.bucket, Key=loc.key)
            modified = head.get("LastModified")
            when = iso_timestamp(modified) if isinstance(modified, datetime) else str(modified or "at an unknown time")
            now = f"was overwritten at {when}; it now holds ETag {head.get('ETag')}, {head.get('ContentLength')} bytes"
        except ClientError as exc:
            gone = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404
            now = "was deleted" if gone else f"changed (HeadObject: {exc.response.get('Error', {}).get('Code')})"
        except BotoCoreError as exc:
            now = f"changed (HeadObject: {exc})"
        return redact(
            f"{op}: the artifact at bucket {loc.bucket!r}, key {loc.key!r} ({loc.endpoint}) changed after this "
            f"dataInfo was recorded: the key {now}, the dataInfo names {recorded}.  The bytes it names are no "
            "longer stored there (PreconditionFailed, HTTP 412); re-run the job that produced them"
        )

    def _describe_current(self, loc: Location, data: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` completed with what the key holds now: a dataInfo without an ETag reads as DeepForge reads it."""
        head = self._head(loc, self.client, conditional=False)
        current = self._data_info(loc.key, head, loc.bucket).data
        log.info(
            "s3 dataInfo for %s/%s records no ETag: reading what the key holds now (ETag %s, last modified %s), "
            "as DeepForge does",
            loc.bucket,
            loc.key,
            current.get("ETag"),
            current.get("LastModified"),
        )
        fields = ("ETag", "VersionId", "LastModified", "ContentLength", "size")
        return {**data, **{k: current[k] for k in fields if k in current}}

    # ------------------------------------------------------------------------------------ buckets
    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing, once per client instance (DeepForge tried on every upload)."""
        client = self.client
        bucket = self.bucket
        slot = bucket
        if slot in self._ready_buckets:
            return
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                # Exists but we may not list it; writes may still be allowed, so let them decide.
                log.debug("s3: bucket %s: HeadBucket denied; assuming it exists", bucket)
            elif status == 404:
                self._create_bucket(client, bucket)
            else:
                self._raise(exc, "HeadBucket", bucket, None, self.endpoint)
        except BotoCoreError as exc:
            self._raise(exc, "HeadBucket", bucket, None, self.endpoint)
        self._ready_buckets.add(slot)

    def _create_bucket(self, client: S3Client, bucket: str) -> None:
        region = client.meta.region_name
        args: dict[str, Any] = {"Bucket": bucket}
        if region and region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(**args)
            log.info("s3: created bucket %s at %s", bucket, self.endpoint)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                self._raise(exc, "CreateBucket", bucket, None, self.endpoint)

    # ------------------------------------------------------------------------------------ transfers
    def _transfer(
        self,
        client: S3Client,
        submit: Callable[[TransferManager, list[BaseSubscriber]], TransferFuture],
        progress: ProgressCallback | None,
        total: int | None,
        config: TransferConfig | None = None,
    ) -> None:
        """Run one s3transfer transfer to completion (with ``config``, default :attr:`transfer_config`).

        The progress subscriber is attached only when someone listens: with one, s3transfer calls back for
        every few KiB sent from every thread, which costs ~30% throughput on a fast link.
        """
        reporter = TransferProgress(progress, total) if progress is not None else None
        subscribers: list[BaseSubscriber] = [reporter] if reporter is not None else []
        # A failed transfer runs s3transfer's cleanups (AbortMultipartUpload) before result() raises.
        with create_transfer_manager(client, config or self.transfer_config) as manager:
            submit(manager, subscribers).result()
        if reporter is not None:
            reporter.finish()

    def _head(self, loc: Location, client: S3Client, conditional: bool = True) -> dict[str, Any]:
        args = loc.conditional_args() if conditional else loc.object_args()
        try:
            return cast("dict[str, Any]", client.head_object(ChecksumMode="ENABLED", **args))
        except ClientError as exc:
            if conditional:
                self._check_changed(exc, "HeadObject", loc)
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                self._raise_missing(exc, loc, client, "HeadObject")
            self._raise(exc, "HeadObject", loc.bucket, loc.key, loc.endpoint)
        except BotoCoreError as exc:
            self._raise(exc, "HeadObject", loc.bucket, loc.key, loc.endpoint)

    def _raise_missing(self, exc: ClientError, loc: Location, client: S3Client, op: str) -> NoReturn:
        """A HEAD 404 has no error code (and SeaweedFS answers a GET in a missing bucket with NoSuchKey): ask
        the bucket, so the message says which of the two is missing."""
        try:
            client.head_bucket(Bucket=loc.bucket)
        except ClientError as bucket_exc:
            if bucket_exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise NotFoundError(
                    self.id,
                    f"{op} failed: NoSuchBucket: bucket {loc.bucket!r} does not exist at "
                    f"{loc.endpoint} (key {loc.key!r})",
                    f"{loc.bucket}/{loc.key}",
                ) from None
        except BotoCoreError:
            pass
        self._raise(exc, op, loc.bucket, loc.key, loc.endpoint)

    # ------------------------------------------------------------------------------------ primitives
    def stat(self, name: str) -> DataInfo:
        key = self._key(name)
        loc = Location(self.endpoint, self.bucket, key, None, None)
        return self._data_info(key, self._head(loc, self.client))

    def get_file_stream(self, data_info: DataInfo) -> BinaryIO:
        loc = self.locate(data_info)
        client = self.client

        def fail(exc: Exception) -> NoReturn:
            self._raise_read(exc, "GetObject", loc)

        try:
            response = client.get_object(ChecksumMode="ENABLED", **loc.conditional_args())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                self._raise_missing(exc, loc, client, "GetObject")
            fail(exc)
        except BotoCoreError as exc:
            fail(exc)
        return cast(BinaryIO, S3ObjectReader(response["Body"], response.get("ContentLength"), fail))

    def get_file(
        self, data_info: DataInfo, dest_path: str | os.PathLike[str], progress: ProgressCallback | None = None
    ) -> Path:
        """Parallel ranged download (:mod:`.s3_ranged`, each part written where it belongs) into a temp file
        renamed into place when complete."""
        loc = self.locate(data_info)
        client = self.client
        head = self._head(loc, client)
        size = int(head["ContentLength"])
        args = loc.conditional_args()
        if "VersionId" not in args and head.get("ETag"):
            args["IfMatch"] = head["ETag"]  # every range from the object the HEAD saw: an overwrite mid-way fails
        reporter = TransferProgress(progress, size) if progress is not None else None
        with atomic_write(dest_path) as f:
            try:
                download_ranges(
                    client,
                    args,
                    f.fileno(),
                    size,
                    part_size=self.config["chunkSize"],
                    threads=min(self.config["maxConcurrency"], DOWNLOAD_THREADS),
                    progress=reporter.add if reporter is not None else None,
                )
            except Exception as exc:
                self._raise_read(exc, "download", loc)
            if reporter is not None:
                reporter.finish()
            f.flush()
            written = os.fstat(f.fileno()).st_size
            if written != size:
                raise IntegrityError(
                    self.id,
                    f"download of bucket {loc.bucket!r}, key {loc.key!r} at {loc.endpoint} got {written} bytes, "
                    f"expected ContentLength {size}",
                    f"{loc.bucket}/{loc.key}",
                )
        return Path(dest_path)

    def put_file_stream(
        self, name: str, readable: Readable, progress: ProgressCallback | None = None, size: int | None = None
    ) -> DataInfo:
        """Managed upload from any readable; non-seekable ones are read one part at a time, never whole.

        A readable that is a regular file opened at its start is uploaded by path instead: s3transfer then
        reads each part lazily in its sending thread rather than buffering up to ``maxConcurrency`` parts
        (the runner uploads outputs from open files; this keeps its peak memory near the interpreter's).
        """
        path = _regular_file_path(readable)
        if path is not None:
            return self._upload(name, path, progress, size if size is not None else os.path.getsize(path))
        if size is None:
            size = _remaining(readable)
        return self._upload(name, readable, progress, size)

    def put_file(self, name: str, path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> DataInfo:
        """Upload by filename: s3transfer then reads each part in its worker thread (as ``upload_file``)."""
        return self._upload(name, os.fspath(path), progress, os.path.getsize(path))

    def _upload(
        self, name: str, source: Readable | str, progress: ProgressCallback | None, size: int | None
    ) -> DataInfo:
        key = self._key(name)
        self.ensure_bucket()
        # A pipe's length is known only once read: count what s3transfer pulls (one call per part).
        counter = ProgressReader(source, None) if not isinstance(source, str) and _remaining(source) is None else None
        body = counter if counter is not None else source
        try:
            self._transfer(
                self.client,
                lambda m, subs: m.upload(cast("IO[bytes] | str", body), self.bucket, key, subscribers=subs),
                progress,
                size,
                config=self.transfer_config if isinstance(source, str) else self.stream_transfer_config,
            )
        except Exception as exc:
            self._raise(exc, "upload", self.bucket, key, self.endpoint)
        moved = counter.bytes_read if counter is not None else size
        info = self.stat(name)
        stored = info.data["size"]
        if (size is not None and stored != size) or (moved is not None and stored != moved):
            self.delete_file(info)  # never leave an artifact that is not what the caller meant to store
            raise IntegrityError(
                self.id,
                f"upload of bucket {self.bucket!r}, key {key!r}: server has {stored} bytes, sent {moved}"
                + (f", expected {size}" if size is not None else ""),
                name,
            )
        log.debug("s3: uploaded %s bytes to %s/%s", stored, self.bucket, key)
        return info

    def delete_file(self, data_info: DataInfo) -> None:
        loc = self.locate(data_info)
        try:
            self.client.delete_object(Bucket=loc.bucket, Key=loc.key)
        except (ClientError, BotoCoreError) as exc:
            self._raise(exc, "DeleteObject", loc.bucket, loc.key, loc.endpoint)

    def delete_dir(self, prefix: str) -> None:
        """Delete every key under ``prefix/``, 1000 per DeleteObjects request, across all listing pages."""
        stripped = prefix.strip("/")
        if not stripped:
            raise StorageError(self.id, "refusing to delete_dir an empty prefix (the whole bucket)", prefix)
        dir_prefix = stripped + "/"
        batch: list[str] = []
        failures: list[str] = []
        deleted = 0

        def flush() -> None:
            nonlocal deleted
            if not batch:
                return
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                self._raise(exc, "DeleteObjects", self.bucket, dir_prefix, self.endpoint)
            errors = response.get("Errors", [])
            failures.extend(f"{e.get('Key')!r} ({e.get('Code')}: {e.get('Message', '')})" for e in errors)
            deleted += len(batch) - len(errors)
            batch.clear()

        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=dir_prefix):
                for obj in page.get("Contents", []):
                    batch.append(obj["Key"])
                    if len(batch) == DELETE_BATCH:
                        flush()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
                log.debug("s3: delete_dir %s: bucket %s does not exist; nothing to delete", dir_prefix, self.bucket)
                return
            self._raise(exc, "ListObjectsV2", self.bucket, dir_prefix, self.endpoint)
        except BotoCoreError as exc:
            self._raise(exc, "ListObjectsV2", self.bucket, dir_prefix, self.endpoint)
        flush()
        if failures:
            shown = "; ".join(failures[:10]) + (f"; ... {len(failures) - 10} more" if len(failures) > 10 else "")
            raise StorageError(
                self.id,
                redact(
                    f"delete_dir: {len(failures)} keys under {dir_prefix!r} in bucket {self.bucket!r} "
                    f"not deleted ({deleted} deleted): {shown}"
                ),
                dir_prefix,
            )
        log.debug("s3: deleted %d keys under %s/%s", deleted, self.bucket, dir_prefix)

    def info(self, data_info: DataInfo) -> ObjectInfo:
        """From the dataInfo alone (no request), like DeepForge's ``getMetadata``; :meth:`locate` first.

        Digest: the ETag as MD5 only when it is one (single-part, no ``-N``, not SSE-KMS/SSE-C encrypted).
        Version: endpoint, bucket, key, ETag and VersionId, so a new upload to the same key is a new cache
        entry; none without an ETag.  Metadata: what S3 told us at stat time (etag, versionId, ...).
        """
        loc = self.locate(data_info)
        data = data_info.data
        if not loc.etag:  # nothing pins the read (DeepForge's are never pinned): describe what the key holds now
            data = self._describe_current(loc, data)
            loc = Location(loc.endpoint, loc.bucket, loc.key, data.get("ETag") or None, loc.version_id, loc.modified)
        size = self._size_hint(DataInfo(self.id, data))
        if size is None:
            raise DataInfoError(f"s3 dataInfo for {loc.bucket}/{loc.key} records no size/ContentLength")
        meta: dict[str, Any] = {"bucketName": loc.bucket, "filename": loc.key, "endpoint": loc.endpoint}
        for name, out in (
            ("ETag", "etag"),
            ("VersionId", "versionId"),
            ("LastModified", "lastModified"),
            ("ContentType", "contentType"),
        ):
            if data.get(name) is not None:
                meta[out] = data[name]
        etag = str(loc.etag or "").strip('"').lower()
        encrypted = data.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") or data.get("SSECustomerAlgorithm")
        md5 = len(etag) == 32 and all(c in "0123456789abcdef" for c in etag) and not encrypted
        version = json.dumps([loc.endpoint, loc.bucket, loc.key, loc.etag, loc.version_id]) if loc.etag else None
        return ObjectInfo(size, ("md5", etag) if md5 else None, version, meta)

    # ------------------------------------------------------------------------------------ better defaults
    def copy(self, data_info: DataInfo, name: str, progress: ProgressCallback | None = None) -> DataInfo:
        """Server-side copy (multipart copy when large); a source on another endpoint is refused by locate."""
        loc = self.locate(data_info)
        key = self._key(name)
        self.ensure_bucket()
        source: dict[str, Any] = loc.object_args()
        extra = {"CopySourceIfMatch": loc.etag} if loc.etag and not loc.version_id else {}
        try:
            self._transfer(
                self.client,
                lambda m, subs: m.copy(source, self.bucket, key, extra_args=extra, subscribers=subs),
                progress,
                self._size_hint(data_info),
            )
        except Exception as exc:
            self._raise_read(exc, "copy", loc)
        return self.stat(name)

    def get_download_url(self, data_info: DataInfo) -> str | None:
        """A pre-signed GET URL (``urlExpiry`` seconds) for the exact version the dataInfo names."""
        loc = self.locate(data_info)
        try:
            return self.client.generate_presigned_url(
                "get_object", Params=loc.object_args(), ExpiresIn=self.config["urlExpiry"]
            )
        except BotoCoreError as exc:
            self._raise(exc, "presign GetObject", loc.bucket, loc.key, loc.endpoint)

    # ------------------------------------------------------------------------------------ helpers
    def _key(self, name: str) -> str:
        try:
            return check_key(name, "artifact name (object key)")
        except DataInfoError as exc:
            raise StorageError(self.id, str(exc), name) from None


def _precondition_failed(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps: s3transfer re-raises) is an HTTP 412 / ``PreconditionFailed``."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return status == 412 or str(error.get("Code")) in ("412", "PreconditionFailed")
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _regular_file_path(readable: Readable) -> str | None:
    """The path of ``readable`` if it is an open regular file positioned at 0 whose path still names it."""
    name = getattr(readable, "name", None)
    fileno = getattr(readable, "fileno", None)
    if not isinstance(name, str) or fileno is None or "b" not in getattr(readable, "mode", "b"):
        return None
    try:
        opened = os.fstat(fileno())
        on_disk = os.stat(name)
        at_start = cast(BinaryIO, readable).tell() == 0
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None
    same = (opened.st_dev, opened.st_ino) == (on_disk.st_dev, on_disk.st_ino)
    return name if at_start and same and stat.S_ISREG(opened.st_mode) else None


def _remaining(readable: Readable) -> int | None:
    """Bytes left in a seekable stream (for progress totals), else ``None``; never reads."""
    try:
        if not getattr(readable, "seekable", lambda: False)():
            return None
        f = cast(BinaryIO, readable)
        here = f.tell()
        end = f.seek(0, os.SEEK_END)
        f.seek(here)
        return end - here
    except (OSError, ValueError, AttributeError):
        return None
