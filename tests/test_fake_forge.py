"""The fake Forge Neo (tests/fake_forge) against forge-api.md F1–F9, in-process: module paths and the A1111 names that
are absent, the lazy model (FakeInitialModel until forge_model_reload, its stale check), the Neo object graph built
from the project's demo checkpoints (keys, dtypes, inference tensors, `Linear` not an `nn.Linear`), the LoRA merge
and its undoing, conditioning, the unordered checkpoint list, processing, the queue, and a teardown that lets the
fake A1111 run in the same process afterwards."""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

HERE = Path(__file__).resolve().parent


def _load_by_path(name: str, path: Path):
    """Both fakes' drivers are called inprocess.py: import each under a name of its own."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


forge_inprocess = _load_by_path("fake_forge_inprocess", HERE / "fake_forge" / "inprocess.py")
fake_forge_modules = forge_inprocess.fake_forge_modules


@pytest.fixture(scope="module")
def ckpt_dir(demo_models, tmp_path_factory):
    """SD1, SDXL and SD2 demo checkpoints, an SD1 with a `parameterization: v` yaml and an SDXL with a `v_pred` key."""
    folder = tmp_path_factory.mktemp("forge") / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    for family in ("sd1", "sdxl", "sd2"):
        for suffix in (".safetensors", ".yaml"):
            os.symlink(demo_models[family].with_suffix(suffix), folder / f"tiny-{family}{suffix}")
    os.symlink(demo_models["sd1"], folder / "vpred-sd1.safetensors")
    (folder / "vpred-sd1.yaml").write_text("model:\n  params:\n    parameterization: v\n", encoding="utf-8")
    tensors = load_file(demo_models["sdxl"])
    tensors["v_pred"] = torch.tensor([])
    save_file(tensors, folder / "vpred-sdxl.safetensors")
    return folder


@pytest.fixture(scope="module")
def forge(ckpt_dir):
    with fake_forge_modules(ckpt_dir, ckpt_dir.parent / "Lora") as namespace:
        yield namespace


def load(forge, name):
    """Select `name` (lazily) and load it as a generation would. A model this module loaded before is put back
    instead (the test's own speed-up: each load costs a gc.collect); tests that merge a LoRA leave it clean."""
    cache = forge.__dict__.setdefault("test_cache", {})
    model_data = forge.sd_models.model_data
    forge.main_entry.checkpoint_change(name)
    if name in cache:
        model_data.sd_model, model_data.forge_hash = cache[name], str(model_data.forge_loading_parameters)
    elif model_data.sd_model is None:  # (after a failed load the hash of the one before may still match)
        model_data.forge_hash = ""
    sd_model, _ = forge.sd_models.forge_model_reload()
    cache[name] = sd_model
    return sd_model


def family_file(ckpt_dir, family):
    return ckpt_dir / f"tiny-{family}.safetensors"


def under(tensors, prefix):
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# -- module layout (F1, F2, F3, F5, F8, F9) ------------------------------------------------------------------------

def test_neo_module_paths_exist_and_a1111_ones_do_not(forge):
    import importlib

    for name in ("modules.shared", "modules.shared_state", "modules.shared_items", "modules.sd_models",
                 "modules.script_callbacks", "modules.call_queue", "modules.devices", "modules.ui_components",
                 "modules.ui_common", "modules.processing", "modules.paths_internal", "modules.paths",
                 "modules.scripts", "modules.ui_loadsave", "modules_forge.main_entry", "modules_forge.main_thread",
                 "backend.memory_management", "backend.utils", "backend.loader", "backend.operations",
                 "backend.diffusion_engine.base", "backend.diffusion_engine.sd15", "backend.diffusion_engine.sdxl",
                 "backend.patcher.base", "backend.patcher.unet", "backend.patcher.clip", "backend.patcher.vae",
                 "backend.patcher.lora", "huggingface_guess", "networks", "network"):
        assert importlib.import_module(name) is not None
    for name in ("sd_hijack", "sd_hijack_clip", "sd_models_xl", "sd_models_config", "sd_emphasis", "hypernetworks",
                 "lowvram", "sd_hijack_open_clip"):
        with pytest.raises(ImportError):
            importlib.import_module(f"modules.{name}")
    for name in ("load_model", "reload_model_weights", "send_model_to_cpu", "send_model_to_device",
                 "send_model_to_trash", "read_state_dict", "get_checkpoint_state_dict"):
        assert not hasattr(forge.sd_models, name), name
    assert not hasattr(forge.sd_models.model_data, "loaded_sd_models")
    assert hasattr(forge.sd_models, "forge_model_reload") and forge.sd_models.unload_model_weights
    for name in ("network_lora", "network_hada", "lyco_helpers", "lora_patches"):
        assert name not in sys.modules


def test_shared_opts_cmd_opts_and_state(forge, ckpt_dir):
    shared = forge.shared
    assert shared.opts.CLIP_stop_at_last_layers == 2 and shared.opts.emphasis == "Original"
    assert shared.opts.forge_preset == "sd" and shared.opts.forge_additional_modules == []
    assert shared.opts.forge_unet_storage_dtype == "Automatic"
    cmd = shared.cmd_opts
    assert cmd.lora_dir == str(ckpt_dir.parent / "Lora") and cmd.lora_dirs == []
    assert cmd.ckpt_dirs == [str(ckpt_dir)]
    for name in ("ckpt_dir", "models_dir", "no_half", "precision"):
        assert not hasattr(cmd, name), name
    state = shared.state
    assert type(state).__module__ == "modules.shared_state"
    for name in ("begin", "end", "interrupt", "skip", "stop_generating"):
        assert callable(getattr(state, name))
    state.begin(job="x")
    state.interrupt()
    state.stop_generating()
    assert state.interrupted and state.stopping_generation and state.job == "x" and state.job_count == -1
    state.begin(job="y")
    assert not state.interrupted and not state.stopping_generation
    state.end()
    assert state.job == "" and state.job_count == 0
    for field in ("job_no", "sampling_step", "sampling_steps", "textinfo", "current_image"):
        assert hasattr(state, field)


def test_signatures(forge):
    mm = forge.memory_management
    assert "free_all" not in inspect.signature(mm.free_memory).parameters
    with pytest.raises(TypeError):
        mm.free_memory(0, mm.get_torch_device(), free_all=True)
    assert list(inspect.signature(mm.get_free_memory).parameters) == ["dev", "torch_free_too"]
    free = mm.get_free_memory(torch_free_too=True)
    assert isinstance(free, tuple) and free[0] > 0 and mm.total_vram > 0 and mm.cpu_mode()
    assert mm.vram_state == mm.VRAMState.DISABLED
    for fn in (forge.script_callbacks.on_ui_tabs, forge.script_callbacks.on_model_loaded):
        assert inspect.signature(fn).parameters["name"].kind == inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(forge.main_entry.checkpoint_change).parameters) == ["ckpt_name", "preset"]
    assert inspect.signature(forge.sd_models.checkpoint_tiles).parameters["use_short"].default is False
    ui = forge.ui_common
    assert ui.ToolButton is forge.ui_components.ToolButton and ui.InputAccordion and ui.FormRow
    assert callable(ui.create_refresh_button)


def test_devices_shim(forge):
    devices, mm = forge.devices, forge.memory_management
    assert devices.device == torch.device("cpu") == mm.get_torch_device()
    assert devices.dtype == torch.float32 == devices.dtype_unet and devices.dtype_vae == torch.float32
    assert devices.dtype_inference == torch.float32
    with devices.autocast(), devices.without_autocast():
        pass
    before = mm.soft_empty_cache_calls
    devices.torch_gc()
    assert mm.soft_empty_cache_calls == before + 1
    layer = torch.nn.Linear(4, 4)
    assert mm.module_size(layer) == 20 * 4
    assert mm.cast_to_device(torch.ones(2), torch.device("cpu"), torch.float16).dtype == torch.float16


# -- the checkpoint list (F5) --------------------------------------------------------------------------------------

def test_checkpoint_list_order_varies_and_tiles_are_names(forge, monkeypatch):
    sd_models = forge.sd_models
    orders = set()
    for seed in range(8):
        monkeypatch.setenv("FAKE_FORGE_LIST_SEED", str(seed))
        sd_models.list_models()
        orders.add(tuple(sd_models.checkpoint_tiles()))
    assert len(orders) > 1 and len({frozenset(o) for o in orders}) == 1
    monkeypatch.setenv("FAKE_FORGE_LIST_SEED", "3")
    sd_models.list_models()
    first = sd_models.checkpoint_tiles()
    sd_models.list_models()
    assert sd_models.checkpoint_tiles() == first
    assert set(first) == {"tiny-sd1.safetensors", "tiny-sdxl.safetensors", "tiny-sd2.safetensors",
                          "vpred-sd1.safetensors", "vpred-sdxl.safetensors"}
    info = sd_models.get_closet_checkpoint_match("tiny-sd1.safetensors")
    assert info.name == "tiny-sd1.safetensors" and info.title == f"tiny-sd1.safetensors [{info.shorthash}]"
    assert info.name_for_extra == "tiny-sd1" and info.model_name == "tiny-sd1"
    assert sd_models.get_closet_checkpoint_match(info.title) is info
    assert info.short_title in sd_models.checkpoint_tiles(use_short=True)
    assert sd_models.read_metadata_from_safetensors(info.filename)["traintrain.demo_model"]


# -- the lazy model (F3, F4.2) -------------------------------------------------------------------------------------

def test_the_model_loads_only_in_forge_model_reload(ckpt_dir, tmp_path):
    with fake_forge_modules(ckpt_dir, tmp_path / "Lora") as f:
        sd_models = f.sd_models
        assert type(f.shared.sd_model).__name__ == "FakeInitialModel"
        assert not hasattr(f.shared.sd_model, "forge_objects")
        assert sd_models.model_data.forge_loading_parameters == {} and f.backend_utils.files_read == []
        f.main_entry.checkpoint_change("tiny-sd1.safetensors")
        params = sd_models.model_data.forge_loading_parameters
        assert params["checkpoint_info"].name == "tiny-sd1.safetensors" and f.processing.need_global_unload
        assert set(params) == {"checkpoint_info", "additional_modules", "unet_storage_dtype"}
        assert f.shared.opts.sd_model_checkpoint == "tiny-sd1.safetensors"
        assert type(f.shared.sd_model).__name__ == "FakeInitialModel" and f.backend_utils.files_read == []
        assert sd_models.model_data.forge_hash != str(sd_models.model_data.forge_loading_parameters)  # stale
        seen = []
        f.script_callbacks.on_model_loaded(seen.append)
        sd_model, reloaded = sd_models.forge_model_reload()
        assert reloaded and f.shared.sd_model is sd_model and seen == [sd_model]
        assert f.backend_utils.files_read == [str(ckpt_dir / "tiny-sd1.safetensors")]
        assert sd_models.model_data.forge_hash == str(sd_models.model_data.forge_loading_parameters)
        assert sd_models.forge_model_reload() == (sd_model, False) and len(f.backend_utils.files_read) == 1
        assert [c["reloaded"] for c in sd_models.forge_model_reload_calls] == [True, False]
        f.main_entry.checkpoint_change("vpred-sd1.safetensors")
        assert f.shared.sd_model is sd_model  # still the old one: selecting is lazy
        unloads = f.memory_management.unload_all_models_calls
        other, reloaded = sd_models.forge_model_reload()
        assert reloaded and other is not sd_model and f.shared.sd_model is other
        assert other.filename == str(ckpt_dir / "vpred-sd1.safetensors")
        assert f.memory_management.unload_all_models_calls == unloads + 1  # the old model was dropped first


def test_forge_model_reload_before_selection_fails_and_leaves_none(ckpt_dir, tmp_path):
    with fake_forge_modules(ckpt_dir, tmp_path / "Lora") as f:
        with pytest.raises(KeyError):
            f.sd_models.forge_model_reload()  # forge_loading_parameters is still {}
        assert f.shared.sd_model is None


def test_sd2_is_refused(forge):
    forge.main_entry.checkpoint_change("tiny-sd2.safetensors")
    with pytest.raises(ValueError, match="Failed to recognize model type!"):
        forge.sd_models.forge_model_reload()
    assert forge.shared.sd_model is None


@pytest.mark.parametrize(("name", "expected"), [("tiny-sd1.safetensors", "epsilon"),
                                                ("vpred-sd1.safetensors", "v_prediction"),
                                                ("tiny-sdxl.safetensors", "epsilon"),
                                                ("vpred-sdxl.safetensors", "v_prediction")])
def test_prediction_type(forge, name, expected):
    predictor = load(forge, name).forge_objects.unet.model.predictor
    assert predictor.prediction_type == expected
    assert predictor.alphas_cumprod.shape == predictor.sigmas.shape == (1000,)
    assert torch.allclose(predictor.sigmas, ((1 - predictor.alphas_cumprod) / predictor.alphas_cumprod).sqrt(),
                          rtol=1e-4)


# -- the object graph (F4.1, F4.2, F4.3) ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_the_object_graph(forge, ckpt_dir, family):
    import transformers

    sd_model = load(forge, f"tiny-{family}.safetensors")
    file = load_file(family_file(ckpt_dir, family))
    info = forge.sd_models.get_closet_checkpoint_match(f"tiny-{family}.safetensors")
    assert type(sd_model).__name__ == ("StableDiffusionXL" if family == "sdxl" else "StableDiffusion")
    assert type(sd_model).__mro__[1].__name__ == "ForgeDiffusionEngine" and not isinstance(sd_model, torch.nn.Module)
    assert type(sd_model.model_config).__name__ == ("SDXL" if family == "sdxl" else "SD15")
    assert (sd_model.is_sd1, sd_model.is_sdxl, sd_model.is_inpaint) == (family == "sd1", family == "sdxl", False)
    assert sd_model.current_lora_hash == "[]" and sd_model.sd_checkpoint_info is info
    assert sd_model.filename == info.filename and sd_model.sd_model_hash == info.shorthash
    for name in ("is_sd2", "sd_model_checkpoint", "model", "conditioner", "apply_model", "parameterization"):
        assert not hasattr(sd_model, name), name
    objects = sd_model.forge_objects
    assert objects is not sd_model.forge_objects_original and objects.unet is sd_model.forge_objects_original.unet
    assert type(objects.unet).__name__ == "UnetPatcher" and type(objects.unet.model).__name__ == "KModel"
    unet = objects.unet.model.diffusion_model
    assert type(unet).__name__ == "IntegratedUNet2DConditionModel"
    assert unet.storage_dtype == torch.float32 and unet.computation_dtype == torch.float32
    unet_file = under(file, "model.diffusion_model.")
    state = unet.state_dict()
    site = "input_blocks.4.1" if family == "sdxl" else "input_blocks.1.1"
    assert set(state) == set(unet_file) and f"{site}.transformer_blocks.0.attn1.to_q.weight" in state
    assert all(torch.equal(state[k], v.float()) and state[k].dtype == torch.float32 for k, v in unet_file.items())
    assert ("label_emb.0.0.weight" in state) == (family == "sdxl")
    vae = sd_model.first_stage_model
    assert vae is objects.vae.first_stage_model and type(vae).__name__ == "IntegratedAutoencoderKL"
    vae_file = under(file, "first_stage_model.")
    assert set(vae.state_dict()) == set(vae_file) and all(v.dtype == torch.float32 for v in vae.state_dict().values())
    assert vae.scaling_factor == (0.13025 if family == "sdxl" else 0.18215)
    clip = objects.clip
    assert sd_model.cond_stage_model is clip.cond_stage_model
    assert type(clip.cond_stage_model).__name__ == "JointTextEncoder"
    assert isinstance(clip.cond_stage_model, torch.nn.ModuleDict) and type(clip.patcher).__name__ == "ModelPatcher"
    towers = ["clip_l", "clip_g"] if family == "sdxl" else ["clip_l"]
    assert list(clip.cond_stage_model.keys()) == towers and sorted(clip.tokenizer) == sorted(towers)
    te_state = clip.cond_stage_model.state_dict()
    for tower in towers:
        assert type(clip.cond_stage_model[tower]).__name__ == "IntegratedCLIP"
        assert isinstance(clip.cond_stage_model[tower].transformer, transformers.CLIPTextModel)
        assert isinstance(clip.tokenizer[tower], transformers.CLIPTokenizer)
        assert f"{tower}.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in te_state
        assert f"{tower}.transformer.text_model.encoder.layers.1.mlp.fc1.weight" in te_state
        assert f"{tower}.transformer.text_projection.weight" in te_state and f"{tower}.logit_scale" in te_state
    assert not any("in_proj" in k or "position_ids" in k for k in te_state)
    assert all(v.dtype == torch.float16 for k, v in te_state.items() if ".embeddings." not in k), "stored in fp16"
    assert all(v.dtype in (torch.float16, torch.float32) for v in te_state.values())  # fp32 after a conditioning
    l_prefix = "conditioner.embedders.0.transformer." if family == "sdxl" else "cond_stage_model.transformer."
    for key, value in under(file, l_prefix).items():
        if not key.endswith("position_ids"):
            assert torch.equal(te_state[f"clip_l.transformer.{key}"], value), key
    if family == "sdxl":
        g = under(file, "conditioner.embedders.1.model.")
        q, k, v = g["transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
        layer = "clip_g.transformer.text_model.encoder.layers.1.self_attn."
        assert torch.equal(te_state[layer + "q_proj.weight"], q) and torch.equal(te_state[layer + "v_proj.weight"], v)
        assert torch.equal(te_state[layer + "k_proj.weight"], k)
        assert torch.equal(te_state["clip_g.transformer.text_projection.weight"], g["text_projection"].T)
        assert torch.equal(te_state["clip_g.transformer.text_model.final_layer_norm.weight"], g["ln_final.weight"])


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_linear_is_not_nn_linear(forge, family):
    sd_model = load(forge, f"tiny-{family}.safetensors")
    unet = dict(sd_model.forge_objects.unet.model.diffusion_model.named_modules())
    clip = dict(sd_model.cond_stage_model.named_modules())
    site = "input_blocks.4.1" if family == "sdxl" else "input_blocks.1.1"
    for layer in (unet["time_embed.0"], unet[f"{site}.transformer_blocks.0.attn1.to_q"],
                  clip["clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj"],
                  clip["clip_l.transformer.text_projection"]):
        assert type(layer).__qualname__ == "ForgeOperations.Linear"
        assert isinstance(layer, torch.nn.Module) and not isinstance(layer, torch.nn.Linear)
    assert not any(isinstance(m, torch.nn.Linear) for m in [*unet.values(), *clip.values()])
    assert isinstance(unet["input_blocks.0.0"], torch.nn.Conv2d) and isinstance(unet["out.0"], torch.nn.GroupNorm)
    assert isinstance(unet[f"{site}.transformer_blocks.0.norm1"], torch.nn.LayerNorm)
    assert isinstance(clip["clip_l.transformer.text_model.final_layer_norm"], torch.nn.LayerNorm)
    assert torch.nn.Linear.__module__ == "torch.nn.modules.linear"  # the swap was undone


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_every_weight_is_an_inference_tensor(forge, family):
    sd_model = load(forge, f"tiny-{family}.safetensors")
    modules = [sd_model.forge_objects.unet.model, sd_model.cond_stage_model, sd_model.first_stage_model]
    assert all(p.is_inference() and not p.requires_grad for m in modules for p in m.parameters())
    layer = sd_model.forge_objects.unet.model.diffusion_model.time_embed[0]
    x = torch.randn(2, layer.in_features, requires_grad=True)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        layer(x).sum().backward()
    copy = torch.nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        copy.weight.copy_(layer.weight.detach().to(copy=True))
    copy(x).sum().backward()
    assert x.grad is not None


# -- LoRA merge, unload, restore (F4.4, F5) ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_lora_merge_survives_unload_and_refresh_loras_restores_bit_identical(forge, ckpt_dir, family):
    mm = forge.memory_management
    sd_model = load(forge, f"tiny-{family}.safetensors")
    assert sd_model.current_lora_hash == "[]"
    unet_model = sd_model.forge_objects_original.unet.model
    te_model = sd_model.forge_objects_original.clip.patcher.model
    base_unet = {k: v.clone() for k, v in unet_model.state_dict().items()}
    base_te = {k: v.clone() for k, v in te_model.state_dict().items()}
    originals = dict(unet_model.named_parameters())
    keys = forge.networks.merge_random_lora(sd_model, name="random", seed=1)
    assert len(keys["unet"]) == 3 and len(keys["clip"]) == (4 if family == "sdxl" else 2)
    assert sd_model.current_lora_hash != "[]" and "random" in sd_model.current_lora_hash
    assert sd_model.forge_objects.unet is not sd_model.forge_objects_original.unet
    assert sd_model.forge_objects.unet.lora_loader is sd_model.forge_objects_original.unet.lora_loader
    assert unet_model.lora_loader is sd_model.forge_objects.unet.lora_loader
    assert [n.name for n in forge.networks.loaded_networks] == ["random"]
    loader = unet_model.lora_loader
    assert set(loader.backup) == set(keys["unet"])
    for key in keys["unet"]:
        merged = dict(unet_model.named_parameters())[key]
        assert merged is not originals[key] and loader.backup[key] is originals[key]  # replaced, not in place
        assert merged.is_inference() and not torch.equal(merged, base_unet[key])
    assert all(torch.equal(v, base_unet[k]) for k, v in unet_model.state_dict().items() if k not in keys["unet"])
    te_now = te_model.state_dict()
    assert all(not torch.equal(te_now[k], base_te[k]) for k in keys["clip"])
    assert mm.current_loaded_models and mm.current_loaded_models[0].model is sd_model.forge_objects.clip.patcher
    calls = mm.unload_all_models_calls
    mm.unload_all_models()
    assert mm.unload_all_models_calls == calls + 1 and mm.current_loaded_models == []
    assert all(p.device.type == "cpu" for p in unet_model.parameters())
    assert not torch.equal(unet_model.state_dict()[keys["unet"][0]], base_unet[keys["unet"][0]]), "still merged"
    sd_model.forge_objects_original.unet.refresh_loras()
    sd_model.forge_objects_original.clip.patcher.refresh_loras()
    assert loader.backup == {} and te_model.lora_loader.backup == {}
    assert all(torch.equal(v, base_unet[k]) for k, v in unet_model.state_dict().items())
    assert all(torch.equal(v, base_te[k]) for k, v in te_model.state_dict().items())
    assert all(dict(unet_model.named_parameters())[k] is originals[k] for k in keys["unet"])
    file = under(load_file(family_file(ckpt_dir, family)), "model.diffusion_model.")
    restored = unet_model.diffusion_model.state_dict()
    assert all(torch.equal(restored[k], v.float()) for k, v in file.items())
    forge.networks.load_networks([])  # what the next generation without a LoRA does: the original patchers again
    assert sd_model.current_lora_hash == "[]" and sd_model.forge_objects.unet.lora_patches == {}


def test_a_generation_without_the_lora_restores_and_the_same_name_is_not_reapplied(forge):
    sd_model = load(forge, "tiny-sd1.safetensors")
    unet_model = sd_model.forge_objects_original.unet.model
    base = {k: v.clone() for k, v in unet_model.state_dict().items()}
    keys = forge.networks.merge_random_lora(sd_model, name="again", seed=2)["unet"]
    merged = unet_model.state_dict()[keys[0]].clone()
    forge.networks.merge_random_lora(sd_model, name="again", seed=3)  # same name: current_lora_hash matches
    assert torch.equal(unet_model.state_dict()[keys[0]], merged)
    p = forge.processing.StableDiffusionProcessingTxt2Img(prompt="plain", steps=2, width=64, height=64, seed=1,
                                                          do_not_save_samples=True, do_not_save_grid=True)
    with forge.call_queue.queue_lock:
        forge.processing.process_images(p)
    assert sd_model.current_lora_hash == "[]"
    assert all(torch.equal(v, base[k]) for k, v in unet_model.state_dict().items())


def test_conditioning_after_unload_merges_a_restored_lora_back_into_the_text_encoder(forge):
    """F4.4 + F7: get_learned_conditioning loads forge_objects.clip.patcher — still the LoRA clone — and loading
    refreshes its LoRAs. Putting the original patchers back (what a generation without the LoRA does) avoids it."""
    mm = forge.memory_management
    sd_model = load(forge, "tiny-sd1.safetensors")
    te_model = sd_model.forge_objects_original.clip.patcher.model
    base = {k: v.clone() for k, v in te_model.state_dict().items()}
    key = forge.networks.merge_random_lora(sd_model, name="comes-back", seed=4)["clip"][0]
    mm.unload_all_models()
    sd_model.forge_objects_original.unet.refresh_loras()
    sd_model.forge_objects_original.clip.patcher.refresh_loras()
    assert torch.equal(te_model.state_dict()[key], base[key])
    sd_model.get_learned_conditioning(["a cat"])
    assert not torch.equal(te_model.state_dict()[key], base[key]), "merged again"
    forge.networks.load_networks([])
    mm.unload_all_models()
    sd_model.get_learned_conditioning(["a cat"])
    assert all(torch.equal(v, base[k]) for k, v in te_model.state_dict().items())


# -- conditioning (F7) -----------------------------------------------------------------------------------------

def test_sd1_conditioning(forge):
    sd_model = load(forge, "tiny-sd1.safetensors")
    base = forge.engine_base
    width = sd_model.cond_stage_model.clip_l.transformer.config.hidden_size
    base.conditioning_calls.clear()
    c = sd_model.get_learned_conditioning(["a cat", "a dog"])
    assert c.shape == (2, 77, width) and c.is_inference() and c.dtype == torch.float32
    te_state = sd_model.cond_stage_model.state_dict()  # Neo makes the embedding modules fp32 in place
    assert all(v.dtype == (torch.float32 if ".embeddings." in k else torch.float16) for k, v in te_state.items())
    assert base.conditioning_calls == [["a cat", "a dog"]]
    assert sd_model.get_learned_conditioning([" ".join(["cat"] * 80)]).shape == (1, 154, width)
    sd_model.set_clip_skip(1)
    last = sd_model.get_learned_conditioning(["a cat"])
    sd_model.set_clip_skip(2)
    penultimate = sd_model.get_learned_conditioning(["a cat"])
    assert not torch.allclose(last, penultimate)
    assert torch.equal(sd_model.get_learned_conditioning(["a cat"]), penultimate)  # the engine keeps the value
    assert not torch.allclose(sd_model.get_learned_conditioning(["(a cat:1.5)"]), penultimate)
    layer = torch.nn.Linear(width, 2)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        layer(penultimate).sum().backward()
    layer(penultimate.clone()).sum().backward()


def test_sdxl_conditioning(forge):
    sd_model = load(forge, "tiny-sdxl.safetensors")
    towers = sd_model.cond_stage_model
    d_l, d_g = (towers[t].transformer.config.hidden_size for t in ("clip_l", "clip_g"))
    pooled = towers["clip_g"].transformer.text_projection.weight.shape[0]
    c = sd_model.get_learned_conditioning(["a cat", "a dog"])
    assert c["crossattn"].shape == (2, 77, d_l + d_g) and c["vector"].shape == (2, pooled + 6 * 256)
    assert c["crossattn"].is_inference() and c["vector"].is_inference()
    sd_model.set_clip_skip(1)
    one = sd_model.get_learned_conditioning(["a cat"])
    sd_model.set_clip_skip(2)
    two = sd_model.get_learned_conditioning(["a cat"])
    assert torch.equal(one["crossattn"], two["crossattn"])  # clip skip is at least 2 for SDXL
    sd_model.set_clip_skip(3)
    assert not torch.allclose(sd_model.get_learned_conditioning(["a cat"])["crossattn"], two["crossattn"])
    sd_model.set_clip_skip(2)

    class Prompts(list):
        width, height, is_negative_prompt = 512, 768, False

    sized = sd_model.get_learned_conditioning(Prompts(["a cat"]))
    assert torch.equal(sized["vector"][:, :pooled], two["vector"][:, :pooled])
    assert not torch.equal(sized["vector"][:, pooled:], two["vector"][:, pooled:])
    negative = Prompts([""])
    negative.is_negative_prompt = True
    zero = sd_model.get_learned_conditioning(negative)
    assert not zero["crossattn"].any() and not zero["vector"][:, :pooled].any()


# -- processing, queue, callbacks (F2, F7, F8) ---------------------------------------------------------------------

def test_process_images_loads_the_selected_checkpoint(forge):
    processing, state = forge.processing, forge.shared.state
    held = getattr(forge.shared.sd_model, "filename", None) or ""
    forge.main_entry.checkpoint_change("tiny-sd1.safetensors" if held.endswith("vpred-sd1.safetensors")
                                       else "vpred-sd1.safetensors")  # (a checkpoint not held now)

    def run(**fields):
        p = processing.StableDiffusionProcessingTxt2Img(
            prompt=fields.pop("prompt", "a cat"), negative_prompt="", steps=3, width=64, height=48, cfg_scale=5,
            sampler_name="Euler", scheduler="Automatic", seed=fields.pop("seed", 7), do_not_save_samples=True,
            do_not_save_grid=True)
        assert p.scripts is None
        with forge.call_queue.queue_lock:
            state.begin(job="test")
            processed = processing.process_images(p)
            state.end()
        return processed

    reloads = len(forge.sd_models.forge_model_reload_calls)
    first = run()
    assert forge.sd_models.forge_model_reload_calls[reloads]["reloaded"]
    assert forge.sd_models.forge_model_reload_calls[-1]["lock_held"]
    assert processing.process_images_calls[-1]["lock_held"] and forge.shared.sd_model.is_sd1
    assert first.images[0].size == (64, 48) and "Seed: 7" in first.info
    assert run().images[0].getpixel((0, 0)) == first.images[0].getpixel((0, 0))
    assert run(seed=8).images[0].getpixel((0, 0)) != first.images[0].getpixel((0, 0))
    run(prompt="a cat <lora:nothing:0.5>")
    assert forge.networks.load_networks_calls[-1]["names"] == ["nothing"]
    assert processing.process_images_calls[-1]["sd_model"] is forge.shared.sd_model
    assert not processing.need_global_unload


def test_queue_lock_is_fifo_and_gpu_call_wraps(forge):
    call_queue, state = forge.call_queue, forge.shared.state
    order = []
    call_queue.queue_lock.acquire()

    def worker(i):
        with call_queue.queue_lock:
            order.append(i)

    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=worker, args=(i,)))
        threads[-1].start()
        time.sleep(0.05)
    call_queue.queue_lock.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3] and not call_queue.queue_lock.locked()

    def job():
        assert call_queue.queue_lock.locked() and state.job == "job"
        state.interrupt()
        return "a", "<p>done</p>"

    out = call_queue.wrap_gradio_gpu_call(job, extra_outputs=[None])()
    assert out[0] == "a" and out[1].startswith("<p>done</p>") and not state.interrupted

    def broken():
        raise ValueError("nope")

    assert "ValueError: nope" in call_queue.wrap_gradio_gpu_call(broken, extra_outputs=[None])()[-1]
    assert forge.main_thread.run_and_wait_result(lambda x: x + 1, 1) == 2


def test_webui_loads_an_extension_and_builds_its_tab(forge, tmp_path):
    import gradio as gr

    extension = tmp_path / "ext"
    (extension / "scripts").mkdir(parents=True)
    (extension / "helper_mod_for_fake_forge.py").write_text("VALUE = 3\n", encoding="utf-8")
    (extension / "scripts" / "tab.py").write_text(
        "import gradio as gr\n"
        "import helper_mod_for_fake_forge\n"
        "from modules import script_callbacks, scripts, ui_common\n"
        "BASEDIR = scripts.basedir()\n"
        "def on_ui_tabs():\n"
        "    with gr.Blocks(analytics_enabled=False) as blocks:\n"
        "        box = gr.Dropdown(label='Model', choices=['a'], value='a', elem_id='x_model')\n"
        "        ui_common.create_refresh_button(box, lambda: None, lambda: {'choices': ['a']}, 'x_refresh')\n"
        "        with ui_common.InputAccordion(False, label='More') as acc:\n"
        "            gr.Textbox(label='Inside')\n"
        "    return [(blocks, 'Ext', 'ext')]\n"
        "script_callbacks.on_ui_tabs(on_ui_tabs, name='ext')\n", encoding="utf-8")
    forge.webui.load_extension_scripts(str(extension))
    assert str(extension) in sys.path  # extension roots stay on sys.path
    assert sys.modules["helper_mod_for_fake_forge"].VALUE == 3
    forge.sd_models.model_data.forge_loading_parameters = {}
    demo, interfaces = forge.webui.create_ui()
    assert [(title, elem_id) for _, title, elem_id in interfaces] == [("Ext", "ext")]
    assert isinstance(demo, gr.Blocks) and forge.sd_models.model_data.forge_loading_parameters
    elem_ids = {c["props"].get("elem_id") for c in demo.get_config_file()["components"]}
    assert {"x_model", "x_refresh", "tab_ext", "tab_txt2img"} <= elem_ids
    forge.script_callbacks.callback_map["callbacks_ui_tabs"].clear()
    sys.modules.pop("helper_mod_for_fake_forge", None)


def test_networks_list_both_lora_dirs(forge, tmp_path, monkeypatch):
    networks = forge.networks
    extra = tmp_path / "more"
    extra.mkdir()
    save_file({"x": torch.zeros(1)}, extra / "second.safetensors", metadata={"ss_output_name": "alias2"})
    monkeypatch.setattr(forge.shared.cmd_opts, "lora_dirs", [str(extra)])
    calls = networks.list_available_networks_calls
    networks.list_available_networks()
    assert networks.list_available_networks_calls == calls + 1
    assert networks.available_networks["second"].alias == "alias2"
    assert networks.available_network_aliases["alias2"].filename == str(extra / "second.safetensors")
    assert networks.load_network("second", networks.available_networks["second"]).name == "second"


# -- in-process teardown -------------------------------------------------------------------------------------------

def _fake_names():
    return sorted(k for k in sys.modules if k in ("modules", "modules_forge", "backend", "webui", "networks", "network",
                                                   "huggingface_guess", "fake_ldm", "lora_patches")
                  or k.startswith(("modules.", "modules_forge.", "backend.", "huggingface_guess.")))


def test_teardown_forgets_everything_and_the_fake_a1111_runs_after(ckpt_dir, tmp_path):
    webui_inprocess = _load_by_path("fake_webui_inprocess", HERE / "fake_webui" / "inprocess.py")
    outer = forge_inprocess.forget_fake_forge()  # a module-scoped block may be open: set it aside meanwhile
    saved_path = list(sys.path)
    saved_env = {k: v for k, v in os.environ.items() if k.startswith("FAKE_")}
    try:
        left = _fake_names()  # (normally none; whatever another test left is not ours to judge)
        with fake_forge_modules(ckpt_dir, tmp_path / "Lora") as f:
            assert Path(f.shared.__file__).resolve().is_relative_to(HERE / "fake_forge")
            holder = type(sys)("holder_of_fake_forge")  # imported meanwhile, holds one of the fake's modules
            holder.shared = sys.modules["modules.shared"]
            sys.modules["holder_of_fake_forge"] = holder
            with pytest.raises(RuntimeError, match="another `modules` package"):
                with webui_inprocess.fake_webui_modules(ckpt_dir, tmp_path / "Lora"):
                    pass
        assert _fake_names() == left and "holder_of_fake_forge" not in sys.modules
        assert sys.path == saved_path and {k: v for k, v in os.environ.items() if k.startswith("FAKE_")} == saved_env
        assert torch.nn.Linear.__module__ == "torch.nn.modules.linear"
        with webui_inprocess.fake_webui_modules(ckpt_dir, tmp_path / "Lora") as w:
            assert Path(w.shared.__file__).resolve().is_relative_to(HERE / "fake_webui")
            assert hasattr(w.sd_models, "load_model") and not hasattr(w.sd_models, "forge_model_reload")
            with pytest.raises(RuntimeError, match="another `modules` package"):
                with fake_forge_modules(ckpt_dir, tmp_path / "Lora"):
                    pass
        assert _fake_names() == left
        with fake_forge_modules(ckpt_dir, tmp_path / "Lora") as f:
            assert hasattr(f.sd_models, "forge_model_reload") and f.networks is not None
            assert type(f.shared.sd_model).__name__ == "FakeInitialModel"
        assert _fake_names() == left
    finally:
        sys.modules.update(outer)
