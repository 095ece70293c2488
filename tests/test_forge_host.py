"""The same jobs inside Forge Neo (tests/fake_forge) and AUTOMATIC1111 (tests/fake_webui), in this process: the
host each one gets, LoRA / iLECO / ADDifT on SD1 and SDXL trained on the model the webui holds — its file not read,
its weights as they were afterwards, the file fully matched under every loader's rules — progress in its
`shared.state`, its Lora list refreshed, the tab's Model the held model and kept by a preset load. Then what only
Forge has: its lazy model loaded through its own reload call, a merged `<lora>` not trained into, its models off
the device, inference tensors copied (and on the CPU shared), the "sd version" sidecar, SD2 refused in one line."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import importlib.util

import pytest
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _load_by_path(name: str, path: Path):
    """Both fakes' drivers are called inprocess.py: each is imported under a name of its own."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fake_webui_modules = _load_by_path("fake_webui_inprocess", HERE / "fake_webui" / "inprocess.py").fake_webui_modules
fake_forge_modules = _load_by_path("fake_forge_inprocess", HERE / "fake_forge" / "inprocess.py").fake_forge_modules

WEBUIS = ["a1111", "forge"]


def _copy_checkpoint(source: Path, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".safetensors", ".yaml"):
        if source.with_suffix(suffix).exists():
            shutil.copy(source.with_suffix(suffix), folder / f"{name}{suffix}")
    return folder / f"{name}.safetensors"


class Bed:
    """One fake webui with the `held` checkpoint loaded and `other` (SD1) listed, seen the same way for both."""

    def __init__(self, kind, modules, held_path):
        self.kind, self.m, self.held_path = kind, modules, held_path
        from trainer.host.detect import detect, host_for

        self.webui = detect()
        self.host = host_for(self.webui)

    @property
    def sd_model(self):
        return self.m.sd_models.model_data.sd_model

    @property
    def label(self) -> str:
        """The held checkpoint as the tab's Model dropdown names it."""
        return self.host.default_model()

    def files_read(self) -> list[str]:
        return list(self.m.backend_utils.files_read if self.kind == "forge" else self.m.sd_models.files_read)

    def base_tensors(self) -> dict[str, torch.Tensor]:
        """Every base weight of the held model, by its LDM key (copied)."""
        if self.kind == "forge":
            from trainer.host.forge_model import ldm_entries

            return {e.key: torch.cat(e.parts).clone() if len(e.parts) > 1 else e.parts[0].clone()
                    for e in ldm_entries(self.sd_model)}
        return {k: v.detach().clone() for k, v in self.sd_model.state_dict().items()}

    def merge_lora(self, name: str):
        if self.kind == "forge":
            merged = self.m.networks.merge_random_lora(self.sd_model, name=name, seed=1)
            with torch.inference_mode():  # what the next generation's load does (F4.4)
                self.m.memory_management.load_models_gpu([self.sd_model.forge_objects.unet,
                                                          self.sd_model.forge_objects.clip.patcher])
            return merged
        return self.m.networks.merge_random_network(self.sd_model, name=name, seed=1)

    def lora_list_calls(self) -> int:
        return self.m.networks.list_available_networks_calls


@pytest.fixture
def bed(tmp_path, demo_models):
    """bed(webui, family) → a Bed; torn down after the test."""
    stack = []

    def make(webui="forge", family="sd1", cmd_opts=None, opts=None):
        ckpt_dir = tmp_path / "models" / "Stable-diffusion"
        held = _copy_checkpoint(demo_models[family], ckpt_dir, "held")
        _copy_checkpoint(demo_models["sd1"], ckpt_dir, "other")
        lora_dir = tmp_path / "models" / "Lora"
        if webui == "forge":
            context = fake_forge_modules(ckpt_dir, lora_dir, cmd_opts={"ckpt_dirs": [str(ckpt_dir)], **(cmd_opts or {})},
                                         opts={"sd_model_checkpoint": "held.safetensors", **(opts or {})})
        else:
            context = fake_webui_modules(ckpt_dir, lora_dir, cmd_opts=cmd_opts, opts=opts)
        modules = context.__enter__()
        stack.append(context)
        if webui == "forge":
            modules.main_entry.refresh_model_loading_parameters()
            modules.sd_models.forge_model_reload()  # a generation has run: Forge holds the model
        else:
            modules.sd_models.list_models()
            modules.sd_models.load_model(modules.sd_models.get_closet_checkpoint_match("held"))
        return Bed(webui, modules, held)

    yield make
    for context in reversed(stack):
        context.__exit__(None, None, None)


def _job(sample_images, model: str, mode: str = "LoRA", **changes):
    from trainer.settings import job_from_json

    preset = {"iLECO": "iLECO", "ADDifT": "ADDifT_Style_SD1.5"}.get(mode, "LoRA")
    data = json.loads((ROOT / "presets" / f"{preset}.json").read_text(encoding="utf-8"))
    data.update({"lora_data_directory": str(sample_images), "image_size(height, width)": "64",
                 "image_min_length": "64", "image_buckets_step": 64, "train_iterations": "2",
                 "train_batch_size": "1", "save_lora_name": "job", "train_seed": "0", "network_rank": "4",
                 "train_model_precision": "fp32", "train_VAE_precision": "fp32", "save_as_json": False,
                 **changes})
    if mode == "iLECO":
        data.update({"original prompt": "a (red:1.5) cat", "target prompt": "a cat"})
    if mode == "ADDifT":
        images = sorted(Path(sample_images).glob("*.png"))
        data.update({"original image": str(images[0]), "target image": str(images[1])})
    data["model"] = model
    job, unknown = job_from_json(data)
    assert not unknown
    return job


def _run(bed, job, control=None):
    from trainer.runner import run_job

    with bed.host.job_context(job):
        return run_job(job, bed.host, control)


def _assert_same(before: dict, after: dict) -> None:
    assert after.keys() == before.keys()
    changed = [k for k, v in before.items() if not torch.equal(after[k], v)]
    assert not changed, changed[:5]


def test_forge_neo_gets_its_host(bed):
    forge = bed("forge")
    from trainer.host.forge import ForgeNeoHost

    assert type(forge.host) is ForgeNeoHost and forge.webui.kind == "Forge Neo"
    assert "sd_models.load_model" in forge.webui.missing


def test_a1111_gets_its_host(bed):
    a1111 = bed("a1111")
    from trainer.host.webui import WebuiHost

    assert type(a1111.host) is WebuiHost and a1111.webui.kind == "AUTOMATIC1111"


def test_an_unknown_webui_is_named_not_guessed(monkeypatch):
    import types

    from trainer.host.detect import detect, host_for

    modules = types.ModuleType("modules")
    modules.__path__ = []
    modules.sd_models = types.ModuleType("modules.sd_models")  # neither load_model nor forge_model_reload
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.sd_models", modules.sd_models)
    webui = detect()
    assert webui.kind == "unknown"
    with pytest.raises(RuntimeError, match=r"does not recognise this webui .*not found: .*sd_models.load_model"):
        host_for(webui)


# Every mode on Forge; on A1111 (whose modes test_webui_reuse.py covers) the LoRA runs only, to keep the suite short.
JOBS = [("forge", family, mode) for family in ("sd1", "sdxl") for mode in ("LoRA", "iLECO", "ADDifT")] + [
    ("a1111", "sd1", "LoRA"), ("a1111", "sdxl", "LoRA")]


@pytest.mark.parametrize("webui,family,mode", JOBS)
def test_a_job_trains_on_the_held_model(bed, sample_images, webui, family, mode):
    b = bed(webui, family)
    before = b.base_tensors()
    read_before = b.files_read()
    b.held_path.unlink()  # any read of the checkpoint now fails: the job must not need its file
    job = _job(sample_images, b.label, mode)
    result = _run(b, job)
    assert result.path is not None and result.path.is_file(), result.message
    assert b.files_read() == read_before  # the webui's own load, before the job, and nothing since
    assert ("Forge's loaded model" if webui == "forge" else "the webui's loaded model") in result.message
    _assert_same(before, b.base_tensors())  # every base weight as it was
    from trainer.networks.io import inspect_lora

    report = inspect_lora(result.path, family_name=family)
    assert report["unmatched"] == {"a1111": [], "comfyui": [], "a1111_ineffective": [], "forge": []}
    assert report["non_finite"]["count"] == 0


@pytest.mark.parametrize("webui", WEBUIS)
def test_progress_the_lora_list_and_the_queue_lock(bed, sample_images, tmp_path, webui):
    from trainer.jobs.service import TrainingService

    b = bed(webui)
    state = b.m.shared.state
    seen = []
    calls = b.lora_list_calls()
    service = TrainingService(b.host, queue_file=tmp_path / "q.json", logs_dir=tmp_path / "logs",
                              json_dir=tmp_path / "json")
    original = b.host.report

    def watch(event):
        original(event)
        if event["kind"] == "step":
            seen.append((state.job_count, state.sampling_step, state.sampling_steps, state.textinfo,
                         b.m.call_queue.queue_lock.locked()))

    b.host.report = watch
    service.start(_job(sample_images, b.label, train_iterations="3", save_lora_name="progress"))
    assert service.wait(300)
    status = service.status()
    assert status.state == "finished", status.message
    assert [s[:3] for s in seen] == [(1, 1, 3), (1, 2, 3), (1, 3, 3)]
    assert all("TrainTrain: step" in s[3] and s[4] for s in seen)  # shown in its progress bar, under its queue lock
    assert b.lora_list_calls() > calls and "progress" in b.m.networks.available_networks
    assert "<lora:progress:1>" in status.message
    assert not b.m.call_queue.queue_lock.locked()
    sidecar = Path(b.host.lora_dir) / "progress.json"
    if webui == "forge":  # Neo's Lora tab files it under SD1 by this alone
        assert json.loads(sidecar.read_text(encoding="utf-8")) == {"sd version": "sd"}
    else:  # A1111 reads ss_base_model_version
        assert not sidecar.exists()


@pytest.mark.parametrize("webui", WEBUIS)
def test_the_tab_model_is_the_held_one_and_a_preset_keeps_it(bed, webui, tmp_path, monkeypatch):
    from trainer.jobs.service import TrainingService
    from trainer.ui.tab import Folders, TrainTrainTab

    b = bed(webui)
    if webui == "forge":  # Neo builds its list from a set: another order must not change the default
        listed = b.m.sd_models.checkpoint_tiles()
        monkeypatch.setattr(b.m.sd_models, "checkpoint_tiles", lambda use_short=False: list(reversed(listed)))
    assert Path(b.host.resolve(b.label)) == Path(b.sd_model.sd_checkpoint_info.filename)
    assert Path(b.host.resolve(b.label)).name == "held.safetensors"
    folders = Folders(presets=ROOT / "presets", json=tmp_path / "json", logs=tmp_path / "logs")
    tab = TrainTrainTab(TrainingService(b.host, queue_file=tmp_path / "q.json"), b.host, folders)
    tab.build()
    assert tab.widgets["model"].value == b.label
    for preset in ("LoRA", "iLECO", "Difference_Use2ndPass"):
        assert tab.widgets["model"] not in tab._on_preset_load(preset)  # never switched under the user


def test_forge_loads_its_selected_model_through_its_own_reload(bed, sample_images):
    b = bed("forge")
    b.m.sd_models.model_data.sd_model = b.m.sd_models.FakeInitialModel()  # as at start-up: nothing loaded yet
    b.m.sd_models.model_data.forge_hash = ""
    assert b.host.held() is None and b.label == "held.safetensors"  # the model Forge's own dropdown names
    calls = len(b.m.sd_models.forge_model_reload_calls)
    read = len(b.files_read())
    result = _run(b, _job(sample_images, b.label))
    assert result.path.is_file() and "Forge's loaded model" in result.message
    reloads = b.m.sd_models.forge_model_reload_calls[calls:]
    assert reloads and reloads[0]["reloaded"] and reloads[0]["lock_held"]  # under its queue lock
    assert b.files_read()[read:] == [str(b.held_path)]  # Forge's own load; the trainer read nothing more


def test_forge_merged_lora_is_not_trained_into(bed, sample_images):
    b = bed("forge")
    base = b.base_tensors()
    b.merge_lora("style")
    merged = b.base_tensors()
    assert any(not torch.equal(merged[k], v) for k, v in base.items())
    result = _run(b, _job(sample_images, b.label))
    assert "merged into its weights: trained on the base weights" in result.message
    _assert_same(base, b.base_tensors())  # restored from Forge's backups; its next generation merges again


def test_forge_models_leave_the_device_and_inference_tensors_are_copied(bed, sample_images, monkeypatch):
    b = bed("forge")
    memory = b.m.memory_management
    unloads = memory.unload_all_models_calls
    with b.host.job_context(None):
        c = b.host.load_components(b.label, torch.float32, torch.float32, None)
        trained = [p for m in (c.unet, c.vae, *c.text_encoders) for p in m.parameters()]
        assert trained and not any(p.is_inference() for p in trained)  # autograd can save them for backward
        forge_unet = b.sd_model.forge_objects.unet.model.diffusion_model
        ours = {p.untyped_storage().data_ptr() for p in c.unet.parameters()}
        theirs = {p.untyped_storage().data_ptr() for p in forge_unet.parameters()}
        assert ours <= theirs  # on the CPU Forge's UNet computes with the trainer's copy: one copy in RAM
        assert not any(p.is_inference() for p in forge_unet.parameters())
        hidden, pooled = c.prompt_encoder(["a (red:1.5) cat"])
        assert not hidden.is_inference() and pooled is None
        assert b.m.engine_base.conditioning_calls[-1] == ["a (red:1.5) cat"]  # Forge's own conditioning
    assert memory.unload_all_models_calls > unloads
    # a generation afterwards still works on Forge's (now ordinary) tensors
    p = b.m.processing.StableDiffusionProcessingTxt2Img(prompt="a cat", negative_prompt="", steps=2, width=64,
                                                         height=64, cfg_scale=5, sampler_name="Euler",
                                                         scheduler="Automatic", seed=1, do_not_save_samples=True,
                                                         do_not_save_grid=True)
    assert b.m.processing.process_images(p).images


def test_forge_on_a_gpu_frees_its_device_copy_first(bed, monkeypatch):
    b = bed("forge")
    monkeypatch.setattr(type(b.host), "device", property(lambda self: torch.device("cuda")))
    assert not b.host.holds(b.label)  # the trainer's copy on the GPU is new memory …
    notes = b.host._free_device("while training")
    assert "moved to the CPU while training" in notes[0]  # … after Forge's own copy left the device


def test_sd2_on_forge_neo_is_one_line(bed, demo_models, sample_images):
    from trainer.errors import UserError

    b = bed("forge")
    sd2 = _copy_checkpoint(demo_models["sd2"], b.held_path.parent, "twoside")
    b.m.sd_models.list_models()
    with pytest.raises(UserError, match="SD2 checkpoint, which Forge Neo cannot load"):
        _run(b, _job(sample_images, sd2.name))


def test_forge_classic_copies_only_its_inference_tensors(bed, sample_images, tmp_path, monkeypatch):
    """Forge Classic keeps A1111's model object (forge-api.md F4.5), told apart by its `ldm_patched` package; copies
    it made under inference mode during a generation cannot train (F4.3): those are copied, the rest shared."""
    b = bed("a1111")
    packages = tmp_path / "classic"
    for name in ("ldm_patched", "modules_forge"):
        (packages / name).mkdir(parents=True)
        (packages / name / "__init__.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(packages))
    from trainer.host.detect import detect, host_for
    from trainer.host.forge_classic import ForgeClassicHost

    webui = detect()
    assert webui.kind == "Forge Classic"
    host = host_for(webui)
    assert type(host) is ForgeClassicHost
    unet = b.sd_model.model.diffusion_model
    layer = next(m for m in unet.modules() if isinstance(m, torch.nn.Linear))
    with torch.inference_mode():  # what a generation's device copy leaves behind
        layer.weight = torch.nn.Parameter(layer.weight.clone(), requires_grad=False)
    assert layer.weight.is_inference()
    unloads = []
    real_unload = b.m.sd_models.unload_model_weights
    monkeypatch.setattr(b.m.sd_models, "unload_model_weights",
                        lambda *a, **k: unloads.append(1) or real_unload(*a, **k))
    before = {k: v.detach().clone() for k, v in b.sd_model.state_dict().items()}
    job = _job(sample_images, host.default_model())
    with host.job_context(job):
        from trainer.runner import run_job

        result = run_job(job, host)
    assert result.path.is_file(), result.message
    assert "Forge's loaded model" in result.message and "were inference tensors" in result.message
    assert unloads  # through Forge first: its merged LoRAs come out, its weights go to the CPU
    _assert_same(before, {k: v.detach().clone() for k, v in b.sd_model.state_dict().items()})


def test_forge_generate_buttons_run_its_txt2img(bed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    b = bed("forge")
    page = json.dumps({"Sampling steps": "7", "CFG Scale": "4.5", "Width": "64", "Height": "64", "Seed": "5"})
    reloads = len(b.m.sd_models.forge_model_reload_calls)
    images, info = b.host.generate(["a cat", "a dog"], "blurry", page)
    calls = b.m.processing.process_images_calls
    assert len(images) == 2 and [c["p"].prompt for c in calls] == ["a cat", "a dog"]
    assert (calls[0]["p"].steps, calls[0]["p"].seed, calls[0]["p"].negative_prompt) == (7, 5, "blurry")
    assert all(c["lock_held"] for c in calls)  # under Forge's queue lock, as its API runs txt2img
    assert len(b.m.sd_models.forge_model_reload_calls) > reloads  # Forge's selected model, loaded its own way
