"""The fake webui (tests/fake_webui) against webui-api.md A4–A12, in-process: the model the webui would hold for each
family (its keys are the checkpoint's), its text conditioning, the Lora extension's merged weights, --medvram,
processing, the progress state and ui-config.json. Every test runs inside `fake_webui_modules`, which forgets the fake
`modules` package afterwards."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent / "fake_webui"))
from inprocess import fake_webui_modules

sys.path.remove(str(Path(__file__).parent / "fake_webui"))

FAMILIES = ("sd1", "sd2v", "sdxl")


@pytest.fixture(scope="module")
def ckpt_dir(demo_models, tmp_path_factory):
    """A checkpoint folder with the SD1 and SDXL demo models and an SD2 v-prediction one (each with its .yaml)."""
    from trainer.models.demo import make_demo_model

    folder = tmp_path_factory.mktemp("webui") / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for family in ("sd1", "sdxl"):
        for suffix in (".safetensors", ".yaml"):
            os.symlink(demo_models[family].with_suffix(suffix), folder / f"tiny-{family}{suffix}")
    make_demo_model("sd2", folder / "tiny-sd2v.safetensors", v_prediction=True)
    return folder


@pytest.fixture(scope="module")
def webui(ckpt_dir):
    with fake_webui_modules(ckpt_dir, ckpt_dir.parent / "Lora") as namespace:
        yield namespace


@pytest.fixture(scope="module")
def models(webui, ckpt_dir):
    """family → (CheckpointInfo, load(fresh=False) → the model: the one held when it is that checkpoint and whole,
    else sd_models.load_model)."""
    def loader(family):
        info = webui.sd_models.get_closet_checkpoint_match(f"tiny-{family}.safetensors")

        def load(fresh=True):
            held = webui.sd_models.model_data.sd_model
            if (not fresh and held is not None and held.sd_model_checkpoint == info.filename
                    and not any(p.is_meta for p in held.parameters()) and not held.lowvram):
                return held
            return webui.sd_models.load_model(info)

        return info, load

    return {family: loader(family) for family in FAMILIES}


def unwrapped(key: str) -> str:
    return re.sub(r"(^|\.)wrapped\.", r"\1", key)


# -- the model ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_is_the_checkpoint_once_the_hijack_levels_are_removed(webui, models, family):
    info, load = models[family]
    sd_model = load(fresh=False)
    file = load_file(info.filename)
    state = sd_model.state_dict()
    ours = {unwrapped(k): v for k, v in state.items() if not k.startswith("cond_stage_model.") or family != "sdxl"}
    assert set(ours) == set(file)
    for key, tensor in file.items():
        assert ours[key].dtype == (torch.float32 if tensor.is_floating_point() else tensor.dtype), key
        assert torch.equal(ours[key], tensor.to(ours[key].dtype)), key
    if family == "sdxl":  # cond_stage_model IS the conditioner, registered twice as in the webui
        alias = {k[len("cond_stage_model."):]: v for k, v in state.items() if k.startswith("cond_stage_model.")}
        assert alias.keys() == {k[len("conditioner."):] for k in state if k.startswith("conditioner.")}
    assert {"wrapped"} & {part for key in state for part in key.split(".")}  # the hijack levels are there


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_has_the_webui_structure(webui, models, family):
    import transformers

    info, load = models[family]
    seen = []
    webui.script_callbacks.on_model_loaded(seen.append)
    webui.sd_models.files_read.clear()
    sd_model = load()
    assert seen == [sd_model] and webui.sd_models.files_read == [info.filename]
    assert webui.shared.sd_model is sd_model and webui.sd_models.model_data.loaded_sd_models[0] is sd_model
    assert webui.shared.opts.sd_model_checkpoint == info.title
    assert sd_model.sd_checkpoint_info is info and sd_model.sd_model_checkpoint == info.filename
    assert sd_model.sd_model_hash == info.shorthash and sd_model.latent_channels == 4 and sd_model.lowvram is False
    assert (sd_model.is_sd1, sd_model.is_sd2, sd_model.is_sdxl) == (family == "sd1", family == "sd2v", family == "sdxl")
    assert type(sd_model.model.diffusion_model).__name__ == "UNetModel"
    assert type(sd_model.first_stage_model).__name__ == "AutoencoderKL"
    assert isinstance(sd_model.alphas_cumprod, torch.Tensor) and sd_model.alphas_cumprod.shape == (1000,)
    assert sd_model.training is False and all(p.requires_grad for p in sd_model.parameters())
    unet = dict(sd_model.model.diffusion_model.named_modules())
    assert isinstance(unet["input_blocks.0.0"], torch.nn.Conv2d)
    assert isinstance(unet["time_embed.0"], torch.nn.Linear) and isinstance(unet["out.0"], torch.nn.GroupNorm)
    site = "input_blocks.1.1" if family != "sdxl" else "input_blocks.4.1"
    assert isinstance(unet[f"{site}.transformer_blocks.0.norm1"], torch.nn.LayerNorm)
    assert isinstance(unet[f"{site}.norm"], torch.nn.GroupNorm)
    proj_in = torch.nn.Conv2d if family == "sd1" else torch.nn.Linear  # use_linear_in_transformer for SD2/SDXL
    assert isinstance(unet[f"{site}.proj_in"], proj_in)
    assert isinstance(dict(sd_model.first_stage_model.named_modules())["encoder.down.0.block.0.norm1"],
                      torch.nn.GroupNorm)
    if family == "sdxl":
        assert type(sd_model).__name__ == "DiffusionEngine" and type(sd_model.model).__name__ == "OpenAIWrapper"
        assert sd_model.scale_factor == 0.13025 and sd_model.parameterization == "eps"
        assert sd_model.cond_stage_model is sd_model.conditioner
        assert type(sd_model.conditioner).__name__ == "GeneralConditioner"
        embedders = sd_model.conditioner.embedders
        assert [type(e).__name__ for e in embedders] == [
            "FrozenCLIPEmbedderForSDXLWithCustomWords", "FrozenOpenCLIPEmbedder2WithCustomWords",
            "ConcatTimestepEmbedderND", "ConcatTimestepEmbedderND", "ConcatTimestepEmbedderND"]
        assert not list(embedders[2].parameters())
        text, tower = embedders[0].wrapped.transformer, embedders[1].wrapped.model
    else:
        assert type(sd_model).__name__ == "LatentDiffusion" and type(sd_model.model).__name__ == "DiffusionWrapper"
        assert sd_model.scale_factor == 0.18215
        assert sd_model.parameterization == ("v" if family == "sd2v" else "eps")
        name = "FrozenCLIPEmbedderWithCustomWords" if family == "sd1" else "FrozenOpenCLIPEmbedderWithCustomWords"
        assert type(sd_model.cond_stage_model).__name__ == name
        text = sd_model.cond_stage_model.wrapped.transformer if family == "sd1" else None
        tower = sd_model.cond_stage_model.wrapped.model if family == "sd2v" else None
    if text is not None:
        hf = text if isinstance(text, transformers.CLIPTextModel) else text.text_model  # transformers ≥ 5: flat
        assert isinstance(hf, transformers.CLIPTextModel)
        token_embedding = text.text_model.embeddings.token_embedding
        assert type(token_embedding).__name__ == "EmbeddingsWithFixes"
        assert type(token_embedding.wrapped) is torch.nn.Embedding
    if tower is not None:
        assert type(tower.token_embedding).__name__ == "EmbeddingsWithFixes"
        assert isinstance(tower.transformer.resblocks[0].attn, torch.nn.MultiheadAttention)
        assert isinstance(tower.transformer.resblocks[0].mlp.c_fc, torch.nn.Linear)


def fake_modules():
    return {k: m for k, m in sys.modules.items()
            if k == "modules" or k.startswith("modules.") or k in ("networks", "network", "webui", "fake_ldm")}


def test_shared_sd_model_loads_the_selected_checkpoint_on_first_access(ckpt_dir, tmp_path):
    outside, patch = fake_modules(), torch.nn.Linear.__dict__.get("_load_from_state_dict")
    with fake_webui_modules(ckpt_dir, tmp_path / "Lora", opts={"sd_model_checkpoint": "tiny-sd1.safetensors"}) as w:
        assert w.sd_models.model_data.sd_model is None and w.sd_models.files_read == []
        sd_model = w.shared.sd_model
        assert sd_model.is_sd1 and w.sd_models.files_read == [str(ckpt_dir / "tiny-sd1.safetensors")]
        assert w.shared.sd_model is sd_model and len(w.sd_models.files_read) == 1
        w.shared.sd_model = None  # the setter is model_data.set_sd_model; once loaded, no second load
        assert w.shared.sd_model is None
    assert fake_modules() == outside  # what was imported before (another fake_webui_modules block) or nothing
    assert torch.nn.Linear.__dict__.get("_load_from_state_dict") is patch  # the Lora extension's patch is undone


def test_unload_reload_and_trash(webui, models):
    sd_models = webui.sd_models
    first = models["sd1"][1]()
    assert sd_models.unload_model_weights() is None and not any(p.is_meta for p in first.parameters())
    assert sd_models.reload_model_weights(info=models["sd1"][0]) is first  # the file it holds: nothing happens
    seen = []
    webui.script_callbacks.on_model_loaded(seen.append)
    second = sd_models.reload_model_weights(info=models["sdxl"][0])  # another config: a new model
    assert second is not first and second.is_sdxl and seen == [second] and sd_models.model_data.sd_model is second
    assert all(p.is_meta for p in first.parameters())  # the model held before went to the trash
    again = sd_models.reload_model_weights(info=models["sdxl"][0], forced_reload=True)  # same config: same object
    assert again is second and seen == [second, second] and type(second.conditioner.embedders[0]).__name__.endswith(
        "WithCustomWords")
    sd_models.send_model_to_trash(second)
    assert all(p.is_meta for p in second.parameters())


# -- text conditioning ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ("sd1", "sd2v"))
def test_sd1_sd2_conditioning(webui, models, family):
    pp, shared = webui.prompt_parser, webui.shared
    sd_model = models[family][1](fresh=False)
    width = 128
    webui.fake_ldm.conditioning_calls.clear()
    assert sd_model.get_learned_conditioning(["a cat"]).shape == (1, 77, width)
    assert sd_model.get_learned_conditioning(["cat " * 100]).shape == (1, 154, width)
    assert sd_model.get_learned_conditioning(["a cat", "cat " * 100]).shape == (2, 154, width)  # padded chunks
    assert webui.fake_ldm.conditioning_calls == [["a cat"], ["cat " * 100], ["a cat", "cat " * 100]]
    plain = sd_model.get_learned_conditioning(["a cat"])
    assert torch.equal(plain, sd_model.get_learned_conditioning(["a cat"]))
    assert torch.equal(plain, sd_model.cond_stage_model(["a cat"]))
    assert not torch.allclose(plain, sd_model.get_learned_conditioning(["a (cat:1.5)"]))
    assert not torch.allclose(plain, sd_model.get_learned_conditioning(["a [cat]"]))
    plain.sum().backward()  # no torch.no_grad inside: gradients reach the text model
    assert any(p.grad is not None for p in sd_model.cond_stage_model.parameters())
    sd_model.zero_grad(set_to_none=True)

    pp.learned_conditioning_calls.clear()
    conds = pp.get_learned_conditioning(sd_model, pp.SdConditioning(["a cat", "a dog", "a cat"], width=64), 20)
    assert pp.learned_conditioning_calls == [(["a cat", "a dog", "a cat"], 20)]
    assert [len(c) for c in conds] == [1, 1, 1] and conds[0] is conds[2]
    assert conds[0][0].end_at_step == 20 and conds[0][0].cond.shape == (77, width)
    assert torch.equal(conds[0][0].cond, plain[0])

    if family == "sd1":  # a plain prompt is exactly the HF text model on [BOS] tokens [EOS] padded with EOS
        wrapped = sd_model.cond_stage_model.wrapped
        ids = wrapped.tokenizer("a cat", add_special_tokens=False)["input_ids"]
        tokens = torch.tensor([[49406, *ids] + [49407] * (76 - len(ids))])
        with torch.no_grad():
            expected = wrapped.transformer(input_ids=tokens).last_hidden_state
        assert torch.allclose(plain, expected)
        shared.opts.CLIP_stop_at_last_layers = 2
        try:
            assert not torch.allclose(plain, sd_model.get_learned_conditioning(["a cat"]))
        finally:
            shared.opts.CLIP_stop_at_last_layers = 1


def test_sdxl_conditioning(webui, models):
    pp, fake_ldm = webui.prompt_parser, webui.fake_ldm
    sd_model = models["sdxl"][1](fresh=False)
    c = sd_model.get_learned_conditioning(pp.SdConditioning(["a cat", "a dog"]))
    assert c["crossattn"].shape == (2, 77, 128 + 192) and c["vector"].shape == (2, 1728)
    assert sd_model.get_learned_conditioning(["cat " * 100])["crossattn"].shape == (1, 154, 320)
    z, pooled = sd_model.conditioner.embedders[1](["a cat", "a dog"])  # [pooled CLIP-G, then the size embeddings]
    assert torch.allclose(c["vector"][:, :192], pooled)
    height, width = 768, 512
    small = sd_model.get_learned_conditioning(pp.SdConditioning(["a cat"], width=width, height=height))["vector"][0]
    assert torch.equal(small[192:192 + 256], fake_ldm.timestep_embedding(torch.tensor([height]), 256)[0])
    assert torch.equal(small[192 + 256:192 + 512], fake_ldm.timestep_embedding(torch.tensor([width]), 256)[0])
    assert torch.equal(c["vector"][0, 192 + 1024:], fake_ldm.timestep_embedding(torch.tensor([1024, 1024]),
                                                                                   256).reshape(-1))
    emphasised = sd_model.get_learned_conditioning(["a (cat:1.5)"])["crossattn"]
    assert not torch.allclose(c["crossattn"][:1], emphasised)
    assert torch.equal(c["crossattn"][:1], sd_model.get_learned_conditioning(["a cat"])["crossattn"])
    negative = sd_model.get_learned_conditioning(pp.SdConditioning([""], is_negative_prompt=True))
    assert not negative["crossattn"].any() and not negative["vector"][:, :192].any()
    # sgm's GeneralConditioner runs a non-trainable embedder under torch.no_grad; the embedder itself does not
    assert not c["crossattn"].requires_grad and z.requires_grad

    conds = pp.get_learned_conditioning(sd_model, pp.SdConditioning(["a cat"], width=1024, height=1024), 1)
    assert conds[0][0].cond["crossattn"].shape == (77, 320) and conds[0][0].cond["vector"].shape == (1728,)
    assert torch.allclose(conds[0][0].cond["vector"], c["vector"][0], atol=1e-6)


def test_parse_prompt_attention(webui):
    parse = webui.prompt_parser.parse_prompt_attention
    assert parse("a (cat:1.5) [dog] (big)") == [["a ", 1.0], ["cat", 1.5], [" ", 1.0], ["dog", pytest.approx(1 / 1.1)],
                                               [" ", 1.0], ["big", pytest.approx(1.1)]]
    assert parse(r"\(literal\)") == [["(literal)", 1.0]]
    assert parse("") == [["", 1.0]]


# -- the built-in Lora extension ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_merged_network_restores_bit_identical(webui, models, family):
    networks = webui.networks
    sd_model = models[family][1](fresh=False)
    mapping = sd_model.network_layer_mapping  # built by the extension's on_model_loaded callback
    expected = {"sd1": ["transformer_text_model_encoder_layers_0_self_attn_q_proj"],
                "sd2v": ["model_transformer_resblocks_0_attn", "model_transformer_resblocks_0_mlp_c_fc"],
                "sdxl": ["0_transformer_text_model_encoder_layers_0_self_attn_q_proj",
                         "1_model_transformer_resblocks_0_attn"]}[family]
    assert set(expected) <= set(mapping)
    assert "diffusion_model_input_blocks_4_1_transformer_blocks_0_attn2_to_k" in mapping
    layers = [m for m in sd_model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm,
                                                              torch.nn.LayerNorm, torch.nn.MultiheadAttention))]
    assert all(m.network_current_names == () and m.network_weights_backup is None for m in layers)
    before = {k: v.clone() for k, v in sd_model.state_dict().items()}
    pointers = {k: v.data_ptr() for k, v in sd_model.state_dict().items()}
    names = networks.merge_random_network(sd_model, "dummy", seed=1)
    assert {k: v.data_ptr() for k, v in sd_model.state_dict().items()} == pointers  # in place
    assert set(expected) <= set(names) and networks.loaded_networks[0].name == "dummy"
    merged = [m for m in sd_model.modules() if m.__dict__.get("network_current_names")]
    assert sorted(m.network_layer_name for m in merged) == sorted(names)
    assert merged[0].network_current_names == (("dummy", 1.0, 1.0, None),)
    changed = [k for k, v in sd_model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.endswith(("weight", "in_proj_weight")) for k in changed)
    for layer in merged:
        backup = layer.network_weights_backup
        assert (isinstance(backup, tuple) and len(backup) == 2) if isinstance(
            layer, torch.nn.MultiheadAttention) else backup.device.type == "cpu"
        networks.network_restore_weights_from_backup(layer)
        assert layer.network_current_names  # restore does not reset the names …
        networks.network_reset_cached_weight(layer)  # … this does
        assert layer.network_current_names == () and layer.network_weights_backup is None
    assert all(torch.equal(v, before[k]) for k, v in sd_model.state_dict().items())
    networks.loaded_networks.clear()


def test_without_backup_weight_there_is_no_backup(webui, models, monkeypatch):
    sd_model = models["sd1"][1](fresh=False)
    monkeypatch.setitem(webui.shared.opts.data, "lora_without_backup_weight", True)
    names = webui.networks.merge_random_network(sd_model, "nobackup")
    layer = sd_model.network_layer_mapping[names[0]]
    assert layer.network_current_names and layer.network_weights_backup is None and layer.network_bias_backup is None
    webui.networks.loaded_networks.clear()


def test_list_available_networks(webui, ckpt_dir):
    networks = webui.networks
    lora_dir = Path(webui.shared.cmd_opts.lora_dir)
    save_file({"x": torch.zeros(1)}, str(lora_dir / "plain.safetensors"))
    save_file({"x": torch.zeros(1)}, str(lora_dir / "xl.safetensors"),
              metadata={"ss_base_model_version": "sdxl_base_v1-0", "ss_output_name": "xl-alias"})
    save_file({"x": torch.zeros(1)}, str(lora_dir / "two.safetensors"), metadata={"ss_v2": "True"})
    calls = networks.list_available_networks_calls
    networks.list_available_networks()
    assert networks.list_available_networks_calls == calls + 1
    assert sorted(networks.available_networks) == ["plain", "two", "xl"]
    assert networks.available_network_aliases["xl-alias"] is networks.available_networks["xl"]
    versions = {name: n.sd_version.name for name, n in networks.available_networks.items()}
    assert versions == {"plain": "Unknown", "two": "SD2", "xl": "SDXL"}


# -- --medvram / --lowvram -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", ("medvram", "lowvram"))
def test_lowvram_setup(webui, models, monkeypatch, flag):
    lowvram = webui.lowvram
    monkeypatch.setattr(webui.shared.cmd_opts, flag, True)
    sd_model = models["sd1"][1]()
    assert sd_model.lowvram is True and lowvram.is_needed(sd_model)
    assert sd_model.cond_stage_model.wrapped.transformer._forward_pre_hooks
    assert sd_model.first_stage_model._forward_pre_hooks
    unet = sd_model.model.diffusion_model
    if flag == "medvram":
        assert sd_model.model._forward_pre_hooks and not unet.input_blocks[0]._forward_pre_hooks
    else:
        assert not sd_model.model._forward_pre_hooks and unet.input_blocks[0]._forward_pre_hooks
        assert unet.middle_block._forward_pre_hooks and unet.time_embed._forward_pre_hooks
    sd_model.get_learned_conditioning(["a cat"])  # the text encoder's hook ran
    assert lowvram.module_in_gpu is sd_model.cond_stage_model.wrapped
    calls = lowvram.send_everything_to_cpu_calls
    webui.sd_models.unload_model_weights(sd_model)
    assert lowvram.send_everything_to_cpu_calls == calls + 1 and lowvram.module_in_gpu is None


def test_medvram_sdxl_only_for_sdxl(webui, models, monkeypatch):
    monkeypatch.setattr(webui.shared.cmd_opts, "medvram_sdxl", True)
    assert models["sd1"][1]().lowvram is False
    sdxl = models["sdxl"][1]()
    assert sdxl.lowvram is True and sdxl.conditioner._forward_pre_hooks


# -- processing, state --------------------------------------------------------------------------------------------

def test_process_images(webui, models):
    processing, call_queue = webui.processing, webui.call_queue
    sd_model = models["sd1"][1](fresh=False)

    def run(**fields):
        p = processing.StableDiffusionProcessingTxt2Img(sd_model=webui.shared.sd_model, prompt="a cat", seed=3,
                                                        sampler_name="Euler", scheduler="Automatic", steps=4,
                                                        width=64, height=48, do_not_save_samples=True,
                                                        do_not_save_grid=True, **fields)
        with call_queue.queue_lock:
            processed = processing.process_images(p)
        p.close()
        return processed

    processing.process_images_calls.clear()
    closed = processing.close_calls
    one = run(batch_size=2, n_iter=2)
    assert len(one.images) == 4 and one.seed == 3 and one.images[0].size == (64, 48)
    assert "Seed: 3" in one.info and "Steps: 4" in one.info
    assert len({im.getpixel((0, 0)) for im in one.images}) == 4  # seeds 3, 4, 5, 6
    again = run(batch_size=2, n_iter=2)
    assert [im.tobytes() for im in again.images] == [im.tobytes() for im in one.images]
    assert run(negative_prompt="blurry").images[0].getpixel((0, 0)) != one.images[0].getpixel((0, 0))
    calls = processing.process_images_calls
    assert len(calls) == 3 and all(c["lock_held"] and c["sd_model"] is sd_model for c in calls)
    assert processing.close_calls == closed + 3
    p = processing.StableDiffusionProcessingTxt2Img()
    assert (p.seed, p.steps, p.width, p.height, p.batch_size, p.n_iter, p.override_settings) == (
        -1, 50, 512, 512, 1, 1, {})
    assert p.enable_hr is False and p.disable_extra_networks is False


def test_state_progress(webui):
    state = webui.shared.state
    state.begin(job="x")
    assert state.progress_snapshot()["progress"] == 0 and state.job_count == -1
    state.job_count, state.job_no, state.sampling_steps, state.sampling_step = 4, 1, 10, 5
    snapshot = state.progress_snapshot()
    assert snapshot["progress"] == pytest.approx(1 / 4 + 1 / 4 * 5 / 10) and snapshot["active"]
    state.interrupt()
    state.skip()
    assert state.interrupted and state.skipped
    state.end()
    assert state.job == "" and state.job_count == 0 and not state.progress_snapshot()["active"]


# -- ui-config.json ---------------------------------------------------------------------------------------------------

def test_ui_config_restores_saved_values(ckpt_dir, tmp_path):
    import gradio as gr

    config = tmp_path / "ui-config.json"

    def start(default):
        """One webui start: the extension builds its tab with `default` as the Model's value."""
        with fake_webui_modules(ckpt_dir, tmp_path / "Lora", ui_config=config) as w:
            built = {}

            def on_ui_tabs():
                with gr.Blocks(analytics_enabled=False) as tab:
                    built["model"] = gr.Dropdown(choices=["a", "b", "c"], value=default, label="Model")
                    built["vae"] = gr.Dropdown(choices=["a", "b", "c"], value=default, label="VAE")
                    built["vae"].do_not_save_to_config = True
                    built["mode"] = gr.Radio(choices=["x", "y"], value="x", label="Mode")
                    built["name"] = gr.Textbox(value="lora", label="Name")
                    built["unlabelled"] = gr.Textbox(value="u")
                return [(tab, "Train", "tt")]

            w.script_callbacks.on_ui_tabs(on_ui_tabs)
            w.webui.create_ui()
            return {k: v.value for k, v in built.items()}

    assert start("a") == {"model": "a", "vae": "a", "mode": "x", "name": "lora", "unlabelled": "u"}
    saved = json.loads(config.read_text(encoding="utf-8"))
    assert saved["tt/Model/value"] == "a" and saved["tt/Name/value"] == "lora" and saved["tt/Mode/value"] == "x"
    assert not [k for k in saved if k.startswith("tt/VAE/")] and not [k for k in saved if "u" == k.split("/")[1]]
    saved.update({"tt/Model/value": "b", "tt/VAE/value": "b", "tt/Mode/value": "not a choice",
                  "tt/Name/value": "mine"})
    config.write_text(json.dumps(saved), encoding="utf-8")
    assert start("c") == {"model": "b", "vae": "c", "mode": "x", "name": "mine", "unlabelled": "u"}
    saved["tt/Model/value"] = "gone"  # no longer among the choices: the built value stays
    config.write_text(json.dumps(saved), encoding="utf-8")
    assert start("c")["model"] == "c"
