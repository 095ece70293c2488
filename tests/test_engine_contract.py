"""The mode contract and the engine defects of the design review: alpha masks reach the loss, resumed metadata
tells the truth, Settings keep their mode, loss scaling whenever CUDA computes in fp16, one registry each."""

from __future__ import annotations

import json
import random

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from trainer.engine import loss as loss_module
from trainer.engine.types import TrainContext
from trainer.networks.io import read_lora
from trainer.runner import run_job
from trainer.settings import validate

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture
def mode_job_factory(demo_models, tmp_path):
    """(mode, settings, 2nd-pass settings) → (Job, host): a tiny run on the SD1 demo model, a drawn image pair."""
    from trainer.host.standalone import StandaloneHost
    from trainer.settings import job_from_json

    images = []
    for name, radius in (("o.png", 10), ("t.png", 22)):
        img = Image.new("RGB", (64, 64), (30, 60, 160))
        ImageDraw.Draw(img).ellipse((32 - radius, 32 - radius, 32 + radius, 32 + radius), fill=(200, 40, 40))
        img.save(tmp_path / name)
        images.append(str(tmp_path / name))

    def make(mode, settings, second=None):
        base = {"save_lora_name": "c", "train_seed": "0", "train_iterations": "2", "train_batch_size": "1",
                "image_size(height, width)": "64", "network_rank": "4", "network_alpha": "2",
                "train_learning_rate": "1e-3", "train_model_precision": "fp32", **settings}
        data = {**base, "mode": mode, "model": str(demo_models["sd1"]), "original prompt": "a red circle",
                "target prompt": "", "original image": images[0], "target image": images[1],
                "2nd pass": {**base, **(second or {})} if second is not None else None}
        job, unknown = job_from_json(data)
        assert not unknown
        return job, StandaloneHost(lora_dir=tmp_path / "out")

    return make


# -- 1. alpha masks ------------------------------------------------------------------------------------------------
def half_transparent(path, hidden_colour):
    """64×64 RGBA: an opaque drawing on the left half, the right half fully transparent over `hidden_colour`."""
    img = Image.new("RGBA", (64, 64), hidden_colour + (0,))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 31, 63), fill=(30, 60, 200, 255))
    draw.ellipse((4, 12, 28, 52), fill=(240, 200, 20, 255))
    img.save(path)
    return path


@pytest.fixture
def alpha_folders(tmp_path):
    folders = []
    for name, colour in (("red", (255, 0, 0)), ("noise", (17, 230, 99))):
        folder = tmp_path / name
        folder.mkdir()
        half_transparent(folder / "subject.png", colour)
        (folder / "subject.txt").write_text("a subject", encoding="utf-8")
        folders.append(folder)
    return folders


def test_the_transparent_half_of_an_image_does_not_change_the_trained_weights(lora_job, alpha_folders, one_thread):
    files = []
    for i, folder in enumerate(alpha_folders):
        job, host = lora_job(lora_data_directory=str(folder), save_lora_name=f"alpha{i}", train_iterations="3",
                             train_batch_size="1")
        files.append(load_file(str(run_job(job, host).path)))
    assert files[0].keys() == files[1].keys()
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])


def test_the_alpha_mask_reaches_the_loss(lora_job, alpha_folders, monkeypatch):
    seen = []
    real = loss_module.per_sample_loss

    def spy(pred, target, kind, mask=None):
        seen.append(None if mask is None else mask.detach().clone())
        return real(pred, target, kind, mask)

    monkeypatch.setattr("trainer.engine.loop.per_sample_loss", spy)
    job, host = lora_job(lora_data_directory=str(alpha_folders[0]), train_iterations="2", train_batch_size="1",
                         image_mirroring="true")
    run_job(job, host)
    assert len(seen) == 2 and all(m is not None for m in seen)
    for mask in seen:
        assert mask.shape == (1, 1, 8, 8)
        left, right = mask[..., :4], mask[..., 4:]
        # one of the two samples is mirrored: the opaque half is on the left or on the right
        assert (left.all() and not right.any()) or (right.all() and not left.any())


def test_images_without_alpha_train_unmasked(lora_job, monkeypatch):
    seen = []
    real = loss_module.per_sample_loss
    monkeypatch.setattr("trainer.engine.loop.per_sample_loss",
                        lambda p, t, k, mask=None: seen.append(mask) or real(p, t, k, mask))
    job, host = lora_job(train_iterations="1")
    run_job(job, host)
    assert seen == [None]


# -- 2. resumed metadata ---------------------------------------------------------------------------------------------
def test_resuming_writes_the_metadata_of_the_resumed_network(lora_job):
    job, host = lora_job(save_lora_name="first", network_type="c3lier", network_rank="8", network_alpha="4",
                         network_conv_rank="4", network_conv_alpha="1", network_element="Full")
    first = run_job(job, host)
    _, meta1 = read_lora(first.path)
    assert json.loads(meta1["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1.0"}
    # the resuming job's own rank settings differ: the file's network wins, and its metadata says so
    job, host = lora_job(save_lora_name="second", network_resume=str(first.path), network_type="lierla",
                         network_rank="16", network_alpha="2")
    second = run_job(job, host)
    _, meta2 = read_lora(second.path)
    assert meta2["ss_network_dim"] == "8" and meta2["ss_network_alpha"] == "4.0"
    assert json.loads(meta2["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1.0"}
    assert meta2["ss_network_module"] == "networks.lora"


def test_resuming_a_cross_attention_lora_keeps_its_element(lora_job):
    job, host = lora_job(save_lora_name="xattn", network_element="CrossAttention")
    first = run_job(job, host)
    job, host = lora_job(save_lora_name="xattn2", network_resume=str(first.path))
    _, meta = read_lora(run_job(job, host).path)
    assert json.loads(meta["ss_network_args"]) == {"network_element": "CrossAttention"}


# -- 3. Settings keep their mode -------------------------------------------------------------------------------------
def test_settings_replace_keeps_the_mode_rules():
    s = validate({"image_buckets_step": 0}, "Difference")
    assert s.mode == "Difference"
    assert s.replace(train_iterations=2).train_iterations == 2
    with pytest.raises(Exception, match="image_buckets_step"):
        validate({"image_buckets_step": 0}, "LoRA")


def test_difference_second_pass_settings_with_bucket_step_zero(mode_job_factory):
    job, host = mode_job_factory("Difference", {"image_buckets_step": "0", "use_2nd_pass_settings": "true"},
                                 {"train_iterations": "2"})
    result = run_job(job, host)
    assert result.status == "finished" and result.steps == 2


# -- 6. loss scaling -------------------------------------------------------------------------------------------------
def _ctx(device, model, lora):
    return TrainContext(components=None, settings=None, device=torch.device(device), model_dtype=model,
                        lora_dtype=lora, seed=0, generator=torch.Generator(), rng=random.Random(0),
                        alpha_bar=torch.ones(1))


@pytest.mark.parametrize("device, model, lora, scaled", [
    ("cuda", torch.float16, torch.float32, True),  # the defaults: fp16 activations under autocast
    ("cuda", torch.bfloat16, torch.float32, False),  # bf16 needs none
    ("cuda", torch.float32, torch.float32, False),
    ("cuda", torch.float16, torch.float16, False),  # GradScaler cannot unscale fp16 weights (warned)
    ("cpu", torch.float16, torch.float32, False),  # the CPU computes fp16 as fp32
])
def test_loss_scaling_whenever_cuda_computes_in_fp16(device, model, lora, scaled):
    assert _ctx(device, model, lora).needs_loss_scaling is scaled


# -- one source per registry ---------------------------------------------------------------------------------------
def test_the_settings_choices_come_from_the_registries():
    from trainer.engine.loss import LOSSES
    from trainer.engine.optim import OPTIMIZER_ENTRIES, SCHEDULES
    from trainer.models.devices import PRECISIONS
    from trainer.modes.registry import MODES
    from trainer.networks.types import NETWORK_TYPES
    from trainer.settings import BY_KEY, MODES as SETTING_MODES, SEPARATOR

    assert BY_KEY["network_type"].choices == tuple(NETWORK_TYPES)
    assert BY_KEY["train_loss_function"].choices == tuple(LOSSES)
    assert [c for c in BY_KEY["train_optimizer"].choices if c != SEPARATOR] == [e.name for e in OPTIMIZER_ENTRIES]
    assert BY_KEY["train_lr_scheduler"].choices == tuple(SCHEDULES)
    assert BY_KEY["train_lora_precision"].choices == tuple(PRECISIONS)
    assert SETTING_MODES == tuple(MODES)


def test_ileco_network_train_text_encoder_trains_the_text_encoder(mode_job_factory):
    blocks = {"network_blocks(BASE = TextEncoder)": ["IN01"], "network_train_text_encoder": "true"}
    job, host = mode_job_factory("iLECO", blocks)
    tensors = load_file(str(run_job(job, host).path))
    text_up = [v for k, v in tensors.items() if k.startswith("lora_te") and k.endswith("lora_up.weight")]
    assert text_up and any(v.abs().sum() > 0 for v in text_up)
