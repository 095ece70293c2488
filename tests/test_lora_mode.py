"""LoRA mode end to end on the SD1 demo model: the loss goes down, the file loads everywhere, saves and stops."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
import torch.utils.checkpoint
from safetensors.torch import load_file

from trainer.data.cache import encode_latents
from trainer.data.images import find_images, fit_to_bucket, open_image
from trainer.engine import diffusion
from trainer.engine.control import JobControl
from trainer.errors import UserError
from trainer.models.components import load_components
from trainer.models.conditioning import encode_prompts
from trainer.networks.io import inspect_lora, read_lora
from trainer.networks.network import resume_network
from trainer.runner import run_job
from support import spy

pytestmark = pytest.mark.filterwarnings("ignore")


def held_out_loss(components, images_dir, seed=7, rounds=6):
    """Plain MSE on ε over fixed noise and timesteps that training never saw (64-px samples)."""
    files = find_images(images_dir)
    images = [fit_to_bucket(open_image(f.path), 64, 64)[0] for f in files]
    captions = [f.path.with_suffix(".txt").read_text(encoding="utf-8") for f in files]
    latents = encode_latents(components.vae, images, components.family, torch.Generator().manual_seed(123))
    alpha_bar = components.noise_scheduler.alphas_cumprod.float()
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        hidden, _ = encode_prompts(components, captions)
        for _ in range(rounds):
            noise = torch.randn(latents.shape, generator=g)
            t = torch.randint(0, 1000, (latents.shape[0],), generator=g)
            pred = components.unet(diffusion.add_noise(latents, noise, t, alpha_bar), t, hidden).sample
            total += torch.nn.functional.mse_loss(pred, noise).item()
    return total / rounds


def test_loss_goes_down_and_the_file_loads(lora_job, demo_models, sample_images):
    job, host = lora_job(network_type="c3lier", train_iterations="100", train_batch_size="4", eval_every_n_steps="50")
    result = run_job(job, host)
    assert result.status == "finished" and result.steps == 100 and len(result.losses) == 100
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-20:]) / 20
    # measured: first 20 steps ≈ 0.99, last 20 ≈ 0.54
    assert last < 0.8 * first, (first, last)
    # the evaluation loss falls with it; measured: 1.103 at the start, 0.921 at step 50, 0.858 at step 100
    start, ((_, middle), (_, end)) = result.extras["eval_start"], result.extras["eval_history"]
    assert end < middle < start and end < 0.85 * start, (start, middle, end)

    c = load_components(demo_models["sd1"])
    before = held_out_loss(c, sample_images)
    tensors, metadata = read_lora(result.path)
    network = resume_network(c.family, c.unet, c.text_encoders, tensors, str(result.path))
    after = held_out_loss(c, sample_images)
    network.detach()
    # measured: held-out loss 1.07 without the LoRA, 0.60 with it
    assert after < 0.8 * before, (before, after)

    report = inspect_lora(result.path, model=demo_models["sd1"])
    assert report["unmatched"] == {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}
    te_up = [v for k, v in tensors.items() if k.startswith("lora_te_") and k.endswith("lora_up.weight")]
    assert te_up and all(v.abs().sum() > 0 for v in te_up), "BASE is selected: the text-encoder LoRA must train"
    assert metadata["ss_max_train_steps"] == "100" and metadata["ss_seed"] == "0"
    assert metadata["ss_tag_frequency"].startswith('{"1": {')


def test_exact_step_count_periodic_saves_and_csv(lora_job, tmp_path):
    from trainer.jobs.logs import read_log

    events = []
    job, host = lora_job(train_iterations="6", save_per_steps="2", logging_save_csv="true")
    run_job(job, host, JobControl(on_event=events.append), logs_dir=tmp_path / "logs")
    steps = [e["step"] for e in events if e["kind"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]  # exactly train_iterations optimizer steps (upstream ran one more)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["t.safetensors", "t_2steps.safetensors", "t_4steps.safetensors"]
    [log] = list((tmp_path / "logs").rglob("*.csv"))
    lines = log.read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in lines[:8]] == ["network_rank", "network_alpha", "train_learning_rate",
                                                          "train_iterations", "train_lr_scheduler", "model_version",
                                                          "train_optimizer", "save_lora_name"]
    assert lines[5] == "model_version,sd_v1"
    assert lines[8] == "Step,Loss,Learning Rate 1,Learning Rate 2,Raw Loss"  # TE group first, then UNet
    frame = read_log(log)
    assert list(frame["Step"]) == [1, 2, 3, 4, 5, 6]
    assert frame["Raw Loss"].iloc[0] == frame["Loss"].iloc[0]  # the EMA starts at the first loss: the same float
    # each row logs the rate its step trained at: step 1 of a cosine schedule (no warm-up) at the full rate
    assert frame["Learning Rate 2"].iloc[0] == pytest.approx(1e-3) and frame["Learning Rate 2"].iloc[-1] > 0
    assert log.name.startswith("t-") and log.parent.name.isdigit()


@pytest.mark.parametrize("save", [False, True])
def test_stop_and_stop_and_save(lora_job, tmp_path, save):
    control = JobControl()

    def on_event(event):
        if event["kind"] == "step" and event["step"] == 3:
            control.request_stop(save=save)

    control.on_event = on_event
    job, host = lora_job(train_iterations="20")
    result = run_job(job, host, control)
    assert result.steps == 3
    files = sorted(p.name for p in (tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    if save:
        assert result.status == "stopped_saved" and files == ["t_3steps.safetensors"]
        assert "Successfully created" in result.message
    else:
        assert result.status == "stopped" and files == []


def test_same_seed_same_file(lora_job, tmp_path, one_thread):
    a_job, host = lora_job(save_lora_name="a", train_iterations="3")
    b_job, _ = lora_job(save_lora_name="b", train_iterations="3")
    a, b = run_job(a_job, host), run_job(b_job, host)
    ta, tb = load_file(str(a.path)), load_file(str(b.path))
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    _, ma = read_lora(a.path)
    _, mb = read_lora(b.path)
    assert ma["ss_seed"] == mb["ss_seed"] == "0"


def test_random_seed_is_recorded(lora_job):
    job, host = lora_job(train_seed="-1", train_iterations="1")
    _, meta = read_lora(run_job(job, host).path)
    assert 0 <= int(meta["ss_seed"]) < 2**32


# -- spying on what reaches the engine ----------------------------------------------------------------------------
def _spied_run(lora_job, monkeypatch, **overrides):
    """A run with the loss inputs, timesteps, weights, samples, network and components recorded."""
    import trainer.data.samples
    import trainer.engine.loss
    import trainer.networks.network

    run = type("Run", (), {})()
    run.losses_in = spy(monkeypatch, trainer.engine.loss, "per_sample_loss")  # (pred, target, kind, mask)
    run.snr_in = spy(monkeypatch, diffusion, "snr")  # (timesteps, alpha_bar)
    run.weights = spy(monkeypatch, trainer.engine.loss, "min_snr_weight")  # (snr, gamma, is_v) → weight
    run.samples = spy(monkeypatch, trainer.data.samples, "build_samples")
    run.networks = spy(monkeypatch, trainer.networks.network, "create_network")
    run.checkpointed = 0
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        run.checkpointed += 1
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    job, host = lora_job(**overrides)
    run.components = []
    real_load = host.load_components

    def load(*args, **kwargs):
        run.components.append(real_load(*args, **kwargs))
        return run.components[-1]

    monkeypatch.setattr(host, "load_components", load, raising=False)
    run.result = run_job(job, host)
    run.tensors = load_file(str(run.result.path))
    run.metadata = read_lora(run.result.path)[1]
    return run


def _check_precision(run, overrides):
    # the demo file is fp16; on the CPU fp16 computes in fp32 (test_components), so "model" and "fp32" mean fp32
    expected = {"fp32": torch.float32, "model": torch.float32, "bf16": torch.bfloat16}[
        overrides["train_model_precision"]]
    [components] = run.components
    assert next(components.unet.parameters()).dtype == expected
    assert {args[0].dtype for args, _, _ in run.losses_in} == {expected}  # the UNet's prediction
    lora_dtype = {"fp32": torch.float32}.get(overrides.get("train_lora_precision"), torch.float32)
    assert {p.dtype for net in (out for _, _, out in run.networks) for p in net.parameters()} == {lora_dtype}
    assert run.metadata["ss_mixed_precision"] == overrides["train_model_precision"]


_BASELINES: dict = {}


def _check_checkpointing(run, overrides, lora_job, monkeypatch):
    [components] = run.components
    assert components.unet.is_gradient_checkpointing
    assert run.checkpointed > 0  # blocks really ran through torch.utils.checkpoint
    assert run.metadata["ss_gradient_checkpointing"] == "true"
    # recomputing activations changes memory, not arithmetic: the same losses and file as without it
    monkeypatch.undo()
    plain = _spied_run(lora_job, monkeypatch, train_iterations="2", save_lora_name="plain")
    assert plain.checkpointed == 0 and not plain.components[0].unet.is_gradient_checkpointing
    assert run.result.losses == plain.result.losses
    assert all(torch.equal(run.tensors[k], plain.tensors[k]) for k in plain.tensors)


def _check_fixed_timesteps_smooth_l1_no_snr(run, overrides):
    assert [len(set(args[0].tolist())) for args, _, _ in run.snr_in] == [1, 1]  # one timestep per batch of 4
    assert all(len(args[0]) == 4 for args, _, _ in run.snr_in)
    assert {args[2] for args, _, _ in run.losses_in} == {"Smooth-L1"}
    assert all(args[1] == 0 and torch.equal(out, torch.ones_like(out)) for args, _, out in run.weights)
    # γ = 0: the loss is the plain mean of the per-sample Smooth-L1
    assert run.result.losses == [out.mean().item() for _, _, out in run.losses_in]
    assert run.metadata["ss_loss_type"] == "Smooth-L1" and run.metadata["ss_min_snr_gamma"] == "0"


def _check_large_batch(run, overrides):
    # 9 rows from 4 images: the data is repeated to fill the batch
    assert [args[0].shape[0] for args, _, _ in run.losses_in] == [9, 9]
    assert [len(args[0]) for args, _, _ in run.snr_in] == [9, 9]
    assert run.metadata["ss_batch_size_per_device"] == "9"


def _check_mirroring_and_sub_images(run, overrides):
    from PIL import ImageOps

    [(_, _, (samples, _))] = run.samples
    # 4 images × (the 128-px bucket + 1 sub-image at 64 px) × (as is + mirrored)
    assert len(samples) == 4 * 2 * 2
    assert sorted({s.bucket for s in samples}) == [(64, 64), (128, 128)]
    plain = [s for s in samples if not s.mirrored]
    mirrored = [s for s in samples if s.mirrored]
    assert len(plain) == len(mirrored) == 8
    for a, b in zip(plain, mirrored):  # each mirror copy follows its sample
        assert (a.source, a.bucket, a.caption) == (b.source, b.bucket, b.caption)
        assert ImageOps.mirror(a.image).tobytes() == b.image.tobytes() != a.image.tobytes()
    assert {tuple(args[0].shape[-2:]) for args, _, _ in run.losses_in} <= {(8, 8), (16, 16)}


def _check_loha_blocks(run, overrides):
    modules = {k.split(".")[0] for k in run.tensors}
    # IN01 = input_blocks.1 = down_blocks.0 layer 0; OUT11 = output_blocks.11 = up_blocks.3 layer 2; no BASE
    allowed = ("lora_unet_down_blocks_0_resnets_0_", "lora_unet_down_blocks_0_attentions_0_",
               "lora_unet_up_blocks_3_resnets_2_", "lora_unet_up_blocks_3_attentions_2_")
    assert all(m.startswith(allowed) for m in modules), sorted(m for m in modules if not m.startswith(allowed))
    assert any(m.startswith(allowed[:2]) for m in modules) and any(m.startswith(allowed[2:]) for m in modules)
    assert {k.split(".", 1)[1] for k in run.tensors} <= {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b",
                                                         "hada_t1", "hada_t2", "alpha"}
    assert {v.shape[0] for k, v in run.tensors.items() if k.endswith("hada_w1_b")} == {4}  # rank 4
    assert {float(v) for k, v in run.tensors.items() if k.endswith(".alpha")} == {2.0}
    assert run.metadata["ss_network_module"] == "lycoris.kohya"
    assert json.loads(run.metadata["ss_network_args"])["algo"] == "loha"


VARIANTS = {
    "fp32": ({"train_model_precision": "fp32"}, _check_precision),
    "bf16 model, fp32 LoRA": ({"train_model_precision": "bf16", "train_lora_precision": "fp32"}, _check_precision),
    "model precision": ({"train_model_precision": "model"}, _check_precision),
    "gradient checkpointing": ({"use_gradient_checkpointing": "true"}, _check_checkpointing),
    "fixed timesteps, Smooth-L1, no SNR": ({"train_fixed_timsteps_in_batch": "true", "train_loss_function": "Smooth-L1",
                                            "train_snr_gamma": "0", "train_batch_size": "4"},
                                           _check_fixed_timesteps_smooth_l1_no_snr),
    "batch 9": ({"train_batch_size": "9"}, _check_large_batch),  # larger than the 4 images
    "mirroring, sub-images": ({"image_mirroring": "true", "sub_image_num": "1", "image_size(height, width)": "128",
                               "image_min_length": "64"}, _check_mirroring_and_sub_images),
    "loha, two blocks": ({"network_type": "loha", "network_blocks(BASE = TextEncoder)": ["IN01", "OUT11"]},
                         _check_loha_blocks),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_settings_variants_train(lora_job, monkeypatch, variant):
    import inspect

    overrides, check = VARIANTS[variant]
    run = _spied_run(lora_job, monkeypatch, train_iterations="2", **overrides)
    assert run.result.status == "finished" and run.result.path.is_file()
    assert len(run.result.losses) == 2 and all(math.isfinite(x) for x in run.result.losses)
    assert len(run.losses_in) == 2 and run.metadata["ss_max_train_steps"] == "2"
    assert {v.dtype for v in run.tensors.values()} == {torch.float16}  # the preset's save_precision
    if overrides.get("network_type", "lierla") == "lierla":  # the fixture's rank 4, alpha 2
        assert {v.shape[0] for k, v in run.tensors.items() if k.endswith("lora_down.weight")} == {4}
        assert {float(v) for k, v in run.tensors.items() if k.endswith(".alpha")} == {2.0}
    if "lora_job" in inspect.signature(check).parameters:
        check(run, overrides, lora_job, monkeypatch)
    else:
        check(run, overrides)


# -- min-SNR-γ: the weight that reaches the loss -----------------------------------------------------------------
U32 = 2.0 ** -24  # fp32 unit round-off


@pytest.mark.parametrize("family,v_prediction", [("sd1", False), ("sd2", True)])
def test_min_snr_weight_reaches_the_loss(lora_job, monkeypatch, family, v_prediction):
    """Each step's loss is mean(per-sample loss · w) with w worked here in float64 from the run's own ᾱ_t:
    min(SNR, γ)/SNR for ε models, min(SNR, γ)/(SNR + 1) for v models (README: upstream used the ε form for both)."""
    gamma, batch = 5.0, 4
    overrides = {"model_v_pred": "true"} if v_prediction else {}
    run = _spied_run(lora_job, monkeypatch, family=family, train_iterations="3", train_batch_size=str(batch),
                     train_snr_gamma=str(gamma), **overrides)
    assert run.components[0].is_v_prediction is v_prediction
    assert run.metadata["modelspec.prediction_type"] == ("v" if v_prediction else "epsilon")
    assert len(run.snr_in) == len(run.losses_in) == 3
    clipped = 0
    for loss, (snr_args, _, _), (_, _, per_sample) in zip(run.result.losses, run.snr_in, run.losses_in):
        t, alpha_bar = snr_args[0], snr_args[1]
        a = alpha_bar[t].double()
        snr = a / (1 - a)
        w = snr.clamp(max=gamma) / ((snr + 1) if v_prediction else snr)
        clipped += int((snr > gamma).sum())
        expected = (per_sample.double() * w).mean().item()
        # fp32 in the engine: SNR ≤ 2 roundings, the weight ≤ 4 more, the product 1, the mean of B terms B:
        # relative error ≤ (7 + B)·u; twice that as the bound. ε vs v differ by the factor ᾱ_t (≤ 0.9992 here).
        assert loss == pytest.approx(expected, rel=2 * (7 + batch) * U32, abs=0), (t.tolist(), loss, expected)
        other = (per_sample.double() * snr.clamp(max=gamma) / (snr if v_prediction else snr + 1)).mean().item()
        assert abs(loss - other) > 100 * 2 * (7 + batch) * U32 * expected  # the other form is far outside it
    assert 0 < clipped < 3 * batch  # both branches of min(SNR, γ) were exercised


@pytest.mark.parametrize("family,overrides", [
    ("sdxl", {}),
    ("sd2", {"model_v_pred": "true"}),
])
def test_other_families_train(lora_job, demo_models, family, overrides):
    job, host = lora_job(family=family, train_iterations="3", **overrides)
    result = run_job(job, host)
    assert result.status == "finished"
    report = inspect_lora(result.path, model=demo_models[family])
    assert report["unmatched"] == {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}
    _, meta = read_lora(result.path)
    if family == "sd2":
        assert meta["modelspec.prediction_type"] == "v"


def test_resume_continues_from_a_file(lora_job):
    job, host = lora_job(save_lora_name="first", network_type="c3lier", network_rank="8")
    first = run_job(job, host)
    job, host = lora_job(save_lora_name="second", network_resume=str(first.path), network_rank="4")
    second = run_job(job, host)
    a, b = load_file(str(first.path)), load_file(str(second.path))
    assert a.keys() == b.keys()  # same modules, rank 8 from the file (not the setting's 4)
    assert all(a[k].shape == b[k].shape for k in a)


def _bad_inputs(tmp_path, sample_images):
    empty = tmp_path / "empty"
    empty.mkdir()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("not an image", encoding="utf-8")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    latin = tmp_path / "latin"
    latin.mkdir()
    (latin / "a.png").write_bytes((sample_images / "red_circle.png").read_bytes())
    (latin / "a.txt").write_bytes("caf\xe9 na\xefve".encode("latin-1"))
    return {
        "empty data dir": ({"lora_data_directory": str(empty)}, "no images"),
        "missing data dir": ({"lora_data_directory": str(tmp_path / "nope")}, "is not a folder"),
        "no data dir": ({"lora_data_directory": ""}, "lora_data_directory is empty"),
        "non-images": ({"lora_data_directory": str(texts)}, "no images"),
        "corrupt image": ({"lora_data_directory": str(corrupt)}, "cannot read the image"),
        "caption encoding": ({"lora_data_directory": str(latin)}, "not UTF-8"),
        "rank abc": ({"network_rank": "abc"}, "network_rank: 'abc' is not a whole number"),
        "lr -1": ({"train_learning_rate": "-1"}, "train_learning_rate: '-1' must be greater than 0"),
        "unknown optimizer": ({"train_optimizer": "Adamz"}, "train_optimizer: 'Adamz' is not one of AdamW"),
        "iterations 0": ({"train_iterations": "0"}, "train_iterations: '0' must be at least 1"),
        "bucket step 0": ({"image_buckets_step": "0"}, "image_buckets_step: 0 is not a bucket step"),
        "slash in name": ({"save_lora_name": "a/b"}, "must be a plain file name"),
        "dots in name": ({"save_lora_name": ".."}, "must be a plain file name"),
        "missing resume file": ({"network_resume": str(tmp_path / "nope.safetensors")}, "network_resume:"),
    }


def test_bad_inputs_one_line_no_file(lora_job, tmp_path, sample_images):
    for case, (overrides, expected) in _bad_inputs(tmp_path, sample_images).items():
        with pytest.raises(UserError) as err:
            job, host = lora_job(**overrides)
            run_job(job, host)
        message = str(err.value)
        assert expected in message, (case, message)
        assert "\n" not in message, case
        out = tmp_path / "out"
        assert not out.exists() or not any(out.iterdir()), case


def test_existing_file_is_refused_before_training(lora_job, tmp_path):
    job, host = lora_job()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "t.safetensors").write_bytes(b"keep me")
    events = []
    with pytest.raises(UserError, match="already exists"):
        run_job(job, host, JobControl(on_event=events.append))
    assert not events and (tmp_path / "out" / "t.safetensors").read_bytes() == b"keep me"


def test_cli_train_errors_are_one_line(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"mode": "LoRA", "network_rank": "abc"}', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", str(config), "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: network_rank: 'abc' is not a whole number"
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", str(config), "--set", "mode=iLECO"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: ")


def test_cli_train_demo_run(tmp_path):
    """README's main command: no config → a short LoRA run on the demo model and sample images."""
    proc = subprocess.run([sys.executable, "-m", "trainer", "train", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].startswith("Successfully created") and lines[-1].endswith("demo.safetensors")
    assert "using the bundled demo model" in proc.stderr + proc.stdout
    assert (tmp_path / "demo.safetensors").is_file()


def test_save_as_json_writes_the_run_settings(lora_job, tmp_path):
    import json

    from trainer.settings import job_from_json

    job, host = lora_job(save_as_json="true", train_iterations="1")
    run_job(job, host, json_dir=tmp_path / "json")
    [saved] = list((tmp_path / "json").rglob("*.json"))
    assert saved.parent.name.isdigit() and saved.name.startswith("t-")
    again, unknown = job_from_json(json.loads(saved.read_text(encoding="utf-8")))
    assert not unknown and again.settings.as_dict() == job.settings.as_dict() and again.model == job.model
