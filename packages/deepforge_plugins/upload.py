"""UploadArtifact: put a file into the chosen storage and record it as a Data node in MyArtifacts.

The file comes in as a WebGME blob hash (the dialog's ``file`` asset input, or ``hash``); it is streamed
from the blob into the storage backend (never held in memory), and the new Data node gets the resulting
dataInfo, the ``type`` given (the Python class name of the pickled value, if any) and the name.
"""

from __future__ import annotations

import json

from deepforge_adapters import storage
from deepforge_adapters.timestamps import now_ms
from deepforge_adapters.webgme.blob import BlobClient

from . import pipeline
from .base import DeepForgePlugin
from .run_config import plugin_run_config
from .targets import resolve


class UploadArtifact(DeepForgePlugin):
    def main(self) -> None:
        config = self.config()
        blob_hash = config.get("file") or config.get("hash")
        if not blob_hash:
            self.fail("UploadArtifact needs a file (or a blob hash)")
            return
        rc = plugin_run_config(self)
        choice = rc.targets.storage
        if choice is None:
            self.fail("UploadArtifact needs a storage backend")
            return
        # The operator policy first: a refused backend or root is reported before anything is read or written.
        storage_cfg = self.with_linked_account(
            resolve(
                "storage",
                self.with_server_fields("storage", choice),  # a gme store is this server's blob, with the user's token
                rc.secrets["storage"].get(choice.backend),
                policy=self.policy(),
                server_url=self.server_url(),
            )
        )
        blob = BlobClient(self.server_url(), webgme_token=self.webgme_token())
        name = str(config.get("name") or blob.metadata(blob_hash).get("name") or "artifact")
        client = storage.get_client(storage_cfg.backend, storage_cfg.to_dict())
        with blob.open(blob_hash) as reader:
            # A fresh key: an artifact uploaded earlier under the same name keeps its bytes (and stays readable).
            info = client.put_file_stream(storage.fresh_key(f"{self.project_id()}/artifacts", name), reader)
        type_name = str(config.get("type") or "")
        model = self.model

        def edit() -> str:
            artifacts = pipeline.root_container(model, "MyArtifacts")
            node = model.core.create_node({"parent": artifacts, "base": model.META["Data"]})
            model.core.set_attribute(node, "name", name)
            model.core.set_attribute(node, "data", json.dumps(info.to_json(), sort_keys=True))
            if type_name:
                model.core.set_attribute(node, "type", type_name)
            model.core.set_attribute(node, "createdAt", now_ms())
            return model.path(node)

        path = model.change(f"Uploaded artifact {name} to {storage_cfg.backend}", edit)
        self.create_message(model.node(path), f"Uploaded {name} to {storage_cfg.backend}", "info")
        self.result_set_success(True)
