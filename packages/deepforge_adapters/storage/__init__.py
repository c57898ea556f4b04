"""Storage adapters: one interface to where artifacts live.

>>> from deepforge_adapters import storage
>>> client = storage.get_client("local", {"root": "/tmp/store"})
>>> info = client.put_file("proj/model", "model.bin")
>>> storage.DataInfo.from_json(info.dumps()) == info
True
"""

from .base import DataInfo, ObjectInfo, StorageClient, fresh_key, fresh_segment
from .registry import backends, get_client, registry

__all__ = [
    "DataInfo",
    "ObjectInfo",
    "StorageClient",
    "backends",
    "fresh_key",
    "fresh_segment",
    "get_client",
    "registry",
]
