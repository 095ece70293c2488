"""`cache_latents_to_disk` (kohya's name): what the VAE and the frozen text encoders computed for a training image,
kept beside the image so the next run on the same images skips them.

Beside `X.png`: `X.png.traintrain-cache.safetensors` (kohya writes `X.npz`), one file per image holding entries:
- a latent entry per sample the image gives — its bucket, sub-image or mirror copy. The key is the sha256 of the exact
  pixels the VAE encodes (so it covers the file's content, the bucket size, the crop and the flip) together with
  the VAE's fingerprint (its encoder's weights and dtype). The entry holds the posterior's mean and standard deviation
  as the VAE computed them, not a sample: the run still draws its one posterior sample from its own seeded
  generator, so a run from the cache trains exactly what a run without it trains;
- a conditioning entry per caption, keyed by the caption and the text encoders' fingerprint.
A changed image, size, flip or VAE gives other keys: exactly those entries are computed again, and the file keeps the
rest. Files are replaced atomically; a damaged one is ignored (and rewritten), an unwritable folder only warned
about.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch

from ..fileio import write_bytes_atomic

log = logging.getLogger(__name__)

SUFFIX = ".traintrain-cache.safetensors"
FORMAT = "traintrain-cache 1"
SAMPLED = 1024  # elements read from each end of every weight for a fingerprint


def cache_path(source) -> Path:
    source = Path(source)
    return source.with_name(source.name + SUFFIX)


def fingerprint(modules, extra: str = "") -> str:
    """A short identity of modules' weights: every parameter's name, shape and dtype and its first and last
    SAMPLED values (reading whole text encoders would cost seconds; fine-tunes differ everywhere)."""
    digest = hashlib.sha256(extra.encode())
    for module in modules:
        digest.update(type(module).__qualname__.encode())
        for name, param in module.named_parameters():
            flat = param.detach().reshape(-1)
            ends = torch.cat([flat[:SAMPLED], flat[-SAMPLED:]]).to("cpu", torch.float32).contiguous()
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            digest.update(ends.numpy().tobytes())
    return digest.hexdigest()[:32]


def vae_fingerprint(vae) -> str:
    """The encoder's part of a VAE (a fine-tuned decoder, as in the ft-MSE VAEs, encodes the same latents)."""
    parts = [m for m in (getattr(vae, "encoder", None), getattr(vae, "quant_conv", None)) if m is not None]
    return fingerprint(parts or [vae])


def text_fingerprint(components) -> str:
    """The text encoders with what decides their output: the family's hidden layer and projection per encoder."""
    specs = "|".join(f"{s.hidden_layer},{s.with_projection}" for s in components.family.text_encoders)
    return fingerprint(components.text_encoders, f"{components.family.name}|{specs}")


def pixels_key(image) -> str:
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class DiskCache:
    """One run's view of the cache files: each read on first use, the new entries written by `flush()`."""

    def __init__(self, vae_id: str | None = None, text_id: str | None = None):
        self.vae_id, self.text_id = vae_id, text_id
        self._files: dict[Path, dict[str, torch.Tensor]] = {}
        self._changed: set[Path] = set()
        self.hits = self.computed = 0

    @classmethod
    def of_components(cls, components, texts: bool) -> "DiskCache":
        """For the job's VAE and, when `texts` (captions encoded once), its text encoders."""
        return cls(vae_fingerprint(components.vae) if components.vae is not None else None,
                   text_fingerprint(components) if texts and components.text_encoders else None)

    # -- entries ----------------------------------------------------------------------------------------------------
    def posterior(self, source, image) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of `image`'s VAE posterior (a sample of `source`), or None when not cached."""
        key = self._key("latent", self.vae_id, pixels_key(image))
        entries = self._entries(source)
        if f"{key}.mean" not in entries:
            return None
        self.hits += 1
        return entries[f"{key}.mean"], entries[f"{key}.std"]

    def put_posterior(self, source, image, mean: torch.Tensor, std: torch.Tensor) -> None:
        key = self._key("latent", self.vae_id, pixels_key(image))
        self._put(source, {f"{key}.mean": mean, f"{key}.std": std})

    def conditioning(self, source, caption: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(hidden (77, D), pooled (P) or None) of `caption`, or None when not cached."""
        if self.text_id is None:
            return None
        key = self._key("cond", self.text_id, caption)
        entries = self._entries(source)
        if f"{key}.hidden" not in entries:
            return None
        self.hits += 1
        return entries[f"{key}.hidden"], entries.get(f"{key}.pooled")

    def put_conditioning(self, source, caption: str, hidden: torch.Tensor, pooled: torch.Tensor | None) -> None:
        if self.text_id is None:
            return
        key = self._key("cond", self.text_id, caption)
        self._put(source, {f"{key}.hidden": hidden, **({f"{key}.pooled": pooled} if pooled is not None else {})})

    # -- files ----------------------------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write every file that gained entries (atomically); a folder that cannot be written is warned about."""
        from safetensors.torch import save

        for path in sorted(self._changed):
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in self._files[path].items()}
            try:
                write_bytes_atomic(path, save(tensors, metadata={"format": FORMAT}))
            except OSError as err:
                log.warning("cache_latents_to_disk: %s not written (%s); the next run encodes it again", path,
                            err.strerror or err)
        self._changed.clear()
        log.info("cache_latents_to_disk: %d read from the files beside the images, %d computed", self.hits,
                 self.computed)

    def _key(self, kind: str, model_id: str | None, content: str) -> str:
        return f"{kind}.{hashlib.sha256(f'{kind}|{model_id}|{content}'.encode()).hexdigest()[:24]}"

    def _put(self, source, tensors: dict) -> None:
        path = cache_path(source)
        self._entries(source).update({k: v.detach().to("cpu").clone() for k, v in tensors.items()})
        self._changed.add(path)
        self.computed += 1

    def _entries(self, source) -> dict[str, torch.Tensor]:
        path = cache_path(source)
        if path not in self._files:
            self._files[path] = read_entries(path)
        return self._files[path]


def read_entries(path: Path) -> dict[str, torch.Tensor]:
    """A cache file's tensors; {} when there is none, or it is damaged or of another format (then rewritten)."""
    if not path.is_file():
        return {}
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            return {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 — any damage: the entries are computed again
        log.warning("cache_latents_to_disk: %s is unreadable (%s); it is rebuilt", path, str(err).splitlines()[0][:120])
        return {}
