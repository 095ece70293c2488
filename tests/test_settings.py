"""The settings table, validation messages, JSON import/export in upstream's format, presets, --set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.errors import UserError
from trainer.settings import (
    BY_NAME, OPTIMIZERS, SCHEDULERS, SEPARATOR, TABLE, UPSTREAM, apply_overrides, job_from_json, lookup, parse_kv, validate,
)

PRESETS = sorted((Path(__file__).parent.parent / "presets").glob("*.json"))


def test_table_has_upstreams_59_settings():
    assert len(UPSTREAM) == 59 and len(BY_NAME) == len(TABLE)
    ours = [s.name for s in TABLE if not s.upstream]
    assert ours[0] == "diff_random_timesteps_in_span"
    # issue 16's settings and issue 14's latent cache, by the names kohya sd-scripts users know
    assert set(ours[1:]) == {
        "sample_prompts", "sample_every_n_steps", "sample_multipliers", "sample_steps", "sample_cfg", "sample_seed",
        "sample_size", "sample_sampler", "save_state", "resume", "eval_every_n_steps", "noise_offset",
        "multires_noise_iterations", "multires_noise_discount", "debiased_estimation_loss", "caption_dropout_rate",
        "shuffle_caption", "keep_tokens", "cache_latents_to_disk"}
    for name in ("image_size(height, width)", "network_blocks(BASE = TextEncoder)", "train_fixed_timsteps_in_batch",
                 "train_VAE_precision", "use_2nd_pass_settings"):
        assert name in BY_NAME
    assert len(OPTIMIZERS) == 29 and OPTIMIZERS.count(SEPARATOR) == 4
    assert len(SCHEDULERS) == 15
    assert lookup("image_size").name == "image_size(height, width)"
    assert BY_NAME["image_size(height, width)"].label == "image size(height, width)"
    assert {s.column for s in TABLE} == {"req1", "req2", "req3", "req_row", "opt1", "opt2", "opt3",
                                         "ext1", "ext2", "ext3"}
    assert all(s.column.startswith("ext") for s in TABLE if not s.upstream and s.name != ours[0])


def test_defaults_validate_to_typed_values():
    s = validate()
    assert s.network_rank == 16 and s.network_alpha == 8.0 and s.train_learning_rate == 1e-4
    assert s.image_size == (512, 512) and s.train_textencoder_learning_rate is None
    assert s.train_optimizer_settings == {} and len(s.network_blocks) == 26
    with pytest.raises(AttributeError):
        s.network_rank = 3


@pytest.mark.parametrize("name,value,message", [
    ("network_rank", "abc", "network_rank: 'abc' is not a whole number"),
    ("train_learning_rate", "-1", "train_learning_rate: '-1' must be greater than 0"),
    ("train_iterations", "0", "train_iterations: '0' must be at least 1"),
    ("train_iterations", "2.5", "train_iterations: '2.5' is not a whole number"),
    ("train_optimizer", "Adamz", "train_optimizer: 'Adamz' is not one of AdamW, AdamW8bit"),
    ("train_optimizer", SEPARATOR, "is not one of"),
    ("train_lr_scheduler", "cosinus", "train_lr_scheduler: 'cosinus' is not one of"),
    ("image_size(height, width)", "512,abc", "is not \"height,width\""),
    ("image_size(height, width)", "500", "multiples of 8"),
    ("image_buckets_step", "0", "image_buckets_step: 0 is not a bucket step"),
    ("train_optimizer_settings", "weight_decay", "'weight_decay' is not key=value"),
    ("network_blocks(BASE = TextEncoder)", ["IN99"], "unknown block(s) ['IN99']"),
    ("save_overwrite", "maybe", "save_overwrite: 'maybe' is not true or false"),
    ("train_max_timesteps", "1001", "need 0 ≤ min < max ≤ 1000"),
    ("train_model_precision", "int8", "int8 is for DiT models"),
])
def test_bad_values_name_the_setting(name, value, message):
    with pytest.raises(UserError) as err:
        validate({name: value})
    assert message in str(err.value)


def test_parsing_helpers():
    assert parse_kv(BY_NAME["train_optimizer_settings"], "weight_decay=0.01; betas=(0.9,0.99)\nfoo=bar") == {
        "weight_decay": 0.01, "betas": (0.9, 0.99), "foo": "bar"}
    assert validate({"image_size(height, width)": "768,512"}).image_size == (768, 512)
    assert validate({"image_size(height, width)": 640}).image_size == (640, 640)
    assert validate({"train_optimizer": "adamw"}).train_optimizer == "AdamW"
    assert validate({"train_textencoder_learning_rate": "5e-5"}).train_textencoder_learning_rate == 5e-5
    assert validate({"network_rank": 32.0}).network_rank == 32


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_load_without_warning_and_round_trip(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    job, unknown = job_from_json(data, str(path))
    assert unknown == []
    exported = job.to_json()
    for key, value in data.items():
        if key in BY_NAME:
            assert exported[key] == value, key
    assert exported["mode"] == data["mode"]
    again, _ = job_from_json(json.loads(json.dumps(exported)))
    assert again.to_json() == exported
    assert again.settings.as_dict() == job.settings.as_dict()


def test_preset_values_match_upstream():
    load = {p.stem: job_from_json(json.loads(p.read_text(encoding="utf-8")))[0] for p in PRESETS}
    assert len(load) == 8
    lora = load["LoRA"].settings
    assert (lora.network_rank, lora.network_alpha, lora.train_iterations, lora.train_learning_rate) == (16, 8, 1000, 1e-4)
    assert load["iLECO"].mode == "iLECO" and load["iLECO"].settings.train_iterations == 300
    two = load["Difference_Use2ndPass"]
    assert two.second_pass is not None and two.second_pass.network_rank == 4 and two.settings.network_rank == 16
    assert load["Difference"].second_pass is None
    action = load["ADDifT_Action_SD1.5"].settings
    assert (action.train_optimizer, action.train_lr_scheduler, action.train_lr_scheduler_settings) == (
        "CAME", "cosine_annealing", {"eta_min": 1e-5})
    assert (action.train_min_timesteps, action.train_max_timesteps, action.train_seed) == (500, 1000, 1)
    assert "BASE" not in load["ADDifT_Action_XL"].settings.network_blocks
    style = load["ADDifT_Style_SD1.5"].settings
    assert style.network_strength == 5.0 and style.diff_revert_original_target
    assert load["ADDifT_Style_XL"].settings.train_snr_gamma == 1.0


def test_unknown_keys_are_reported_not_fatal():
    job, unknown = job_from_json({"mode": "LoRA", "logging_use_wandb": True, "te": "None"})
    assert unknown == ["logging_use_wandb"] and job.settings.network_rank == 16


def test_set_overrides_by_full_or_short_name():
    data = apply_overrides({}, ["image_size=768,512", "network_blocks(BASE = TextEncoder)=IN01, OUT11",
                                "train_learning_rate=3e-4", "original_prompt=a cat", "mode=iLECO"])
    job, _ = job_from_json(data)
    assert job.settings.image_size == (768, 512) and job.settings.network_blocks == ("IN01", "OUT11")
    assert job.original_prompt == "a cat" and job.mode == "iLECO"
    with pytest.raises(UserError, match="unknown setting 'no_such'"):
        apply_overrides({}, ["no_such=1"])
    with pytest.raises(UserError, match="expected key=value"):
        apply_overrides({}, ["train_seed"])


def test_unselected_model_and_vae_are_empty():
    job, _ = job_from_json({"model": "None", "vae": "None"})
    assert job.model == "" and job.vae == ""
