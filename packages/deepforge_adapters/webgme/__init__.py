"""Clients for WebGME's REST APIs: the blob (``/rest/blob``) and the executor (``/rest/executor``).

>>> from deepforge_adapters.webgme import BlobClient
>>> blob = BlobClient("http://127.0.0.1:8888")
>>> md_hash, metadata = blob.create_file("hello.txt", open("hello.txt", "rb"))  # doctest: +SKIP

The development harness that starts a local WebGME server lives in :mod:`deepforge_dev.stack`.
"""

from ._rest import DEFAULT_HOST, HOST_ENV
from .blob import BlobClient, BlobReader, file_metadata, metadata_hash
from .executor import FINISHED_STATUSES, ExecutorClient, ExecutorStatus, is_finished

__all__ = [
    "DEFAULT_HOST",
    "FINISHED_STATUSES",
    "HOST_ENV",
    "BlobClient",
    "BlobReader",
    "ExecutorClient",
    "ExecutorStatus",
    "file_metadata",
    "is_finished",
    "metadata_hash",
]
