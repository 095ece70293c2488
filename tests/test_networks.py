"""LoRA / LoCon / LoHa networks: base untouched, multiplier semantics, save → reload, names, metadata, strength."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from trainer.errors import UserError
from trainer.models.components import load_components
from trainer.networks.blocks import BLOCK_IDS
from trainer.networks.compat import check_keys, names_from_components
from trainer.networks.io import inspect_lora, lora_file_name, read_lora, save_network
from trainer.networks.metadata import build_metadata
from trainer.networks.network import NetworkSpec, create_network, resume_network
from support import U32, fp32_reorder_tolerance

pytestmark = pytest.mark.filterwarnings("ignore")
TYPES = ("lierla", "c3lier", "loha")


@pytest.fixture(scope="module")
def components(demo_models):
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_components(demo_models[family])
        return cache[family]

    return get


def perturb(network, seed=0, scale=None):
    """Give every adapter weight a random value (LoRA up and LoHa w2a start at zero).

    LoHa's ΔW is a product of four factors, so it needs larger factors for a visible effect."""
    if scale is None:
        scale = 0.5 if network.spec.network_type == "loha" else 0.05
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def assert_same_forward(model, actual, expected, effect):
    """actual ≈ expected within the summation-order tolerance, which must be far below the LoRA's `effect`."""
    tolerance = fp32_reorder_tolerance(model, expected)
    assert effect > 10 * tolerance, (effect, tolerance)  # teeth: a LoRA lost in loading cannot hide in it
    torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance)


def unet_inputs(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = c.unet.config
    added = None
    if cfg.addition_embed_type == "text_time":
        pooled = c.text_encoders[1].config.projection_dim
        added = {"text_embeds": torch.randn(1, pooled, generator=g),
                 "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    return (torch.randn(1, 4, 16, 16, generator=g), torch.tensor([500]),
            torch.randn(1, 77, cfg.cross_attention_dim, generator=g), added)


def unet_out(c, inputs):
    sample, t, context, added = inputs
    with torch.no_grad():
        return c.unet(sample, t, context, added_cond_kwargs=added).sample


def text_out(c):
    ids = c.tokenizers[-1](["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return c.text_encoders[-1](ids).last_hidden_state


def metadata_for(spec, c, name="test"):
    return build_metadata(spec=spec, family=c.family, is_v_prediction=c.is_v_prediction, output_name=name,
                          settings={"train_learning_rate": "1e-4", "train_iterations": "10"})


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("network_type", TYPES)
def test_multiplier_save_reload_and_base_untouched(family, network_type, components, tmp_path):
    c = components(family)
    base_state = {k: v.clone() for k, v in c.unet.state_dict().items()}
    inputs = unet_inputs(c)
    base, base_text = unet_out(c, inputs), text_out(c)

    spec = NetworkSpec(network_type=network_type, rank=4, alpha=2, conv_rank=2, conv_alpha=1)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        perturb(network)
        with network.at(0.0):
            assert torch.equal(unet_out(c, inputs), base)
            assert torch.equal(text_out(c), base_text)
        with network.at(1.0):
            with_lora, with_lora_text = unet_out(c, inputs), text_out(c)
        assert (with_lora - base).abs().max() > 1e-3
        assert (with_lora_text - base_text).abs().max() > 1e-3
        path = tmp_path / lora_file_name("net")
        names = names_from_components(c.family, c.unet, c.text_encoders)
        saved = save_network(network, path, metadata=metadata_for(spec, c), save_precision="fp32", names=names)
        assert saved.report.ok
    finally:
        network.detach()
    assert torch.equal(unet_out(c, inputs), base), "detach did not restore the base forward"
    for key, value in c.unet.state_dict().items():
        assert torch.equal(value, base_state[key]), f"base weight {key} changed"

    tensors, _ = read_lora(path)
    resumed = resume_network(c.family, c.unet, c.text_encoders, tensors, str(path))
    try:
        assert resumed.spec.network_type == network_type
        assert len(resumed.adapters) == len(network.adapters)
        assert_same_forward(c.unet, unet_out(c, inputs), with_lora, (with_lora - base).abs().max().item())
        assert_same_forward(c.text_encoders[-1], text_out(c), with_lora_text,
                            (with_lora_text - base_text).abs().max().item())
    finally:
        resumed.detach()


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_diffusers_load_lora_weights_agrees(family, components, tmp_path):
    """Third-party oracle: diffusers' kohya converter loads our lierla file and gives the same UNet output."""
    # diffusers' LoRA loader needs peft (and its pipelines a newer transformers): the webui's venv has neither.
    pytest.importorskip("peft", reason="diffusers' load_lora_weights needs peft (absent from the webui's venv)")
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    c = components(family)
    spec = NetworkSpec(network_type="lierla", rank=4, alpha=2)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    inputs = unet_inputs(c, seed=1)
    try:
        perturb(network, seed=1)
        ours = unet_out(c, inputs)
        ours_text = text_out(c)
        path = tmp_path / "oracle.safetensors"
        save_network(network, path, metadata=metadata_for(spec, c), save_precision="fp32")
    finally:
        network.detach()
    base, base_text = unet_out(c, inputs), text_out(c)

    parts = dict(vae=c.vae, unet=c.unet, scheduler=DDPMScheduler())
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(text_encoder=c.text_encoders[0], text_encoder_2=c.text_encoders[1],
                                         tokenizer=c.tokenizers[0], tokenizer_2=c.tokenizers[1], **parts)
    else:
        pipe = StableDiffusionPipeline(text_encoder=c.text_encoders[0], tokenizer=c.tokenizers[0],
                                       safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False, **parts)
    # a folder and weight_name: diffusers 0.36 (Forge Neo's) refuses a bare file path offline
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="ours")
    try:
        theirs = unet_out(c, inputs)
        theirs_text = text_out(c)
    finally:
        pipe.unload_lora_weights()
    assert (ours - base).abs().max() > 1e-3  # the LoRA does something
    # fp32 file, the same weights: only the order of the sums differs
    assert_same_forward(c.unet, theirs, ours, (ours - base).abs().max().item())
    assert_same_forward(c.text_encoders[-1], theirs_text, ours_text, (ours_text - base_text).abs().max().item())
    torch.testing.assert_close(unet_out(c, inputs), base, rtol=0, atol=fp32_reorder_tolerance(c.unet, base))


def test_loha_delta_is_lycoris_weight_from_the_file(components, tmp_path):
    """y_network(x) − y_base(x) equals the layer applied with ΔW that lycoris computes from the saved tensors."""
    from lycoris.functional.loha import diff_weight

    c = components("sd1")
    spec = NetworkSpec(network_type="loha", rank=4, alpha=2, conv_rank=2, conv_alpha=1, blocks=("IN01",))
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        perturb(network, seed=2)
        path = tmp_path / "loha.safetensors"
        save_network(network, path, metadata=metadata_for(spec, c), save_precision="fp32")
        tensors = load_file(str(path))
        checked = set()
        for adapter in network.adapters:
            layer = adapter.base
            is_conv = isinstance(layer, torch.nn.Conv2d)
            kind = "conv3x3" if is_conv and layer.kernel_size != (1, 1) else ("conv1x1" if is_conv else "linear")
            if kind in checked:
                continue
            name = adapter.lora_name
            t = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(name + ".")}
            rank = t["hada_w1_b"].shape[0]
            delta = diff_weight(t["hada_w1_b"], t["hada_w1_a"], t["hada_w2_b"], t["hada_w2_a"],
                                t.get("hada_t1"), t.get("hada_t2"), gamma=float(t["alpha"]) / rank)
            delta = delta.reshape(layer.weight.shape)
            x = torch.randn(2, layer.in_channels, 8, 8) if is_conv else torch.randn(2, layer.in_features)
            with torch.no_grad():
                with network.at(1.0):
                    y = layer(x)
                with network.at(0.0):
                    y0 = layer(x)
                expected = (F.conv2d(x, delta, None, layer.stride, layer.padding) if is_conv else x @ delta.T)
            # Tolerance from the arithmetic (worst-case fp32 dot products): every output of y, y0 and `expected`
            # is a sum whose terms each pass through ≤ n = K + rank² + 8 roundings (K = in_features or in_ch·kh·kw;
            # rank² for ΔW's inner sums, Tucker's included; a few for scale, bias, the final additions), so each is
            # off by ≤ γ_n·Σ|terms|, γ_n = n·u/(1 − n·u), whatever order the kernels sum in; Σ|terms| ≤ the layer
            # applied to |x| with |W| + |ΔW|abs (ΔW rebuilt from |factors|) and |b|. Three such errors and the
            # subtraction's rounding: ≤ 4·γ_n·Σ|terms|.
            abs_delta = diff_weight(*(t[k].abs() if t.get(k) is not None else None for k in (
                "hada_w1_b", "hada_w1_a", "hada_w2_b", "hada_w2_a", "hada_t1", "hada_t2")),
                gamma=float(t["alpha"]) / rank).reshape(layer.weight.shape)
            n = layer.weight[0].numel() + rank ** 2 + 8
            gamma_n = n * U32 / (1 - n * U32)
            with torch.no_grad():
                bias = None if layer.bias is None else layer.bias.abs()
                weight = layer.weight.abs() + abs_delta
                terms = (F.conv2d(x.abs(), weight, bias, layer.stride, layer.padding) if is_conv
                         else F.linear(x.abs(), weight, bias))
            tolerance = 4 * gamma_n * terms
            error = (y - y0 - expected).abs()
            assert (error <= tolerance).all(), (name, (error - tolerance).max().item())
            assert (expected.abs() > tolerance).float().mean() > 0.5, name  # teeth: ΔW moves most outputs more
            checked.add(kind)
        assert checked == {"linear", "conv1x1", "conv3x3"}
    finally:
        network.detach()


@pytest.mark.parametrize("network_type", ["lierla", "loha"])
def test_strength_scales_delta_by_strength(network_type, components, tmp_path):
    c = components("sd1")
    spec = NetworkSpec(network_type=network_type, rank=4, alpha=2, blocks=("IN01",))
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        perturb(network, seed=3)
        a, b = tmp_path / "s1.safetensors", tmp_path / "s4.safetensors"
        save_network(network, a, metadata=metadata_for(spec, c), save_precision="fp32", strength=1.0)
        save_network(network, b, metadata=metadata_for(spec, c), save_precision="fp32", strength=4.0)
    finally:
        network.detach()
    one, four = load_file(str(a)), load_file(str(b))
    factors = {"lora_up.weight": 2.0, "lora_down.weight": 2.0, "hada_w1_a": 2.0, "hada_w2_a": 2.0,
               "hada_w1_b": 1.0, "hada_w2_b": 1.0, "hada_t1": 1.0, "hada_t2": 1.0, "alpha": 1.0}
    for key, value in one.items():
        torch.testing.assert_close(four[key], value * factors[key.split(".", 1)[1]])


@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                             ("fp32", torch.float32), ("model", torch.float16)])
def test_save_precision_applies_to_every_tensor(precision, dtype, components, tmp_path):
    c = components("sd1")
    spec = NetworkSpec(network_type="c3lier", rank=4, alpha=2, blocks=("BASE", "IN01"))
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        path = tmp_path / "p.safetensors"
        save_network(network, path, metadata=metadata_for(spec, c), save_precision=precision)
    finally:
        network.detach()
    tensors = load_file(str(path))
    assert tensors and all(v.dtype == dtype for v in tensors.values())
    assert any(k.endswith(".alpha") for k in tensors)


def test_existing_file_needs_overwrite(components, tmp_path):
    c = components("sd1")
    spec = NetworkSpec(rank=4, alpha=2, blocks=("IN01",))
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        path = tmp_path / "same.safetensors"
        save_network(network, path, metadata=metadata_for(spec, c))
        before = path.read_bytes()
        perturb(network, seed=9)
        with pytest.raises(UserError, match="already exists; tick save_overwrite"):
            save_network(network, path, metadata=metadata_for(spec, c))
        assert path.read_bytes() == before
        save_network(network, path, metadata=metadata_for(spec, c), overwrite=True)
        assert path.read_bytes() != before
    finally:
        network.detach()


def test_crash_mid_write_leaves_no_file(components, tmp_path, monkeypatch):
    import pathlib

    c = components("sd1")
    spec = NetworkSpec(rank=4, alpha=2, blocks=("IN01",))
    network = create_network(c.family, c.unet, c.text_encoders, spec)

    real_write = pathlib.Path.write_bytes

    def crashing_write(self, data):  # the serialised file reaches the disk only halfway
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(pathlib.Path, "write_bytes", crashing_write)
    try:
        with pytest.raises(UserError, match="crash.safetensors not written: disk full"):
            save_network(network, tmp_path / "crash.safetensors", metadata=metadata_for(spec, c))
    finally:
        network.detach()
    assert list(tmp_path.iterdir()) == []


def test_save_name_rules():
    assert lora_file_name("") == "untitled.safetensors"
    assert lora_file_name("style", "_copy") == "style_copy.safetensors"
    assert lora_file_name("style", "_100steps") == "style_100steps.safetensors"
    for bad in ("a/b", "..", "../x", "a\\b"):
        with pytest.raises(UserError):
            lora_file_name(bad)


def test_block_selection_and_element(components):
    c = components("sd1")
    only = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=("IN04",)))
    try:
        assert set(only.modules_per_block()) == set(BLOCK_IDS)
        assert {b for b, n in only.modules_per_block().items() if n} == {"IN04"}
        assert not only.text_adapters()
    finally:
        only.detach()
    empty = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=("IN00", "IN03")))
    assert len(empty.adapters) == 0  # blocks without attention layers: a no-op, not an error
    cross = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(element="CrossAttention"))
    try:
        names = [a.lora_name for a in cross.adapters if not a.lora_name.startswith("lora_te")]
        assert names and all("attn2" in n for n in names)
    finally:
        cross.detach()
    with pytest.raises(ValueError, match="known: BASE"):
        create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=("IN99",)))


def test_names_are_kohya(components):
    sd1, sdxl = components("sd1"), components("sdxl")
    net = create_network(sd1.family, sd1.unet, sd1.text_encoders, NetworkSpec(network_type="c3lier"))
    names = {a.lora_name for a in net.adapters}
    net.detach()
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k" in names
    assert "lora_unet_up_blocks_1_resnets_2_conv1" in names
    assert "lora_unet_mid_block_attentions_0_proj_in" in names
    net = create_network(sdxl.family, sdxl.unet, sdxl.text_encoders, NetworkSpec(network_type="c3lier"))
    names = {a.lora_name for a in net.adapters}
    net.detach()
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" in names
    assert "lora_unet_output_blocks_2_2_conv" in names  # SDXL upsampler after an attention block
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1" in names
    assert "lora_te2_text_model_encoder_layers_1_self_attn_out_proj" in names


def test_metadata_and_hashes(components, tmp_path):
    c = components("sdxl")
    spec = NetworkSpec(network_type="loha", rank=4, alpha=2, conv_rank=2, conv_alpha=1)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        path = tmp_path / "meta.safetensors"
        saved = save_network(network, path, metadata=metadata_for(spec, c, "meta"))
    finally:
        network.detach()
    _, meta = read_lora(path)
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0" and meta["ss_v2"] == "False"
    assert meta["ss_network_module"] == "lycoris.kohya"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1", "algo": "loha",
                                                    "use_tucker": "True"}
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.prediction_type"] == "epsilon" and meta["ss_output_name"] == "meta"
    assert float(meta["ss_training_finished_at"]) >= float(meta["ss_training_started_at"])
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest() == saved.metadata["sshs_model_hash"]
    assert len(meta["sshs_legacy_hash"]) == 8


@pytest.mark.parametrize("family,version,v2", [("sd1", "sd_v1", "False"), ("sd2", "sd_v2", "True")])
def test_family_metadata(family, version, v2, components):
    c = components(family)
    meta = metadata_for(NetworkSpec(), c)
    assert meta["ss_base_model_version"] == version and meta["ss_v2"] == v2
    assert meta["ss_network_module"] == "networks.lora" and json.loads(meta["ss_network_args"]) == {}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_inspect_reports_a_renamed_key(family, components, demo_models, tmp_path):
    c = components(family)
    spec = NetworkSpec(network_type="c3lier", rank=4, alpha=2, conv_rank=2, conv_alpha=1)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        path = tmp_path / "good.safetensors"
        save_network(network, path, metadata=metadata_for(spec, c))
    finally:
        network.detach()
    report = inspect_lora(path, model=demo_models[family])
    assert report["family"] == family and report["network_type"] == "c3lier"
    assert report["ranks"] == {"linear": [4], "conv": [2]}
    assert report["unmatched"] == {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}
    assert report["modules_per_block"]["BASE"] > 0

    tensors, meta = read_lora(path)
    victim = sorted(k for k in tensors if k.startswith("lora_unet") and k.endswith(".alpha"))[0]
    renamed = victim.replace("lora_unet_", "lora_unet_x", 1)
    tensors[renamed] = tensors.pop(victim)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    report = inspect_lora(bad, model=demo_models[family])
    assert report["unmatched"]["a1111"] == [renamed]
    assert report["unmatched"]["comfyui"] == [renamed]
    assert report["unmatched"]["forge"] == [renamed]


def test_open_clip_qkv_without_out_proj_is_ineffective(components, tmp_path):
    """The webui applies q/k/v to an OpenCLIP attention only when out_proj comes too (the webui's Lora extension rule, reproduced in networks/compat.py)."""
    c = components("sd2")
    network = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=("BASE",)))
    try:
        keys = [k for k in network.save_tensors() if "out_proj" not in k]
    finally:
        network.detach()
    report = check_keys(keys, names_from_components(c.family, c.unet, c.text_encoders))
    assert not report.a1111_unmatched and not report.comfyui_unmatched
    assert report.a1111_ineffective and "out_proj" in report.a1111_ineffective[0]


def test_save_fails_loudly_but_keeps_the_file_when_keys_would_not_load(components, tmp_path):
    from dataclasses import replace

    from trainer.networks.io import IncompatibleLoRA

    c = components("sd1")
    spec = NetworkSpec(rank=4, alpha=2, blocks=("IN01",))
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    names = names_from_components(c.family, c.unet, c.text_encoders)
    victim = network.adapters[0].lora_name
    crippled = replace(names, comfyui=names.comfyui - {victim})
    path = tmp_path / "kept.safetensors"
    try:
        with pytest.raises(IncompatibleLoRA, match=victim):
            save_network(network, path, metadata=metadata_for(spec, c), names=crippled)
    finally:
        network.detach()
    assert path.is_file()


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_inspect_cli_against_the_released_architecture(family, components, tmp_path):
    import subprocess
    import sys

    c = components(family)
    spec = NetworkSpec(network_type="loha", rank=4, alpha=2)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        path = tmp_path / "cli.safetensors"
        save_network(network, path, metadata=metadata_for(spec, c))
    finally:
        network.detach()
    proc = subprocess.run([sys.executable, "-m", "trainer", "inspect", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checked_against"].startswith("the released")
    assert report["unmatched"] == {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}
    assert report["network_type"] == "loha" and report["metadata"]["ss_network_module"] == "lycoris.kohya"


FP32_UNIT_ROUNDOFF = 2.0**-24  # u: one rounding of an fp32 operation is off by at most u·|result|


def _apply_layer(layer, x, weight, bias):
    """What the base Linear / Conv2d computes, with a given weight: the merged layer."""
    if isinstance(layer, torch.nn.Conv2d):
        assert layer.padding_mode == "zeros" and layer.groups == 1
        return F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation)
    return F.linear(x, weight, bias)


def _abs_delta_weight(adapter) -> torch.Tensor:
    """ΔW rebuilt from the absolute values of every factor: ΔW is sums of products of the factors with positive
    coefficients (scale, Tucker sums), so this bounds |every term| that any evaluation order of ΔW (or of ΔW·x,
    as the unmerged forward does) adds up."""
    params = list(adapter.parameters())
    saved = [p.detach().clone() for p in params]
    try:
        for p in params:
            p.abs_()
        return adapter.delta_weight()
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)


# (LoHa's delta_weight once applied alpha/rank twice, through lycoris' get_diff_weight: this test found it.)
@pytest.mark.parametrize("network_type", ["lierla", "c3lier", "loha"])
def test_merged_delta_weight_gives_the_unmerged_output(network_type, components):
    """Merging `delta_weight()` × multiplier into a copy of the base weight gives, as a plain layer, the output of
    the attached (unmerged) adapter — for every adapter of the SD1 demo model: Linear, 1×1 conv, k×k conv (c3lier's
    and LoHa's, Tucker cores included) and the text encoder's."""
    c = components("sd1")
    spec = NetworkSpec(network_type=network_type, rank=4, alpha=2, conv_rank=2, conv_alpha=1)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    m = 0.75  # not 1: ΔW must scale with the multiplier the forward uses
    g = torch.Generator().manual_seed(5)
    kinds = set()
    try:
        perturb(network, seed=5)
        with torch.no_grad():
            for adapter in network.adapters:
                layer = adapter.base
                is_conv = isinstance(layer, torch.nn.Conv2d)
                kinds.add(("conv1x1" if layer.kernel_size == (1, 1) else "convkxk") if is_conv else "linear")
                shape = (2, layer.in_channels, 8, 8) if is_conv else (2, 3, layer.in_features)
                x = torch.randn(shape, generator=g)
                with network.at(m):
                    unmerged = layer(x)
                with network.at(0.0):
                    base = layer(x)
                delta = adapter.delta_weight()
                assert delta.shape == layer.weight.shape, adapter.lora_name
                merged = _apply_layer(layer, x, layer.weight.clone() + m * delta, layer.bias)
                # Tolerance from fp32 arithmetic, not from one quiet run. Each output of either side is a sum of
                # products in which every term passes through at most n = K + rank² + 8 roundings (K = the layer's
                # reduction length, in_features or in_ch·kh·kw; rank² for ΔW's inner sums, Tucker's double sum
                # included; a few for scale, multiplier, bias and the final additions). Each rounding is off by at
                # most a factor (1 ± u), so whatever summation order the kernels pick, a side differs from the exact
                # value by at most γ_n·((|W| + m·|ΔW|_abs)·|x| + |b|), γ_n = n·u / (1 − n·u): the standard
                # worst-case bound for a floating-point dot product. The two sides differ by at most twice that.
                n = layer.weight[0].numel() + adapter.rank**2 + 8
                gamma = n * FP32_UNIT_ROUNDOFF / (1 - n * FP32_UNIT_ROUNDOFF)
                bias = None if layer.bias is None else layer.bias.abs()
                magnitude = _apply_layer(layer, x.abs(), layer.weight.abs() + m * _abs_delta_weight(adapter), bias)
                tolerance = 2 * gamma * magnitude
                error = (merged - unmerged).abs()
                assert (error <= tolerance).all(), (adapter.lora_name, (error - tolerance).max().item())
                # teeth: the adapter moves most outputs by more than the tolerance, so a wrong ΔW cannot hide in it
                assert ((unmerged - base).abs() > tolerance).float().mean() > 0.5, adapter.lora_name
    finally:
        network.detach()
    expected = {"linear", "conv1x1"} | ({"convkxk"} if network_type != "lierla" else set())
    assert kinds == expected


def test_forge_rules_know_sd1s_te1_spelling_and_refuse_what_classic_cannot_load(components):
    """forge-api.md F6: Forge maps SD1's CLIP tower under lora_te_ and lora_te1_; Classic's loader has no DoRA."""
    c = components("sd1")
    names = names_from_components(c.family, c.unet, c.text_encoders)
    network = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=("BASE", "IN01")))
    try:
        keys = list(network.save_tensors())
    finally:
        network.detach()
    assert check_keys(keys, names).ok
    te1 = [k.replace("lora_te_", "lora_te1_", 1) for k in keys if k.startswith("lora_te_")]
    report = check_keys(te1, names)
    assert te1 and not report.forge_unmatched
    unet_key = next(k for k in keys if k.startswith("lora_unet") and k.endswith(".alpha"))
    dora = unet_key.replace(".alpha", ".dora_scale")
    report = check_keys([dora], names)
    assert report.forge_unmatched == [dora] and not report.comfyui_unmatched and not report.ok


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("network_type", ["lierla", "c3lier", "loha"])
def test_every_file_we_write_is_fully_matched_under_forges_rules(components, family, network_type):
    """forge-api.md F6: Neo applies a file with up to half its keys unmatched, silently in part, so the save check
    asks for none, under Forge's rules as under A1111's and ComfyUI's; every block and both text encoders."""
    c = components(family)
    names = names_from_components(c.family, c.unet, c.text_encoders)
    spec = NetworkSpec(network_type=network_type, rank=4, alpha=2, conv_rank=2, conv_alpha=1,
                       blocks=BLOCK_IDS)
    network = create_network(c.family, c.unet, c.text_encoders, spec)
    try:
        keys = list(network.save_tensors())
    finally:
        network.detach()
    assert any(k.startswith("lora_te2_" if family == "sdxl" else "lora_te_") for k in keys)
    report = check_keys(keys, names)
    assert report.forge_unmatched == [] and report.ok
    misspelt = next(k for k in keys if k.startswith("lora_unet_") and k.endswith(".alpha"))
    one_off = [k.replace(misspelt.rsplit(".", 1)[0], misspelt.rsplit(".", 1)[0] + "x") for k in keys]
    assert set(check_keys(one_off, names).forge_unmatched) == {
        k for k in one_off if k.startswith(misspelt.rsplit(".", 1)[0] + "x")}
