"""extensions-builtin/Lora/scripts/lora_script.py: loaded like any extension script (the Lora folder on sys.path only
while it loads; `networks` and the rest stay in sys.modules under their bare names)."""

import lora_patches
import networks
from modules import script_callbacks, shared

shared.opts.data.setdefault("lora_functional", False)
shared.opts.data.setdefault("lora_without_backup_weight", False)

networks.originals = lora_patches.LoraPatches()


def unload():
    networks.originals.undo()


script_callbacks.on_model_loaded(networks.assign_network_names_to_compvis_modules)
script_callbacks.on_script_unloaded(unload)
networks.list_available_networks()
