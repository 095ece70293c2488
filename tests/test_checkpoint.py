"""Reading files safely, and refusing the wrong ones with one clear line that names the file."""

from __future__ import annotations

import pathlib
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.errors import CheckpointError
from trainer.models.checkpoint import open_state_dict, write_safetensors_atomic
from trainer.models.components import load_components

pytestmark = pytest.mark.filterwarnings("ignore")


class _Payload:
    """Unpickling this would create `marker` — proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.parametrize("writer", ["torch_zip", "torch_legacy", "raw_pickle"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"x": torch.zeros(1), "evil": _Payload(marker)}}
    if writer == "torch_zip":
        torch.save(payload, path)
    elif writer == "torch_legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError) as err:
        open_state_dict(path)
    assert str(path) in str(err.value)
    assert not marker.exists(), "the pickle payload ran"


def _sd1_tensors(demo_models):
    return load_file(str(demo_models["sd1"]))


@pytest.mark.parametrize("wrapped", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_ckpt_with_or_without_state_dict_wrapper(tmp_path, demo_models, wrapped, dtype):
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in _sd1_tensors(demo_models).items()}
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": tensors, "global_step": 7} if wrapped else tensors, path)
    path.with_suffix(".yaml").write_bytes(demo_models["sd1"].with_suffix(".yaml").read_bytes())
    ours = load_components(path)
    reference = load_components(demo_models["sd1"])
    if dtype == torch.bfloat16:  # bf16 → fp32 is exact, but fp16 → bf16 rounds: compare against the rounded file
        return
    for a, b in zip(ours.unet.state_dict().values(), reference.unet.state_dict().values()):
        assert torch.equal(a, b)


def test_safetensors_bf16_and_fp32_files_load(tmp_path, demo_models):
    for dtype in (torch.bfloat16, torch.float32):
        tensors = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in _sd1_tensors(demo_models).items()}
        path = tmp_path / f"model-{dtype}.safetensors".replace("torch.", "")
        save_file(tensors, str(path))
        path.with_suffix(".yaml").write_bytes(demo_models["sd1"].with_suffix(".yaml").read_bytes())
        c = load_components(path)
        assert next(c.unet.parameters()).dtype == torch.float32


def test_file_type_is_read_from_content_not_extension(tmp_path, demo_models):
    path = tmp_path / "misnamed.ckpt"
    path.write_bytes(demo_models["sd1"].read_bytes())
    with open_state_dict(path) as sd:
        assert type(sd).__name__ == "SafetensorsStateDict"


def _refiner(demo_models, tmp_path):
    tensors = load_file(str(demo_models["sdxl"]))
    out = {}
    for k, v in tensors.items():
        if k.startswith("conditioner.embedders.0."):
            continue
        out[k.replace("conditioner.embedders.1.", "conditioner.embedders.0.")] = v
    path = tmp_path / "refiner.safetensors"
    save_file(out, str(path))
    return path


def _inpaint(demo_models, tmp_path):
    tensors = load_file(str(demo_models["sd1"]))
    w = tensors["model.diffusion_model.input_blocks.0.0.weight"]
    tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.cat([w, w, w[:, :1]], dim=1)
    path = tmp_path / "inpaint.safetensors"
    save_file(tensors, str(path))
    return path


def _lora(demo_models, tmp_path):
    path = tmp_path / "some_lora.safetensors"
    save_file({
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(32, 4),
        "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.tensor(4.0),
    }, str(path))
    return path


def _empty(demo_models, tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    return path


def _truncated(demo_models, tmp_path):
    data = demo_models["sd1"].read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_header(demo_models, tmp_path):
    data = demo_models["sd1"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:4000])
    return path


def _truncated_ckpt(demo_models, tmp_path):
    full = tmp_path / "full.ckpt"
    torch.save(_sd1_tensors(demo_models), full)
    data = full.read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(demo_models, tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights\n" * 20, encoding="utf-8")
    return path


def _vae_only(demo_models, tmp_path):
    tensors = {k: v for k, v in load_file(str(demo_models["sd1"])).items() if k.startswith("first_stage_model.")}
    path = tmp_path / "vae.safetensors"
    save_file(tensors, str(path))
    return path


def _missing(demo_models, tmp_path):
    return tmp_path / "does-not-exist.safetensors"


BAD_FILES = {
    "refiner": (_refiner, "SDXL refiner"),
    "inpaint": (_inpaint, "inpainting"),
    "lora": (_lora, "LoRA"),
    "empty": (_empty, "empty"),
    "truncated": (_truncated, "truncated"),
    "truncated_header": (_truncated_header, "truncated"),
    "truncated_ckpt": (_truncated_ckpt, "truncated"),
    "text": (_text, "not a model file"),
    "vae_only": (_vae_only, "VAE"),
    "missing": (_missing, "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_give_one_clear_line(case, demo_models, tmp_path):
    make, reason = BAD_FILES[case]
    path = make(demo_models, tmp_path)
    with pytest.raises(CheckpointError) as err:
        load_components(path)
    message = str(err.value)
    assert str(path) in message and reason in message
    assert "\n" not in message


def test_cli_prints_one_line_and_no_traceback(demo_models, tmp_path):
    path = _inpaint(demo_models, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "trainer", "info", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and "inpainting" in proc.stderr


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.safetensors"
    with pytest.raises(Exception):
        write_safetensors_atomic({"a": torch.zeros(2), "b": "not a tensor"}, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out.safetensors"
    write_safetensors_atomic({"a": torch.ones(2)}, target, metadata={"k": "v"})
    with open_state_dict(target) as sd:
        assert torch.equal(sd["a"], torch.ones(2)) and sd.metadata == {"k": "v"}
