"""cache_latents_to_disk: a second run on the same images performs no VAE encode (and no caption encode when the
text encoder is frozen) and trains the same LoRA; a changed image, size, flip or VAE recomputes exactly its
entries; a damaged or unwritable cache costs only the time."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file

from support import spy
from trainer.data.disk_cache import SUFFIX
from trainer.networks.blocks import BASE, BLOCK_IDS
from trainer.runner import run_job

UNET_ONLY = [b for b in BLOCK_IDS if b != BASE]  # the text encoder frozen: its conditionings are cached too


@pytest.fixture
def images(sample_images, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(sample_images, folder)
    return folder


@pytest.fixture
def encodes(monkeypatch):
    """Images the VAE encoded, and calls of the text encoders, since the fixture was made."""
    import trainer.models.conditioning as conditioning

    counts = {"images": 0}
    real = AutoencoderKL.encode

    def encode(self, x, *args, **kwargs):
        counts["images"] += x.shape[0]
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", encode)
    counts["texts"] = spy(monkeypatch, conditioning, "encode_prompts")
    return counts


def tensors(path) -> dict:
    return load_file(str(path))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_identical_run_skips_the_vae_and_trains_the_same_lora(lora_job, images, encodes, one_thread):
    settings = {"lora_data_directory": str(images), "network_blocks(BASE = TextEncoder)": UNET_ONLY}
    plain = run_job(*lora_job(save_lora_name="plain", **settings))
    assert not list(images.glob(f"*{SUFFIX}"))  # off by default: nothing written beside the images
    encoded_without = encodes["images"]

    first = run_job(*lora_job(save_lora_name="first", cache_latents_to_disk="true", **settings))
    assert encodes["images"] == 2 * encoded_without  # the first run encodes every image, as without the cache
    assert len(list(images.glob(f"*{SUFFIX}"))) == len(list(images.glob("*.png")))

    vae_before, texts_before = encodes["images"], len(encodes["texts"])
    second = run_job(*lora_job(save_lora_name="second", cache_latents_to_disk="true", **settings))
    assert encodes["images"] == vae_before  # no VAE encode at all
    assert len(encodes["texts"]) == texts_before  # nor a caption encode: the conditionings come from the files too
    # what the cache holds is the posterior, not a sample: the run draws the same noise and trains the same LoRA
    assert same(tensors(second.path), tensors(first.path)) and same(tensors(first.path), tensors(plain.path))


def test_a_changed_image_size_flip_or_vae_recomputes_exactly_its_entries(lora_job, images, encodes, demo_models,
                                                                        tmp_path, caplog):
    from PIL import Image, ImageDraw

    from trainer.models.demo import make_demo_model

    def run(name, **overrides):
        job, host = lora_job(save_lora_name=name, cache_latents_to_disk="true", lora_data_directory=str(images),
                             train_iterations="1", **overrides)
        before = encodes["images"]
        with caplog.at_level(logging.INFO):
            run_job(job, host)
        return encodes["images"] - before

    assert run("a") == 4
    assert run("b") == 0
    changed = sorted(images.glob("*.png"))[0]
    img = Image.open(changed).convert("RGB")
    ImageDraw.Draw(img).rectangle([0, 0, 20, 20], fill=(255, 255, 0))
    img.save(changed)
    assert run("c") == 1  # only the changed image
    assert run("d", image_mirroring="true") == 4  # only the mirrored copies; the originals are read
    assert run("e", image_mirroring="true") == 0
    size = {"image_size(height, width)": "96", "image_min_length": "96", "image_buckets_step": "32"}
    assert run("f", **size) == 4  # another bucket: other pixels
    assert run("g", train_VAE_precision="bf16") == 4  # the VAE computes in another dtype
    other = make_demo_model("sd1", tmp_path / "other" / "other.safetensors", seed=7)
    job, host = lora_job(save_lora_name="h", cache_latents_to_disk="true", lora_data_directory=str(images),
                         train_iterations="1")
    job = dataclasses.replace(job, model=str(other))
    before = encodes["images"]
    run_job(job, host)
    assert encodes["images"] - before == 4  # another model's VAE
    assert run("i") == 0  # and the first entries are all still there
    assert any("read from the files beside the images" in r.getMessage() for r in caplog.records)


def test_a_damaged_or_unwritable_cache_costs_only_the_time(lora_job, images, encodes, monkeypatch, caplog):
    run_job(*lora_job(save_lora_name="a", cache_latents_to_disk="true", lora_data_directory=str(images),
                      train_iterations="1"))
    damaged = sorted(images.glob(f"*{SUFFIX}"))[0]
    damaged.write_bytes(b"\x00not a safetensors file")
    before = encodes["images"]
    with caplog.at_level(logging.WARNING):
        result = run_job(*lora_job(save_lora_name="b", cache_latents_to_disk="true", lora_data_directory=str(images),
                                   train_iterations="1"))
    assert result.status == "finished" and encodes["images"] - before == 1
    assert any("is unreadable" in r.getMessage() and "rebuilt" in r.getMessage() for r in caplog.records)
    assert load_file(str(damaged))  # rewritten whole

    import trainer.data.disk_cache as disk_cache

    def read_only(path, data, overwrite=True):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(disk_cache, "write_bytes_atomic", read_only)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = run_job(*lora_job(save_lora_name="c", cache_latents_to_disk="true", lora_data_directory=str(images),
                                   train_iterations="1", image_mirroring="true"))
    assert result.status == "finished"
    assert any("not written (Permission denied)" in r.getMessage() for r in caplog.records)


def test_multi_addift_reads_its_pairs_latents_from_the_cache(lora_job, tmp_path, encodes, one_thread):
    from test_data_parallel import pair_folder

    pairs = pair_folder(tmp_path)
    settings = {"lora_data_directory": str(pairs), "diff_target_name": "_after", "cache_latents_to_disk": "true",
                "train_iterations": "2"}

    def run(name):
        job, host = lora_job(save_lora_name=name, **settings)
        return run_job(dataclasses.replace(job, mode="Multi-ADDifT"), host)

    first = run("first")
    before = encodes["images"]
    second = run("second")
    assert encodes["images"] == before and same(tensors(first.path), tensors(second.path))
    assert len(list(pairs.glob(f"*{SUFFIX}"))) == 4  # both images of both pairs
