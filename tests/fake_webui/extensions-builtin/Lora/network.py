"""extensions-builtin/Lora/network.py: `NetworkOnDisk` (a file in the Lora folder: name, alias, metadata, sd_version)
and `Network` (a loaded network: multipliers and its per-layer modules)."""

import enum
import os

from modules import sd_models


class SdVersion(enum.Enum):
    Unknown = 1
    SD1 = 2
    SD2 = 3
    SDXL = 4


class NetworkOnDisk:
    def __init__(self, name, filename):
        self.name = name
        self.filename = filename
        self.metadata = {}
        self.is_safetensors = os.path.splitext(filename)[1].lower() == ".safetensors"
        if self.is_safetensors:
            try:
                self.metadata = sd_models.read_metadata_from_safetensors(filename)
            except Exception as e:  # noqa: BLE001 — the webui reports it and goes on
                print(f"reading lora {filename}: {e!r}")
        self.alias = self.metadata.get("ss_output_name", self.name)
        self.sd_version = self.detect_version()

    def detect_version(self):
        if str(self.metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
            return SdVersion.SDXL
        if str(self.metadata.get("ss_v2", "")) == "True":
            return SdVersion.SD2
        if len(self.metadata):
            return SdVersion.SD1
        return SdVersion.Unknown


class Network:  # LoraModule
    def __init__(self, name, network_on_disk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.modules = {}
        self.bundle_embeddings = {}
        self.mtime = None


class NetworkModule:
    """One layer's weight update: `calc_updown(target)` → (updown, ex_bias), scaled by the network's TE or UNet
    multiplier ("transformer" in the first 20 characters of the layer name means TE)."""

    def __init__(self, net, sd_key, updown):
        self.network = net
        self.sd_key = sd_key
        self.updown = updown

    def multiplier(self):
        if "transformer" in self.sd_key[:20]:
            return self.network.te_multiplier
        return self.network.unet_multiplier

    def calc_updown(self, target):
        return self.updown.to(target.device, dtype=target.dtype) * self.multiplier(), None
