"""LoRA networks: targeting (targets.py, blocks.py), algorithms (lora.py, loha.py), the network (network.py),
the saved file (io.py, metadata.py) and the loader-compatibility self-check (compat.py)."""
