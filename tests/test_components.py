"""Loading a single-file checkpoint offline gives the same components diffusers' own converter builds."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from trainer.models.components import load_components
from trainer.models.demo import components_to_ldm, random_components, write_checkpoint
from trainer.models.family import FAMILIES
from support import fp32_reorder_tolerance

pytestmark = pytest.mark.filterwarnings("ignore")


def _unet_inputs(unet, generator):
    cfg = unet.config
    sample = torch.randn(2, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([10, 900])
    context = torch.randn(2, 77, cfg.cross_attention_dim, generator=generator)
    added = None
    if cfg.addition_embed_type == "text_time":
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(2, pooled, generator=generator),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * 2),
        }
    return sample, timesteps, context, added


def assert_same_forward(model, ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs, rtol=0, atol=fp32_reorder_tolerance(model, ours))


def assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Bit for bit: the converted tensors themselves, with no arithmetic in between."""
    a, b = ours.state_dict(), theirs.state_dict()
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:10]
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:10]


def _diffusers_config_dir(tmp_path, name, config):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dict(config)), encoding="utf-8")
    return str(folder)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_components_match_diffusers_converter(family, demo_models, tmp_path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = demo_models[family]
    ours = load_components(path, dtype=torch.float32)
    assert ours.family.name == family

    # diffusers' own single-file path, given the same configs as local folders (no hub).
    theirs_unet = UNet2DConditionModel.from_single_file(
        str(path), config=_diffusers_config_dir(tmp_path, "unet", ours.unet.config), local_files_only=True,
        torch_dtype=torch.float32,
    )
    theirs_vae = AutoencoderKL.from_single_file(
        str(path), config=_diffusers_config_dir(tmp_path, "vae", ours.vae.config), local_files_only=True,
        torch_dtype=torch.float32,
    )
    checkpoint = load_file(str(path))
    assert_same_weights(ours.unet, theirs_unet)
    assert_same_weights(ours.vae, theirs_vae)

    g = torch.Generator().manual_seed(0)
    sample, t, context, added = _unet_inputs(ours.unet, g)
    with torch.no_grad():
        a = ours.unet(sample, t, context, added_cond_kwargs=added).sample
        b = theirs_unet(sample, t, context, added_cond_kwargs=added).sample
    assert a.shape == sample.shape
    assert torch.isfinite(a).all()
    assert_same_forward(ours.unet, a, b)

    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        za = ours.vae.encode(image).latent_dist.mean
        zb = theirs_vae.encode(image).latent_dist.mean
        xa = ours.vae.decode(za).sample
    assert za.shape == (1, 4, 8, 8) and xa.shape == image.shape
    assert_same_forward(ours.vae.encoder, za, zb)

    for i, (te, tok) in enumerate(zip(ours.text_encoders, ours.tokenizers)):
        cls = CLIPTextModelWithProjection if ours.family.text_encoders[i].with_projection else CLIPTextModel
        folder = tmp_path / f"te{i}"
        te.config.save_pretrained(str(folder))
        theirs = create_diffusers_clip_model_from_ldm(
            cls, checkpoint, config=str(folder), local_files_only=True, torch_dtype=torch.float32
        )
        ids = tok(["a photo of a cat", ""], padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt").input_ids
        assert_same_weights(te, theirs)
        with torch.no_grad():
            oa = te(ids, output_hidden_states=True)
            ob = theirs(ids, output_hidden_states=True)
        assert_same_forward(te, oa.hidden_states[-2], ob.hidden_states[-2])
        assert_same_forward(te, oa.last_hidden_state, ob.last_hidden_state)
        if hasattr(oa, "text_embeds"):
            assert_same_forward(te, oa.text_embeds, ob.text_embeds)
        assert oa.last_hidden_state.shape == (2, 77, te.config.hidden_size)


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_round_trip_diffusers_to_ldm_to_loader(family, tmp_path):
    """diffusers components → our LDM writer → our loader: identical tensors, key for key."""
    fam = FAMILIES[family]
    config, unet, vae, text_encoders = random_components(fam, seed=3)
    tensors = components_to_ldm(fam, unet, vae, text_encoders, torch.Generator().manual_seed(4))
    path = write_checkpoint(tensors, config, tmp_path / f"rt-{family}.safetensors", dtype=torch.float32)

    loaded = load_components(path, dtype=torch.float32)
    pairs = [(unet, loaded.unet), (vae, loaded.vae)] + list(zip(text_encoders, loaded.text_encoders))
    for original, reloaded in pairs:
        a, b = original.state_dict(), reloaded.state_dict()
        assert set(a) == set(b), f"{type(original).__name__}: key sets differ"
        for key in a:
            assert torch.equal(a[key], b[key]), f"{type(original).__name__}.{key} differs"


def test_fp16_file_computes_in_fp32_on_cpu(demo_models, caplog):
    components = load_components(demo_models["sd1"], dtype=torch.float16, device="cpu")
    assert components.dtype == torch.float32
    assert next(components.unet.parameters()).dtype == torch.float32


def test_bf16_is_honoured_on_cpu(demo_models):
    components = load_components(demo_models["sd1"], dtype=torch.bfloat16, device="cpu", vae_dtype=torch.float32)
    assert next(components.unet.parameters()).dtype == torch.bfloat16
    assert next(components.text_encoders[0].parameters()).dtype == torch.bfloat16
    assert next(components.vae.parameters()).dtype == torch.float32


def test_noise_schedule_is_scaled_linear_ddpm(demo_models):
    sched = load_components(demo_models["sd1"]).noise_scheduler
    assert sched.config.num_train_timesteps == 1000
    assert sched.config.beta_schedule == "scaled_linear"
    torch.testing.assert_close(sched.betas[0], torch.tensor(0.00085))
    torch.testing.assert_close(sched.betas[-1], torch.tensor(0.012))
    assert sched.config.prediction_type == "epsilon"


def test_sdxl_components(demo_models):
    c = load_components(demo_models["sdxl"])
    assert [type(t).__name__ for t in c.text_encoders] == ["CLIPTextModel", "CLIPTextModelWithProjection"]
    assert c.unet.config.addition_embed_type == "text_time"
    assert c.unet.config.cross_attention_dim == sum(t.config.hidden_size for t in c.text_encoders)
    assert [t.pad_token for t in c.tokenizers] == ["<|endoftext|>", "!"]
    assert c.family.vae_scale == 0.13025


def test_sd2_drops_the_unused_last_open_clip_block(demo_models):
    from trainer.models.checkpoint import open_state_dict

    with open_state_dict(demo_models["sd2"]) as sd:
        stored = {int(k.split(".")[4]) for k in sd if k.startswith("cond_stage_model.model.transformer.resblocks.")}
    c = load_components(demo_models["sd2"])
    assert c.text_encoders[0].config.num_hidden_layers == len(stored) - 1
    assert c.tokenizers[0].pad_token == "!"
