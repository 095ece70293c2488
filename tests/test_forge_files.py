"""What Forge needs of the files and tensors, checked without a fake Forge: the `<lora>.json` "sd version" sidecar
Neo's Lora tab filters by, a new file name where Forge would keep applying the old file (forge-api.md F6), and
Forge's HF-spelled CLIP-G turned back into the checkpoint's OpenCLIP tensors (F4.1)."""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch
from safetensors.torch import load_file

from trainer.networks.sidecar import write_sd_version
from trainer.runner import run_job


def test_sd_version_sidecar_is_written_and_keeps_the_users_keys(lora_job, tmp_path):
    job, host = lora_job("sd1", train_iterations="1")
    result = run_job(job, host)
    path = host.lora_dir / "t.safetensors"
    assert result.path == path
    write_sd_version(path)
    assert json.loads(path.with_suffix(".json").read_text(encoding="utf-8")) == {"sd version": "sd"}
    path.with_suffix(".json").write_text(json.dumps({"description": "mine", "sd version": "xl"}), encoding="utf-8")
    write_sd_version(path)
    assert json.loads(path.with_suffix(".json").read_text(encoding="utf-8")) == {"description": "mine",
                                                                                 "sd version": "sd"}
    path.with_suffix(".json").write_text("not json", encoding="utf-8")
    write_sd_version(path)  # a file the user broke is left alone
    assert path.with_suffix(".json").read_text(encoding="utf-8") == "not json"


def test_sdxl_and_sd2_loras(tmp_path):
    from safetensors.torch import save_file

    for version, expected in (("sdxl_base_v1-0", {"sd version": "xl"}), ("sd_v2", None)):
        path = tmp_path / f"{version}.safetensors"
        save_file({"x": torch.zeros(1)}, str(path), metadata={"ss_base_model_version": version})
        write_sd_version(path)
        sidecar = path.with_suffix(".json")
        assert (json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else None) == expected


class _CachingHost:
    """A standalone host that, like Forge, would keep applying a file it applied before under the same name."""

    caches_lora_files = True

    def __init__(self, host):
        self._host = host

    def __getattr__(self, name):
        return getattr(self._host, name)


def test_overwriting_where_forge_caches_files_saves_under_a_new_name(lora_job):
    job, host = lora_job("sd1", train_iterations="1", save_overwrite="true")
    first = run_job(job, host)
    assert first.path.name == "t.safetensors"
    before = first.path.read_bytes()
    second = run_job(job, _CachingHost(host))
    assert second.path.name == "t_2.safetensors"
    assert "Saved as t_2.safetensors, not over t.safetensors" in second.message
    assert first.path.read_bytes() == before  # the file Forge may have cached is untouched
    assert load_file(str(second.path)).keys() == load_file(str(first.path)).keys()
    (host.lora_dir / "t_2.safetensors").rename(host.lora_dir / "t_3.safetensors")
    (host.lora_dir / "t_2.safetensors").write_bytes(b"")  # any file of the name is taken, whatever it holds
    from trainer.engine.types import Output
    from trainer.modes.registry import mode_class
    from trainer.runner import uncached_output

    base = Output(directory=host.lora_dir, name="t", overwrite=True)
    assert uncached_output(base, mode_class(job.mode)(job).passes())[0].name == "t_4"
    assert uncached_output(dataclasses.replace(base, overwrite=False), [])[0].name == "t"  # refused later instead


def test_clip_g_round_trips_from_forges_hf_spelling(demo_models):
    """A CLIP-G built in HF spelling from the checkpoint (as Forge converts it) gives back the file's OpenCLIP
    tensors, q/k/v fused again and the projection transposed back."""
    from trainer.host import forge_model
    from trainer.models.checkpoint import open_state_dict
    from trainer.models.components import build_text_encoder
    from trainer.models.family import SDXL

    with open_state_dict(demo_models["sdxl"]) as sd:
        tower = build_text_encoder(sd, SDXL.text_encoders[1])
        expected = {k: sd[k] for k in sd.keys() if k.startswith(forge_model.SDXL_TEXT_G)}
    entries = forge_model._open_clip_entries(tower, forge_model.SDXL_TEXT_G)
    got = {}
    for e in entries:
        t = torch.cat(e.parts) if len(e.parts) > 1 else e.parts[0]
        got[e.key] = t.T if e.transpose else t
        assert e.shape == tuple(got[e.key].shape)
    # the trainer's tower has no last block (SDXL conditions on the penultimate one) and no logit_scale
    kept = {k: v for k, v in expected.items() if k in got}
    missing = sorted(set(expected) - set(got))
    assert all(".resblocks.1." in k or k.endswith("logit_scale") for k in missing), missing
    assert kept.keys() == got.keys()
    for key, value in kept.items():
        assert torch.equal(got[key].to(value.dtype), value), key


def test_training_tensors_copy_out_of_inference_mode_and_adopt_exact_copies(monkeypatch):
    from trainer.host import forge_model

    with torch.inference_mode():
        unet = torch.nn.Linear(4, 4)
        vae = torch.nn.Conv2d(3, 3, 1)
    assert unet.weight.is_inference()
    clip = types.SimpleNamespace(cond_stage_model={})
    sd_model = types.SimpleNamespace(forge_objects=types.SimpleNamespace(
        unet=types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=unet)),
        vae=types.SimpleNamespace(first_stage_model=vae), clip=clip), is_sdxl=False)
    monkeypatch.setattr(forge_model, "text_towers", lambda m: {"clip_l": torch.nn.Module()})  # no text tower here
    before = unet.weight.detach().clone()
    copied = forge_model.training_tensors(sd_model, torch.device("cpu"),
                                          {"unet": torch.float32, "vae": torch.float16, "text": None})
    weight = copied.tensors["model.diffusion_model.weight"]
    assert not weight.is_inference() and torch.equal(weight, before)
    assert unet.weight.data_ptr() == weight.data_ptr()  # adopted: Forge computes with the trainer's tensor now
    assert not unet.weight.is_inference()
    vae_weight = copied.tensors["first_stage_model.weight"]
    assert vae_weight.dtype == torch.float16 and vae.weight.is_inference()  # cast: a copy, Forge keeps its own
    assert copied.adopted_bytes == 4 * 4 * 4 + 4 * 4
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        x = torch.randn(2, 3, 1, 1, requires_grad=True)
        vae(x).sum().backward()
    x = torch.randn(2, 4, requires_grad=True)
    unet(x).sum().backward()  # the adopted weight trains through
    assert x.grad is not None
