"""A caption as one training step sees it, with kohya sd-scripts' options (LoRA mode; all off by default):

- `shuffle_caption`: the comma-separated tags in a new order at every step, the first `keep_tokens` tags kept in
  place (a trigger word in front stays in front with keep_tokens 1);
- `caption_dropout_rate`: the chance that a step trains the image with the empty caption instead, which teaches the
  unconditional prediction that classifier-free guidance uses.

Random choices come from the job's `random.Random`, so a seeded (or resumed) run makes the same ones.
"""

from __future__ import annotations

import random


def shuffle_tags(caption: str, keep: int, rng: random.Random) -> str:
    """The tags after the first `keep` in a random order; tags are trimmed and rejoined with ", "."""
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    fixed, rest = tags[:keep], tags[keep:]
    rng.shuffle(rest)
    return ", ".join(fixed + rest)


def step_caption(caption: str, settings, rng: random.Random) -> str:
    """What this step trains on: "" with probability caption_dropout_rate, else the caption (shuffled if asked).
    Draws nothing when both options are off."""
    if settings.caption_dropout_rate and rng.random() < settings.caption_dropout_rate:
        return ""
    if settings.shuffle_caption:
        return shuffle_tags(caption, settings.keep_tokens, rng)
    return caption


def varies_per_step(settings) -> bool:
    return bool(settings.caption_dropout_rate or settings.shuffle_caption)
