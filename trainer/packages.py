"""Which packages the trainer needs, checked without importing them (the tab must build even when one is missing)."""

from __future__ import annotations

import importlib.util

# import name → (pip name, what needs it)
REQUIRED = {
    "torch": ("torch", "everything"),
    "diffusers": ("diffusers", "the UNet, VAE and noise schedule"),
    "transformers": ("transformers", "the text encoders"),
    "safetensors": ("safetensors", "reading checkpoints and writing LoRAs"),
    "open_clip": ("open_clip_torch (--no-deps)", "the CLIP tokenizer vocabulary"),
    "PIL": ("Pillow", "reading images"),
    "yaml": ("PyYAML", "model configs"),
    "pandas": ("pandas", "the Plot tab"),
    "matplotlib": ("matplotlib", "the Plot tab"),
}
OPTIONAL = {
    "lycoris": ("lycoris-lora", "network_type loha"),
    "bitsandbytes": ("bitsandbytes", "the 8-bit and paged optimizers"),
    "prodigyopt": ("prodigyopt", "the Prodigy optimizer"),
    "dadaptation": ("dadaptation", "the DAdapt optimizers"),
    "schedulefree": ("schedulefree", "the ScheduleFree optimizers"),
    "pytorch_optimizer": ("pytorch-optimizer", "CAME, Tiger, AdamMini"),
    "lion_pytorch": ("lion-pytorch", "the Lion optimizer"),
}


def installed(import_name: str) -> bool:
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules (import blocked)
        return False


def missing(table: dict) -> list[str]:
    return [name for name in table if not installed(name)]


def problems() -> str:
    """One line per problem, "" when all required packages are there."""
    lines = []
    required = missing(REQUIRED)
    if required:
        names = ", ".join(REQUIRED[n][0] for n in required)
        lines.append(f"Error: TrainTrain needs {names}, which is not installed in this Python; restart the webui so "
                     f"install.py adds it (or pip install it), then reload the UI.")
    optional = missing(OPTIONAL)
    if optional:
        lines.append("Not installed (only some choices need them): " +
                     "; ".join(f"{OPTIONAL[n][0]} ({OPTIONAL[n][1]})" for n in optional))
    return "\n".join(lines)
