"""iLECO, Difference, ADDifT and Multi-ADDifT on the demo models, with their held-out quality reports.

The demo models have random weights, so "concepts" are only what a random text encoder makes of a prompt; the
bounds below are the measured values on these models (stated beside each), not what a real checkpoint reaches.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from trainer.engine.control import JobControl
from trainer.errors import UserError
from trainer.modes.addift import addift_timestep
from trainer.networks.io import inspect_lora, read_lora
from trainer.reports import report_path
from trainer.runner import run_job
from support import spy

pytestmark = pytest.mark.filterwarnings("ignore")
CLEAN = {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}


def draw(path, radius, color=(200, 40, 40), size=(64, 64), background=(30, 60, 160)):
    img = Image.new("RGB", size, background)
    cx, cy = size[0] / 2, size[1] / 2
    ImageDraw.Draw(img).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
    img.save(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    return draw(folder / "o.png", 12), draw(folder / "t.png", 24)


@pytest.fixture
def mode_job(demo_models, tmp_path):
    import json as _json
    from pathlib import Path

    from trainer.host.standalone import StandaloneHost
    from trainer.settings import apply_overrides, job_from_json

    def make(preset, family="sd1", **overrides):
        data = _json.loads((Path(__file__).parent.parent / "presets" / f"{preset}.json").read_text(encoding="utf-8"))
        base = {"save_lora_name": "m", "train_seed": "0", "image_size(height, width)": "64", "save_as_json": "false"}
        base.update(overrides)
        data = apply_overrides(data, [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in base.items()])
        data["model"] = str(demo_models[family])
        job, _ = job_from_json(data)
        return job, StandaloneHost(lora_dir=tmp_path / "out")

    return make


# -- iLECO -------------------------------------------------------------------------------------------------------
def test_ileco_erase_with_the_preset(mode_job):
    job, host = mode_job("iLECO", original_prompt="a red circle", train_iterations="300")
    result = run_job(job, host)
    report = json.loads(report_path(result.path).read_text(encoding="utf-8"))
    erase, preservation = report["erase"], report["preservation"]
    transfer = sum(v["T"] for v in report["per_timestep"].values()) / len(report["per_timestep"])
    # measured: E = 0.63, P = 0.26, and ε_L(orig) vs ε_0("") (T) = 0.14: the erased prompt now gives what the
    # empty prompt gave — but with BASE trained, the empty prompt itself moved too, which E counts (see note).
    assert erase < 0.7 and transfer < 0.3
    assert preservation < 1 - erase
    tensors, metadata = read_lora(result.path)
    te_up = [v for k, v in tensors.items() if k.startswith("lora_te_") and k.endswith("lora_up.weight")]
    assert te_up and all(v.abs().sum() > 0 for v in te_up), "BASE: the text-encoder LoRA trains (no all-zero modules)"
    assert json.loads(metadata["traintrain.quality"])["E"] == erase  # the same float; JSON round-trips it exactly
    assert "quality (held-out" in result.message


def test_ileco_erase_through_cross_attention(mode_job):
    job, host = mode_job("iLECO", original_prompt="a red circle", train_iterations="150", train_learning_rate="2e-3",
                         network_element="CrossAttention")
    report = run_job(job, host).report
    # measured: E = 0.27, P = 0.39 (a full LoRA also fits the one fixed training latent; attn2 alone cannot)
    assert report["erase"] <= 0.3
    assert report["preservation"] < 1 - report["erase"]


def test_ileco_replace(mode_job):
    job, host = mode_job("iLECO", original_prompt="a red circle", target_prompt="a blue square",
                         train_iterations="150", train_learning_rate="2e-3", network_element="CrossAttention")
    report = run_job(job, host).report
    # measured: T = 0.024, P = 0.10
    assert report["transfer"] < 0.1 and report["preservation"] < 0.3


def test_ileco_needs_an_original_prompt(mode_job, tmp_path):
    job, host = mode_job("iLECO")
    with pytest.raises(UserError, match="iLECO needs an Original Prompt"):
        run_job(job, host)
    assert not (tmp_path / "out").exists()


# -- Difference --------------------------------------------------------------------------------------------------
def test_difference_learns_the_difference(mode_job, pair, tmp_path):
    job, host = mode_job("Difference", original_image=str(pair[0]), target_image=str(pair[1]),
                         train_iterations="100", train_learning_rate="3e-3", network_type="c3lier",
                         train_batch_size="4", diff_save_1st_pass="true")
    result = run_job(job, host)
    report = result.report
    # measured: copy fit 0.32 (pass 1 reproduces the original), R = 0.68 (pass 2 reproduces the target)
    assert report["copy_fit"] < 0.5
    assert report["pair_fit"] < 0.7
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["m.report.json", "m.safetensors", "m_copy.safetensors"]


def test_difference_loads_the_copier_instead_of_training_it(mode_job, pair, tmp_path):
    job, host = mode_job("Difference", original_image=str(pair[0]), target_image=str(pair[1]),
                         train_iterations="20", train_learning_rate="3e-3", diff_1st_pass_only="true",
                         save_lora_name="first")
    first = run_job(job, host)
    assert first.path.name == "first_copy.safetensors"  # 1st-pass-only saves the copier (upstream did not)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first_copy.safetensors"]

    events = []
    job, host = mode_job("Difference", original_image=str(pair[0]), target_image=str(pair[1]),
                         train_iterations="3", diff_load_1st_pass="first_copy", save_lora_name="second")
    result = run_job(job, host, JobControl(on_event=events.append))
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3]  # pass 2 only
    assert result.report["copy_fit"] < 1.0  # an empty copier gives exactly 1.0: the loaded one is used


def test_difference_second_pass_settings_and_metadata(mode_job, pair):
    job, host = mode_job("Difference_Use2ndPass", original_image=str(pair[0]), target_image=str(pair[1]),
                         train_iterations="2")
    second = job.second_pass.replace(train_iterations="2")
    job = type(job)(**{**job.__dict__, "second_pass": second})
    result = run_job(job, host)
    _, metadata = read_lora(result.path)
    assert metadata["ss_network_dim"] == "4" and metadata["ss_learning_rate"] == "1e-4"  # pass 2 (pass 1: 16, 5e-4)
    assert load_file(str(result.path))["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape[0] == 4


@pytest.mark.parametrize("problem", ["missing", "sizes"])
def test_difference_bad_images(mode_job, pair, tmp_path, problem):
    other = draw(tmp_path / "big.png", 10, size=(96, 64))
    images = {"missing": (str(pair[0]), ""), "sizes": (str(pair[0]), str(other))}[problem]
    job, host = mode_job("Difference", original_image=images[0], target_image=images[1])
    with pytest.raises(UserError) as err:
        run_job(job, host)
    assert {"missing": "needs an Original Image and a Target Image", "sizes": "must be the same size"}[problem] in str(
        err.value)
    assert not (tmp_path / "out").exists()


# -- ADDifT --------------------------------------------------------------------------------------------------------
def test_addift_deterministic_timesteps():
    g = torch.Generator().manual_seed(0)
    assert [addift_timestep(n, 500, 1000, False, g) for n in range(12)] == [
        550, 550, 650, 650, 750, 750, 850, 850, 950, 950, 550, 550]
    assert sorted({addift_timestep(n, 200, 400, False, g) for n in range(10)}) == [220, 260, 300, 340, 380]
    drawn = [addift_timestep(n, 500, 1000, True, g) for n in range(0, 10, 2)]
    assert all(lo <= t < lo + 50 for t, lo in zip(drawn, (550, 650, 750, 850, 950)))


def test_addift_slider_with_the_preset(mode_job, pair, tmp_path):
    job, host = mode_job("ADDifT_Action_SD1.5", original_image=str(pair[0]), target_image=str(pair[1]))
    result = run_job(job, host)
    report = result.report
    # measured: R = 0.996, cos(Δ(+), Δ(−)) = −0.989, ‖Δ(2)‖/‖Δ(1)‖ = 2.01 (held-out noise; see the note on R)
    assert report["pair_fit"] < 1.0
    assert report["slider"]["cos_plus_minus"] < -0.9
    assert 1.8 < report["slider"]["norm_ratio_2_to_1"] < 2.2
    assert inspect_lora(result.path)["unmatched"] == CLEAN
    _, metadata = read_lora(result.path)
    assert metadata["traintrain.mode"] == "ADDifT" and "R" in json.loads(metadata["traintrain.quality"])


def test_addift_options_run(mode_job, pair):
    job, host = mode_job("ADDifT_Style_SD1.5", original_image=str(pair[0]), target_image=str(pair[1]),
                         train_iterations="4", diff_alt_ratio="-1", diff_use_diff_mask="true",
                         diff_random_timesteps_in_span="true", lora_trigger_word="sks")
    result = run_job(job, host)
    assert result.status == "finished" and len(result.losses) == 4
    tensors = load_file(str(result.path))
    assert any(k.startswith("lora_te_") for k in tensors)  # a trigger word keeps BASE (as upstream)


# -- ADDifT: what diff_use_diff_mask and diff_alt_ratio do --------------------------------------------------------
def loss_inputs(monkeypatch):
    """Filled as the run goes: (pred, target, kind, mask) of every per-sample loss the engine takes."""
    import trainer.engine.loss

    return spy(monkeypatch, trainer.engine.loss, "per_sample_loss")


def args_of(calls):
    return [args for args, _, _ in calls]


def changed_pair(folder, region, background=(30, 60, 160), shift=None):
    """o.png, and t.png = o.png with `region` ("left" or "top" half) painted red — or, with `shift`, every pixel
    brightened by `shift` per channel instead."""
    folder.mkdir(parents=True, exist_ok=True)
    original = Image.new("RGB", (64, 64), background)
    ImageDraw.Draw(original).ellipse([20, 20, 44, 44], fill=(90, 90, 90))
    target = original.copy()
    if shift is not None:
        target = Image.eval(target, lambda v: min(v + shift, 255))
    else:
        box = {"left": [0, 0, 31, 63], "top": [0, 0, 63, 31]}[region]
        ImageDraw.Draw(target).rectangle(box, fill=(200, 40, 40))
    original.save(folder / "o.png")
    target.save(folder / "t.png")
    return str(folder / "o.png"), str(folder / "t.png")


def latent_half_mask(region):
    """The 8×8 latent mask of a 64-px pair changed in one half: 1 over the changed half's latent cells."""
    mask = torch.zeros(1, 1, 8, 8)
    if region == "left":
        mask[..., :4] = 1
    else:
        mask[..., :4, :] = 1
    return mask


# fp32 mean over n elements (a square each, then a sum): ≤ (n + 2)·u relative to the float64 value.
def masked_mean_tolerance(n: int) -> float:
    return (n + 2) * 2.0 ** -24


def _masked_mse(pred, target, mask):
    element = (pred.double() - target.double()) ** 2
    mask = mask.double().expand_as(element)
    return ((element * mask).sum() / mask.sum()).item(), element.mean().item()


@pytest.mark.parametrize("use_mask", [True, False])
def test_addift_diff_mask_limits_the_loss_to_the_changed_half(mode_job, tmp_path, monkeypatch, use_mask):
    """A pair that differs only in its left half: with diff_use_diff_mask the loss (and so the gradient) is the
    mean over the left half's latent cells only; without it, over the whole latent."""
    original, target = changed_pair(tmp_path / "half", "left")
    inputs = loss_inputs(monkeypatch)
    job, host = mode_job("ADDifT_Action_SD1.5", original_image=original, target_image=target, train_iterations="2",
                         train_snr_gamma="0", diff_use_diff_mask=str(use_mask).lower())
    result = run_job(job, host)
    assert len(args_of(inputs)) == 2
    for loss, (pred, ref, kind, mask) in zip(result.losses, args_of(inputs)):
        assert kind == "MSE"
        masked, whole = _masked_mse(pred, ref, latent_half_mask("left"))
        tolerance = masked_mean_tolerance(pred.numel())
        if use_mask:
            assert mask is not None and torch.equal(mask.expand(1, 1, 8, 8).cpu(), latent_half_mask("left"))
            assert loss == pytest.approx(masked, rel=tolerance)
        else:
            assert mask is None
            assert loss == pytest.approx(whole, rel=tolerance)
        assert abs(masked - whole) > 100 * tolerance * whole  # the two are far apart: the check means something


def test_addift_diff_mask_of_an_unchanged_pair_trains_nothing(mode_job, tmp_path, monkeypatch):
    """Brightened by 3 per channel (9 < the threshold of 10), no pixel counts as changed: the mask is empty, so
    although the latents differ the loss is 0 at every step and the LoRA's up weights stay exactly zero."""
    original, target = changed_pair(tmp_path / "faint", None, shift=3)
    inputs = loss_inputs(monkeypatch)
    job, host = mode_job("ADDifT_Action_SD1.5", original_image=original, target_image=target, train_iterations="2",
                         diff_use_diff_mask="true", train_optimizer="AdamW")  # zero gradients: zero updates
    result = run_job(job, host)
    assert result.losses == [0.0, 0.0]
    for pred, ref, _, mask in args_of(inputs):
        assert not torch.equal(pred, ref)  # unmasked, this step would train
        assert mask is not None and not mask.any()
    up = [v for k, v in load_file(str(result.path)).items() if k.endswith("lora_up.weight")]
    assert up and all(not v.any() for v in up)


def test_multi_addift_diff_mask_per_pair(mode_job, tmp_path, monkeypatch):
    """Multi-ADDifT: each pair's own mask (left half for one, top half for the other) reaches the loss."""
    folder = tmp_path / "pairs"
    for name, region in (("a", "left"), ("b", "top")):
        original, target = changed_pair(tmp_path / name, region)
        folder.mkdir(exist_ok=True)
        Image.open(original).save(folder / f"{name}.png")
        Image.open(target).save(folder / f"{name}_after.png")
    inputs = loss_inputs(monkeypatch)
    job, host = mode_job("ADDifT_Action_SD1.5", mode="Multi-ADDifT", lora_data_directory=str(folder),
                         diff_target_name="_after", train_iterations="2", image_min_length="64",
                         image_buckets_step="64", train_snr_gamma="0", diff_use_diff_mask="true")
    result = run_job(job, host)
    seen = []
    for loss, (pred, ref, _, mask) in zip(result.losses, args_of(inputs)):
        assert mask is not None
        region = next(r for r in ("left", "top") if torch.equal(mask.cpu(), latent_half_mask(r)))
        seen.append(region)
        masked, _ = _masked_mse(pred, ref, latent_half_mask(region))
        assert loss == pytest.approx(masked, rel=masked_mean_tolerance(pred.numel()))
    assert sorted(seen) == ["left", "top"]  # one epoch of batch 1 over the two pairs


def _alt_run(mode_job, monkeypatch, pair_images, ratio):
    monkeypatch.undo()
    inputs = loss_inputs(monkeypatch)
    job, host = mode_job("ADDifT_Action_SD1.5", original_image=pair_images[0], target_image=pair_images[1],
                         train_iterations="2", diff_alt_ratio=ratio, save_lora_name=f"alt{ratio}",
                         save_overwrite="true")
    result = run_job(job, host)
    return result.losses, [args[1] for args in args_of(inputs)]  # losses, the frozen model's reference per step


def test_addift_negative_alt_ratio_trains_a_null_step_on_pure_noise(mode_job, tmp_path, monkeypatch):
    """diff_alt_ratio < 0: odd steps put pure noise on both sides, and train the LoRA at −0.25·|ratio| to give
    the frozen model's prediction there. Predicted consequences, step 1 (the first odd step):
    - its reference (the frozen model on the noised pure noise) does not depend on the pair at all;
    - its loss is only the LoRA's own effect after one update: tiny against step 0's, whereas with ratio +1
      step 1 is the mirrored pair, as large as step 0;
    - the LoRA after step 0 is the same for ratios −1 and −2, and its effect is linear in the multiplier, so the
      MSE at −0.5 is 4× the MSE at −0.25."""
    p = changed_pair(tmp_path / "p", "left")
    q = changed_pair(tmp_path / "q", "top", background=(160, 140, 30))  # original and target both differ from p's
    minus1, ref_minus1 = _alt_run(mode_job, monkeypatch, p, "-1")
    minus1_q, ref_minus1_q = _alt_run(mode_job, monkeypatch, q, "-1")
    minus2, _ = _alt_run(mode_job, monkeypatch, p, "-2")
    plus1, ref_plus1 = _alt_run(mode_job, monkeypatch, p, "1")

    assert not torch.equal(ref_minus1[0], ref_minus1_q[0])  # step 0 sees the pair
    assert torch.equal(ref_minus1[1], ref_minus1_q[1])  # step 1 sees pure noise only
    assert not torch.equal(ref_plus1[1], ref_minus1[1])  # ratio +1: step 1 sees the (mirrored) pair

    assert minus1[0] == plus1[0] == minus2[0]  # step 0 does not depend on the ratio
    # measured: step 1 / step 0 = 8e-6 (ratio −1) and 0.9 (ratio +1)
    assert minus1[1] < 1e-3 * minus1[0] and minus1_q[1] < 1e-3 * minus1_q[0]
    assert plus1[1] > 0.3 * plus1[0]
    # pred − ref = m·J·Δ + O(m²·Δ²) for the LoRA's delta Δ after one step of lr 1e-4: the ratio is 4·(1 + O(m·Δ)),
    # and m·Δ is far below 1 % of the activations (measured 3.9998)
    assert minus2[1] / minus1[1] == pytest.approx(4.0, rel=0.02)


# -- Multi-ADDifT ----------------------------------------------------------------------------------------------------
@pytest.fixture
def pair_folder(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for name, size, ratio in (("a", (64, 64), 1), ("b", (96, 64), 2), ("c", (64, 80), 3)):
        draw(folder / f"{name}.png", 8 * ratio // 2 + 6, size=size)
        draw(folder / f"{name}_after.png", 8 * ratio // 2 + 14, size=(size[0] + 8, size[1]))  # partner a bit wider
        (folder / f"{name}.txt").write_text(f"shape {name}", encoding="utf-8")
    draw(folder / "lonely.png", 10)
    return folder


def test_multi_addift_over_a_folder(mode_job, pair_folder, caplog):
    job, host = mode_job("ADDifT_Action_SD1.5", mode="Multi-ADDifT", lora_data_directory=str(pair_folder),
                         diff_target_name="_after", train_iterations="4", image_min_length="64",
                         image_buckets_step="64", **{"image_size(height, width)": "96,64"},
                         diff_use_diff_mask="true", lora_trigger_word="sks")
    with caplog.at_level("WARNING"):
        result = run_job(job, host)
    assert result.status == "finished"
    assert any("lonely.png has no partner" in r.getMessage() for r in caplog.records)
    tensors = load_file(str(result.path))
    te_up = [v for k, v in tensors.items() if k.startswith("lora_te_") and k.endswith("lora_up.weight")]
    assert te_up and all(v.abs().sum() > 0 for v in te_up)  # BASE: captions encoded through the LoRA
    assert "pair_fit" in result.report


def test_multi_addift_without_pairs(mode_job, tmp_path):
    folder = tmp_path / "alone"
    folder.mkdir()
    draw(folder / "x.png", 10)
    job, host = mode_job("ADDifT_Action_SD1.5", mode="Multi-ADDifT", lora_data_directory=str(folder),
                         diff_target_name="_after", image_min_length="64")
    with pytest.raises(UserError, match="no pairs in"):
        run_job(job, host)
    job, host = mode_job("ADDifT_Action_SD1.5", mode="Multi-ADDifT", lora_data_directory=str(folder),
                         image_min_length="64")
    with pytest.raises(UserError, match="diff_target_name is empty"):
        run_job(job, host)
    assert not (tmp_path / "out").exists()


# -- SDXL: every mode -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset,extra", [
    ("iLECO", {"original_prompt": "a red circle"}),
    ("Difference", {}),
    ("ADDifT_Action_XL", {}),
    ("ADDifT_Action_XL", {"mode": "Multi-ADDifT"}),
])
def test_sdxl_modes_save_clean_files(mode_job, demo_models, pair, pair_folder, preset, extra):
    # with the evaluation loss on: every mode's eval batches on SDXL (time ids, pooled), at the start and step 3
    overrides = {"train_iterations": "3", "train_batch_size": "1", "eval_every_n_steps": "3", **extra}
    if extra.get("mode") == "Multi-ADDifT":
        overrides.update(lora_data_directory=str(pair_folder), diff_target_name="_after", image_min_length="64",
                         image_buckets_step="64")
    elif preset != "iLECO":
        overrides.update(original_image=str(pair[0]), target_image=str(pair[1]))
    job, host = mode_job(preset, family="sdxl", **overrides)
    result = run_job(job, host)
    assert result.status == "finished"
    assert inspect_lora(result.path, model=demo_models["sdxl"])["unmatched"] == CLEAN
    (step, value), = result.extras["eval_history"]
    assert step == 3 and math.isfinite(value) and math.isfinite(result.extras["eval_start"])
    assert f"Evaluation loss: {value:.6f} at step 3" in result.message
