"""Neo's built-in Lora extension, network.py: `NetworkOnDisk` (a file in a Lora folder: name, filename, metadata,
alias from `ss_output_name`, `user_metadata` from the `<lora>.json` sidecar — where Neo reads the card's "sd version";
`ss_base_model_version` is ignored) and `Network` (metadata-only: name, multipliers)."""

import json
import os

from modules import sd_models


class NetworkOnDisk:
    def __init__(self, name, filename):
        self.name = name
        self.filename = filename
        self.metadata = {}
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        if self.is_safetensors:
            try:
                self.metadata = sd_models.read_metadata_from_safetensors(filename)
            except Exception as e:  # noqa: BLE001 — Neo reports it and goes on
                print(f"reading lora {filename}: {e!r}")
        self.alias = self.metadata.get("ss_output_name", self.name)
        self.user_metadata = {}
        sidecar = os.path.splitext(filename)[0] + ".json"
        if os.path.exists(sidecar):
            try:
                with open(sidecar, encoding="utf8") as f:
                    self.user_metadata = json.load(f)
            except (OSError, ValueError) as e:
                print(f"reading {sidecar}: {e!r}")
        self.sd_version = self.user_metadata.get("sd version")

    def get_alias(self):
        return self.alias


class Network:
    def __init__(self, name, network_on_disk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.modules = {}
        self.bundle_embeddings = {}
        self.mtime = None
        self.mentioned_name = None
