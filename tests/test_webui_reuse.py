"""Inside the webui (tests/fake_webui, in this process): a job trains on the model the webui holds — no read of its
file, no second copy, the base weights restored from a merged <lora:…> and bit-identical afterwards — or, for another
checkpoint, frees the webui's model and puts it back; progress, Interrupt/Skip, the Lora list, the webui's
conditioning for prompts, low-VRAM mode and the iLECO Generate buttons."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "fake_webui"))
from inprocess import fake_webui_modules  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _copy_checkpoint(source: Path, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(source.with_suffix(suffix), folder / f"{name}{suffix}")
    return folder / f"{name}.safetensors"


@pytest.fixture(scope="module")
def sd2v_model(tmp_path_factory):
    from trainer.models.demo import make_demo_model

    return make_demo_model("sd2", tmp_path_factory.mktemp("sd2v") / "demo-sd2v.safetensors", v_prediction=True)


@pytest.fixture
def webui_factory(tmp_path, demo_models, sd2v_model):
    """webui(family, **overrides) → the fake webui's modules with that family's checkpoint loaded ('held'), a second
    SD1 checkpoint ('other') listed beside it; torn down after the test."""
    stack = []

    def make(family="sd1", cmd_opts=None, opts=None):
        models = {**demo_models, "sd2v": sd2v_model}
        ckpt_dir = tmp_path / "models" / "Stable-diffusion"
        held = _copy_checkpoint(models[family], ckpt_dir, "held")
        _copy_checkpoint(demo_models["sd1"], ckpt_dir, "other")
        context = fake_webui_modules(ckpt_dir, tmp_path / "models" / "Lora", cmd_opts=cmd_opts, opts=opts)
        webui = context.__enter__()
        stack.append(context)
        webui.sd_models.list_models()
        info = webui.sd_models.get_closet_checkpoint_match("held")
        webui.sd_models.load_model(info)
        webui.held_path, webui.info = held, info
        from trainer.host.webui import WebuiHost

        webui.host = WebuiHost()
        return webui

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


def _job(sample_images, model: str, mode: str = "LoRA", **changes):
    from trainer.settings import job_from_json

    preset = "iLECO" if mode == "iLECO" else "LoRA"
    data = json.loads((ROOT / "presets" / f"{preset}.json").read_text(encoding="utf-8"))
    data.update({"lora_data_directory": str(sample_images), "image_size(height, width)": "64",
                 "image_min_length": "64", "image_buckets_step": 64, "train_iterations": "3",
                 "train_batch_size": "1", "save_lora_name": "reuse", "train_seed": "0", "network_rank": "4",
                 "train_model_precision": "fp32", "train_VAE_precision": "fp32", **changes})
    data["model"] = model
    job, unknown = job_from_json(data)
    assert not unknown
    return job


def _snapshot(sd_model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sd_model.state_dict().items()}


def _assert_unchanged(sd_model, before: dict[str, torch.Tensor]) -> None:
    after = sd_model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert not changed, changed[:5]


def _storages(module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in module.state_dict().values()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _run(webui, job, control=None):
    from trainer.runner import run_job

    with webui.host.job_context(job):
        return run_job(job, webui.host, control)


@pytest.mark.parametrize("family", ["sd1", "sd2v", "sdxl"])
def test_a_job_trains_on_the_held_model_without_reading_its_file(webui_factory, sample_images, family):
    webui = webui_factory(family)
    sd_model = webui.sd_models.model_data.sd_model
    before = _snapshot(sd_model)
    webui.held_path.unlink()  # any read of the checkpoint now fails: the job must not need its file
    job = _job(sample_images, webui.info.title)
    assert webui.host.holds(job.model)
    result = _run(webui, job)
    assert result.path is not None and result.path.is_file()
    assert "the webui's loaded model" in result.message
    assert webui.sd_models.files_read == [str(webui.info.filename)]  # only the webui's own load, before the job
    _assert_unchanged(sd_model, before)  # every base tensor bit-identical
    assert all(p.requires_grad for p in sd_model.parameters())  # as the webui had them
    from trainer.networks.io import read_lora

    tensors, metadata = read_lora(result.path)
    assert tensors and all(torch.isfinite(t).all() for t in tensors.values())
    if family == "sd2v":
        assert metadata.get("ss_v2") == "True"


@pytest.mark.parametrize("family", ["sd1", "sd2v", "sdxl"])
def test_the_trainer_shares_the_webuis_tensors(webui_factory, sample_images, family):
    webui = webui_factory(family)
    sd_model = webui.sd_models.model_data.sd_model
    job = _job(sample_images, webui.info.title)
    with webui.host.job_context(job):
        warm = webui.host.load_components(job.model, torch.float32, torch.float32, None)  # imports, caches
        del warm
        webui.host._drop_loaded()
        rss = _rss_bytes()
        c = webui.host.load_components(job.model, torch.float32, torch.float32, None)
        grown = _rss_bytes() - rss
        webui_storages = _storages(sd_model)
        for module in (c.unet, c.vae, *c.text_encoders):
            ours = {p.untyped_storage().data_ptr() for p in module.parameters()}
            assert ours <= webui_storages, type(module).__name__
        assert not any(p.requires_grad for p in sd_model.parameters())  # off for the job
    model_bytes = sum(t.numel() * t.element_size() for t in sd_model.state_dict().values())
    assert grown < 0.05 * model_bytes, (grown, model_bytes)
    assert all(p.requires_grad for p in sd_model.parameters())  # and back


def test_a_merged_lora_is_restored_before_training(webui_factory, sample_images):
    webui = webui_factory("sd2v")
    sd_model = webui.sd_models.model_data.sd_model
    base = _snapshot(sd_model)
    layers = webui.networks.merge_random_network(sd_model, name="style", seed=1)
    assert layers and any(not torch.equal(sd_model.state_dict()[k], v) for k, v in base.items())
    result = _run(webui, _job(sample_images, webui.info.title))
    assert "<lora:style>" in result.message
    _assert_unchanged(sd_model, base)  # trained on, and left with, the base weights
    from trainer.host.held_model import merged_layers

    assert merged_layers(sd_model) == []  # the webui merges it again from the base at its next generation
    assert [n.name for n in webui.networks.loaded_networks] == ["style"]  # its last networks, as it had them


def test_a_merge_without_backup_is_refused_in_one_line(webui_factory, sample_images):
    webui = webui_factory("sd1", opts={"lora_without_backup_weight": True})
    sd_model = webui.sd_models.model_data.sd_model
    webui.networks.merge_random_network(sd_model, name="style")
    merged = _snapshot(sd_model)
    from trainer.errors import UserError

    with pytest.raises(UserError, match="without a backup.*reload the checkpoint"):
        _run(webui, _job(sample_images, webui.info.title))
    _assert_unchanged(sd_model, merged)  # nothing touched


@pytest.mark.parametrize("fails", [False, True])
def test_another_checkpoint_frees_the_webuis_model_and_puts_it_back(webui_factory, sample_images, monkeypatch,
                                                                     fails):
    webui = webui_factory("sdxl")
    held = webui.sd_models.model_data.sd_model
    before = _snapshot(held)
    other = webui.sd_models.get_closet_checkpoint_match("other")
    job = _job(sample_images, other.title)
    assert not webui.host.holds(job.model)
    import trainer.host.webui as host_module

    seen = []
    real = host_module.load_components

    def spy(path, **kwargs):
        current = webui.sd_models.model_data.sd_model
        seen.append(current is None or all(p.is_meta for p in current.parameters()))
        if fails:
            raise RuntimeError("boom")
        return real(path, **kwargs)

    monkeypatch.setattr(host_module, "load_components", spy)
    if fails:
        with pytest.raises(RuntimeError, match="boom"):
            _run(webui, job)
    else:
        result = _run(webui, job)
        assert result.path.is_file() and "loaded again afterwards" in result.message
    assert seen == [True]  # released (on this CPU webui: dropped) before ours loaded
    back = webui.sd_models.model_data.sd_model
    assert back.sd_checkpoint_info.filename == webui.info.filename and back.is_sdxl
    _assert_unchanged(back, before)


def test_progress_skip_and_the_lora_list(webui_factory, sample_images, tmp_path):
    from trainer.jobs.service import TrainingService

    webui = webui_factory("sd1")
    state = webui.shared.state
    seen = []
    calls_before = webui.networks.list_available_networks_calls
    service = TrainingService(webui.host, queue_file=tmp_path / "q.json", logs_dir=tmp_path / "logs",
                              json_dir=tmp_path / "json")
    original = webui.host.report

    def watch(event):
        original(event)
        seen.append((state.job_count, state.sampling_step, state.sampling_steps, state.textinfo))
        if event["kind"] == "step" and event["step"] == 2:
            state.skip()  # the webui's Skip button: stop and save

    webui.host.report = watch
    service.start(_job(sample_images, webui.info.title, train_iterations="6", save_lora_name="skipped"))
    assert service.wait(300)
    status = service.status()
    assert status.state == "stopped", status.message
    assert (Path(webui.host.lora_dir) / "skipped_2steps.safetensors").is_file()
    assert "<lora:skipped_2steps:1>" in status.message
    steps = [s for s in seen if s[3] and "step" in s[3]]
    assert steps[0][:3] == (1, 1, 6) and steps[-1][1] == 2 and "TrainTrain" in steps[-1][3]
    assert webui.networks.list_available_networks_calls > calls_before  # the Lora tab sees the file
    assert "skipped_2steps" in webui.networks.available_networks
    assert not webui.call_queue.queue_lock.locked()


def test_interrupt_stops_without_saving(webui_factory, sample_images, tmp_path):
    from trainer.engine.control import JobControl, Status

    webui = webui_factory("sd1")
    control = JobControl(external_interrupt=webui.host.interrupted, external_skip=webui.host.skipped)
    control.on_event = lambda e: e["kind"] == "step" and e["step"] == 2 and webui.shared.state.interrupt()
    result = _run(webui, _job(sample_images, webui.info.title, train_iterations="6", save_lora_name="cut"), control)
    assert result.status == Status.STOPPED and result.steps == 2 and result.path is None
    assert not list(Path(webui.host.lora_dir).glob("cut*"))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_ileco_prompts_use_the_webuis_conditioning(webui_factory, sample_images, family):
    webui = webui_factory(family)
    calls = webui.prompt_parser.learned_conditioning_calls
    job = _job(sample_images, webui.info.title, mode="iLECO", **{"original prompt": "a (red:1.5) cat", "target prompt": "a cat"},
               train_iterations="2", **{"network_blocks(BASE = TextEncoder)": ["IN04", "OUT04"]})
    result = _run(webui, job)
    assert result.path.is_file()
    prompts = [p for batch, _ in calls for p in batch]
    assert "a (red:1.5) cat" in prompts and "a cat" in prompts  # emphasis syntax handed to the webui as typed
    with webui.host.job_context(job):
        c = webui.host.load_components(job.model, torch.float32, torch.float32, None)
        hidden, pooled = c.prompt_encoder(["a (red:1.5) cat"])
        plain, _ = c.prompt_encoder(["a red cat"])
        sd_model = webui.sd_models.model_data.sd_model
        expected = webui.prompt_parser.get_learned_conditioning(
            sd_model, webui.prompt_parser.SdConditioning(["a (red:1.5) cat"]), 1)[0][0].cond
        long, _ = c.prompt_encoder([" ".join(["cat"] * 100)])
    if family == "sdxl":
        assert torch.equal(hidden[0], expected["crossattn"]) and pooled.shape == (1, pooled.shape[1])
        assert torch.equal(pooled[0], expected["vector"][:pooled.shape[1]])
    else:
        assert torch.equal(hidden[0], expected) and pooled is None
    assert not torch.equal(hidden, plain)  # the weight changed the conditioning
    assert long.shape[1] == 154  # over 75 tokens: two chunks, as the webui encodes them


def test_lowvram_mode_is_said_and_nothing_stays_on_the_device(webui_factory, sample_images):
    webui = webui_factory("sd1", cmd_opts={"medvram": True})
    sd_model = webui.sd_models.model_data.sd_model
    webui.lowvram.setup_for_low_vram(sd_model, True)
    calls = webui.lowvram.send_everything_to_cpu_calls
    before = _snapshot(sd_model)
    result = _run(webui, _job(sample_images, webui.info.title))
    assert result.path.is_file() and "--medvram/--lowvram" in result.message
    assert webui.lowvram.send_everything_to_cpu_calls > calls
    _assert_unchanged(sd_model, before)


def test_the_generate_buttons_run_the_webuis_txt2img(webui_factory, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the webui saves into outputs/ relative to its folder
    webui = webui_factory("sd1")
    page = json.dumps({"Sampling steps": "7", "CFG Scale": "4.5", "Width": "64", "Height": "64", "Seed": "5",
                       "Sampling method": "DDIM"})
    images, info = webui.host.generate(["a cat", "a dog"], "blurry", page)
    calls = webui.processing.process_images_calls
    assert len(images) == 2 and [c["p"].prompt for c in calls] == ["a cat", "a dog"]
    p = calls[0]["p"]
    assert (p.steps, p.cfg_scale, p.width, p.height, p.seed, p.sampler_name, p.negative_prompt) == (
        7, 4.5, 64, 64, 5, "DDIM", "blurry")
    assert calls[1]["p"].seed == 5 and all(c["lock_held"] for c in calls)  # one seed for both, under the lock
    assert images[0].size == (64, 64) and "a cat" in info
    assert len(list((tmp_path / "outputs").rglob("*.png"))) == 2  # saved as the txt2img tab saves
    assert webui.processing.close_calls == 2


def test_generate_falls_back_to_the_saved_txt2img_defaults(webui_factory, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    webui = webui_factory("sd1")
    config = Path(webui.paths_internal.data_path) / "ui-config.json"
    config.write_text(json.dumps({"txt2img/Sampling steps/value": 11, "txt2img/Seed/value": -1}), encoding="utf-8")
    webui.host.generate(["a cat"], "", "")
    p = webui.processing.process_images_calls[-1]["p"]
    assert p.steps == 11 and p.seed >= 0  # a random seed, chosen once


def test_on_a_gpu_the_webuis_model_is_moved_off_and_back(webui_factory, sample_images, monkeypatch):
    """The CUDA branch, with the device faked: unload_model_weights (to the CPU) and the cache emptied before ours
    loads, the model moved back to the webui's device when the job ends — not reloaded from its file."""
    webui = webui_factory("sd1")
    held = webui.sd_models.model_data.sd_model
    calls = []
    monkeypatch.setattr(type(webui.host), "device", property(lambda self: torch.device("cuda")))
    monkeypatch.setattr(webui.sd_models, "unload_model_weights", lambda m=None, info=None: calls.append(("unload", m)))
    monkeypatch.setattr(webui.devices, "torch_gc", lambda: calls.append(("gc", None)))
    monkeypatch.setattr(type(held), "to", lambda self, *a, **k: calls.append(("to", a)) or self, raising=False)
    other = webui.sd_models.get_closet_checkpoint_match("other")
    job = _job(sample_images, other.title)
    with webui.host.job_context(job):
        notes = webui.host._release_held()
        assert calls[:2] == [("unload", held), ("gc", None)] and "to the CPU" in notes[0]
    assert ("to", (webui.devices.device,)) in calls  # back on the webui's device
    assert webui.sd_models.files_read == [str(webui.info.filename)]  # and not read again


def test_sample_previews_are_the_webuis_txt2img_of_the_lora_as_it_is(webui_factory, sample_images):
    """Training on the webui's model, previews are its own generations: at each sample point the network is saved to
    a temporary file in the Lora folder and each cell is a txt2img of `<prompt> <lora:that file:m>` (m = 0: the
    prompt alone, on unmerged base weights). The webui merges that LoRA into the very tensors the job trains, so
    after each render they are restored bit for bit: the training goes on exactly as without previews."""
    from PIL import Image

    from trainer.networks.io import read_lora

    webui = webui_factory("sd1")
    sd_model, calls = webui.sd_models.model_data.sd_model, webui.processing.process_images_calls
    before, begun = _snapshot(sd_model), webui.shared.state.begun
    settings = {"train_iterations": "4", "save_per_steps": "2", "save_precision": "fp32", "network_rank": "4"}
    plain = _run(webui, _job(sample_images, webui.info.title, save_lora_name="plain", **settings))
    _assert_unchanged(sd_model, before)
    job = _job(sample_images, webui.info.title, save_lora_name="seen", sample_every_n_steps="2",
               sample_multipliers="0, 1", sample_prompts="a red circle", sample_size="64,96", sample_seed="7",
               **settings)
    assert type(webui.host.preview_renderer(job)).__name__ == "WebuiPreviews"
    result = _run(webui, job)
    _assert_unchanged(sd_model, before)  # every merge taken back out
    trained, _ = read_lora(result.path)
    assert all(torch.equal(t, read_lora(plain.path)[0][k]) for k, t in trained.items())  # previews changed nothing

    assert [c["prompt"] for c in calls] == ["a red circle"] * 4 and webui.shared.state.begun == begun + 2
    for call, step, multiplier in zip(calls, (2, 2, 4, 4), (0, 1, 0, 1), strict=True):
        p = call["p"]
        assert (p.width, p.height, p.seed, p.steps, p.cfg_scale, p.sampler_name) == (96, 64, 7, 20, 7.0, "Euler")
        assert p.do_not_save_samples and p.do_not_save_grid and call["lock_held"]
        if multiplier == 0:  # the base model: no network active, no layer merged
            assert p.prompt == "a red circle" and call["networks"] == [] and call["merged"] == {}
            continue
        (net,) = call["networks"]
        assert re.fullmatch(r"a red circle <lora:traintrain-preview-\d+-\d+:1>", p.prompt)
        assert (net.te_multiplier, net.unet_multiplier) == (1.0, 1.0) and call["merged"]
        periodic, _ = read_lora(result.path.with_name("seen_2steps.safetensors") if step == 2 else result.path)
        assert net.tensors.keys() == periodic.keys()  # the network as it was at that step
        assert all(torch.equal(net.tensors[k], periodic[k]) for k in periodic)
    folder = Path(webui.host.lora_dir) / "seen_samples"
    assert sorted(p.name for p in folder.iterdir()) == ["seen_000002.png", "seen_000004.png"]
    with Image.open(folder / "seen_000004.png") as image:
        assert image.size == (2 * 96, 64) and json.loads(image.text["rendered_by"]) == "webui txt2img"
        assert image.getpixel((0, 0)) == calls[2]["images"][0].getpixel((0, 0))  # the base model's image
        assert image.getpixel((96, 0)) == calls[3]["images"][0].getpixel((0, 0))
        assert calls[0]["images"][0].getpixel((0, 0)) == calls[2]["images"][0].getpixel((0, 0))
        assert calls[1]["images"][0].getpixel((0, 0)) != calls[3]["images"][0].getpixel((0, 0))  # it trained
    assert not (Path(webui.host.lora_dir) / ".traintrain-previews").exists()
    assert not [n for n in webui.networks.available_networks if n.startswith("traintrain-preview")]
    assert webui.networks.loaded_networks == []


def test_previews_are_rendered_by_the_trainer_where_the_webui_cannot_take_a_merge_back(webui_factory, sample_images):
    webui = webui_factory("sd1")
    other = _job(sample_images, webui.sd_models.get_closet_checkpoint_match("other").title, sample_every_n_steps="0")
    assert webui.host.preview_renderer(other) is None  # another checkpoint: the webui's model is not the one trained
    job = _job(sample_images, webui.info.title, sample_every_n_steps="0")
    assert webui.host.preview_renderer(job) is not None
    webui.shared.opts.data["lora_without_backup_weight"] = True  # a merge could not be undone
    assert webui.host.preview_renderer(job) is None


def test_preview_files_a_killed_webui_left_are_removed(webui_factory, sample_images):
    webui = webui_factory("sd1")
    from trainer.host.webui_generate import PREVIEW_FOLDER, WebuiPreviews

    folder = Path(webui.host.lora_dir) / PREVIEW_FOLDER
    folder.mkdir(parents=True)
    left = folder / f"{WebuiPreviews.file_name(2**23, 1)}.safetensors"  # above Linux's largest pid_max: not running
    live = folder / f"{WebuiPreviews.file_name(os.getpid(), 1)}.safetensors"
    left.write_bytes(b"x")
    live.write_bytes(b"x")
    webui.host.preview_renderer(_job(sample_images, webui.info.title, sample_every_n_steps="0"))
    assert sorted(p.name for p in folder.iterdir()) == [live.name]
