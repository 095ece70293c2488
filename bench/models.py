"""Models for the benchmarks: tiny (the demo), small (real channel widths, fewer blocks), full (the released
architecture), all with random weights built in memory — nothing downloaded, nothing written."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from trainer.models.components import Components, ddpm_scheduler  # noqa: E402
from trainer.models.demo import random_components  # noqa: E402
from trainer.models.family import FAMILIES  # noqa: E402
from trainer.models.tokenizer import clip_tokenizer  # noqa: E402


def build(family_name: str, size: str, seed: int = 0) -> Components:
    family = FAMILIES[family_name]
    started = time.perf_counter()
    config, unet, vae, text_encoders = random_components(family, seed=seed, size=size)
    return Components(
        family=family, unet=unet, vae=vae, text_encoders=text_encoders,
        tokenizers=[clip_tokenizer(spec.pad_token) for spec in family.text_encoders],
        noise_scheduler=ddpm_scheduler(config, False), is_v_prediction=False, v_prediction_source="bench",
        dtype=torch.float32, source=f"random {size} {family.title}", config_source="bench",
        load_seconds=time.perf_counter() - started,
    )


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
