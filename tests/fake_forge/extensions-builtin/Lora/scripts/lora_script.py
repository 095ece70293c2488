"""Neo's built-in Lora extension, scripts/lora_script.py: loading it makes `networks` / `network` importable under
their bare names (they stay in sys.modules) and lists the available networks."""

import networks
from modules import script_callbacks


def before_ui():
    networks.list_available_networks()


script_callbacks.on_before_ui(before_ui, name="lora_script")
