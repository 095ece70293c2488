"""Block IDs: the 26 names users tick (`BASE, IN00–IN11, M00, OUT00–OUT11`) and where each LoRA module falls.

The ID of a UNet module is read off its LDM name, the same for every family:

    input_blocks.4.1.transformer_blocks.0.attn2.to_k  → IN04
    middle_block.1.proj_in                             → M00
    output_blocks.11.0.in_layers.2                     → OUT11
    any text-encoder module                            → BASE

SD1/SD2 have modules in IN01–IN11, M00, OUT00–OUT11 (lierla: IN01 IN02 IN04 IN05 IN07 IN08 M00 OUT03–OUT11);
SDXL only in IN01–IN08, M00, OUT00–OUT08 (lierla: IN04 IN05 IN07 IN08 M00 OUT00–OUT05). IN00 (conv_in) is never
trained; selecting a block that has no modules does nothing.
"""

from __future__ import annotations

import re

BASE = "BASE"
BLOCK_IDS = (BASE, *[f"IN{i:02d}" for i in range(12)], "M00", *[f"OUT{i:02d}" for i in range(12)])


def block_of_ldm_name(ldm_name: str) -> str:
    """Block ID of a UNet module from its LDM name (dots or underscores, with or without prefixes)."""
    name = ldm_name.replace("_", ".")
    if m := re.search(r"input\.blocks\.(\d+)\.", name + "."):
        return f"IN{int(m.group(1)):02d}"
    if re.search(r"middle\.block\.", name + "."):
        return "M00"
    if m := re.search(r"output\.blocks\.(\d+)\.", name + "."):
        return f"OUT{int(m.group(1)):02d}"
    raise ValueError(f"{ldm_name!r} is in no block")


def check_blocks(blocks) -> list[str]:
    """Validate a block selection; unknown names are an error that lists the known ones."""
    blocks = list(blocks)
    unknown = [b for b in blocks if b not in BLOCK_IDS]
    if unknown:
        raise ValueError(f"unknown block ID(s) {unknown}; known: {', '.join(BLOCK_IDS)}")
    return blocks
