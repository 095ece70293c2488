"""extensions-builtin/Lora/lora_patches.py: `LoraPatches` — the built-in extension patches torch layer classes
globally. The fake patches only `_load_from_state_dict` of Linear, Conv2d, GroupNorm, LayerNorm and
MultiheadAttention (each load resets the layer's merge state: `network_current_names = ()`, no backups), not their
forwards (no network is merged on a forward here). `undo()` puts the originals back."""

import networks
import torch

PATCHED = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.MultiheadAttention)


class LoraPatches:
    def __init__(self):
        self.originals = {}
        for cls in PATCHED:
            self.originals[cls] = (cls.__dict__.get("_load_from_state_dict"), cls._load_from_state_dict)
            cls._load_from_state_dict = self._patched(cls._load_from_state_dict)

    @staticmethod
    def _patched(original):
        def network_load_state_dict(self, *args, **kwargs):
            networks.network_reset_cached_weight(self)
            return original(self, *args, **kwargs)

        return network_load_state_dict

    def undo(self):
        for cls, (own, _) in self.originals.items():
            if own is None:
                del cls._load_from_state_dict
            else:
                cls._load_from_state_dict = own
        self.originals.clear()
