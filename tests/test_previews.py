"""Sample previews (trainer/sampling) on the demo models: the grids a run writes (count, size, text chunks), that
they never change the training, that multiplier 0 is the base model exactly, and each mode's default sweep.

Every run renders at 64 px with 2 sampler steps; the demo models have random weights, so the pictures are noise,
but deterministic noise, which is what these tests compare.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from trainer.errors import UserError
from trainer.modes.registry import MODES
from trainer.runner import run_job
from trainer.sampling.previews import DEFAULT_MULTIPLIERS, Previews, sample_points, sample_prompts

pytestmark = pytest.mark.filterwarnings("ignore")
PRESETS = Path(__file__).parent.parent / "presets"
SMALL = {"save_lora_name": "p", "train_seed": "0", "image_size(height, width)": "64", "image_min_length": "64",
         "image_buckets_step": "64", "train_batch_size": "1", "network_rank": "4", "network_alpha": "2",
         "train_learning_rate": "1e-3", "save_as_json": "false", "sample_size": "64", "sample_steps": "2"}


def make_job(demo_models, lora_dir: Path, preset: str, family: str = "sd1", **overrides):
    from trainer.host.standalone import StandaloneHost
    from trainer.settings import apply_overrides, job_from_json

    data = json.loads((PRESETS / f"{preset}.json").read_text(encoding="utf-8"))
    data = apply_overrides(data, [f"{k}={v}" for k, v in {**SMALL, **overrides}.items()])
    data["model"] = str(demo_models[family])
    job, unknown = job_from_json(data)
    assert not unknown
    return job, StandaloneHost(lora_dir=lora_dir)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else Image.open(image).convert("RGB"))


def cells(image: np.ndarray, size: int = 64) -> list[list[np.ndarray]]:
    return [[image[r:r + size, c:c + size] for c in range(0, image.shape[1], size)]
            for r in range(0, image.shape[0], size)]


def text_chunks(path) -> dict:
    with Image.open(path) as image:
        return {key: json.loads(value) for key, value in image.text.items()}


class Spy:
    """Wraps Previews.after_step: checks it leaves torch's global generator alone, and at each sample point
    renders the grid again and once more with the network detached (the base model)."""

    def __init__(self, monkeypatch):
        self.points = []
        real = Previews.after_step

        def after_step(hook, ctx, step):
            before = torch.get_rng_state()
            out = real(hook, ctx, step)
            assert torch.equal(before, torch.get_rng_state()), "a preview drew from torch's global generator"
            if out:
                again = hook.images(ctx)
                ctx.network.detach()
                try:
                    base = hook.images(ctx)
                finally:
                    ctx.network.attach()
                self.points.append({"step": step, "path": out["samples"][0], "again": again, "base": base,
                                    "multipliers": hook.multipliers})
            return out

        monkeypatch.setattr(Previews, "after_step", after_step)


@pytest.fixture(scope="module")
def single_thread():
    """Bit-exact comparisons between runs (see conftest.one_thread), for the module's runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lora_run(demo_models, sample_images, tmp_path_factory, single_thread):
    """20 LoRA steps with a preview every 10 at multipliers 0 and 1 (BASE trains: the text encoder too)."""
    monkeypatch = pytest.MonkeyPatch()
    spy = Spy(monkeypatch)
    out = tmp_path_factory.mktemp("previews")
    job, host = make_job(demo_models, out, "LoRA", lora_data_directory=str(sample_images), train_iterations="20",
                         sample_every_n_steps="10", sample_multipliers="0, 1")
    try:
        result = run_job(job, host)
    finally:
        monkeypatch.undo()
    return result, spy.points, out


def test_a_lora_run_writes_a_grid_every_10_steps(lora_run):
    result, points, out = lora_run
    folder = out / "p_samples"
    expected = [folder / "p_000010.png", folder / "p_000020.png"]
    assert sorted(folder.iterdir()) == expected
    assert result.extras["samples"] == [str(p) for p in expected]
    assert f"Sample previews: {folder} (2 grids)" in result.message
    for step, path in zip((10, 20), expected):
        assert Image.open(path).size == (2 * 64, 1 * 64)  # columns = multipliers, rows = prompts
        info = text_chunks(path)
        assert info["prompts"] == ["a green square on a yellow background"]  # the first image's caption
        assert info["step"] == step and info["multipliers"] == [0.0, 1.0] and info["lora"] == "p"
        assert (info["sampler"], info["steps"], info["cfg"], info["seed"], info["size"]) == ("euler", 2, 7.0, 0,
                                                                                              [64, 64])


def test_multiplier_0_renders_the_base_model_exactly(lora_run):
    _, points, _ = lora_run
    for point in points:
        grid = cells(pixels(point["path"]))
        at_zero, at_one = grid[0]
        assert np.array_equal(at_zero, pixels(point["base"][0][0])), "multiplier 0 is not the detached base model"
        assert not np.array_equal(at_zero, at_one), "multiplier 1 renders like 0: the LoRA is not applied"


def test_the_same_seed_renders_the_same_pixels(lora_run):
    _, points, _ = lora_run
    for point in points:
        again = np.concatenate([pixels(image) for image in point["again"][0]], axis=1)
        assert np.array_equal(pixels(point["path"]), again)


def test_previews_do_not_change_the_trained_weights(lora_run, demo_models, sample_images, tmp_path):
    result, _, _ = lora_run
    job, host = make_job(demo_models, tmp_path, "LoRA", lora_data_directory=str(sample_images), train_iterations="20")
    plain = run_job(job, host)
    assert "samples" not in plain.extras and not (tmp_path / "p_samples").exists()
    with_previews, without = load_file(result.path), load_file(plain.path)
    assert with_previews.keys() == without.keys()
    assert all(torch.equal(with_previews[k], without[k]) for k in without)


def test_only_at_the_end_and_not_over_an_existing_grid(demo_models, sample_images, tmp_path):
    job, host = make_job(demo_models, tmp_path, "LoRA", lora_data_directory=str(sample_images), train_iterations="3",
                         sample_every_n_steps="0", sample_prompts="a red circle\nとても青い空")
    result = run_job(job, host)
    assert result.extras["samples"] == [str(tmp_path / "p_samples" / "p_000003.png")]
    path = Path(result.extras["samples"][0])
    assert Image.open(path).size == (64, 2 * 64)  # LoRA's default multiplier 1; a row per prompt
    assert text_chunks(path)["prompts"] == ["a red circle", "とても青い空"]
    (tmp_path / "p.safetensors").unlink()  # the LoRA is gone, its preview stays: not written over unasked
    with pytest.raises(UserError, match="p_000003.png already exists"):
        run_job(job, host)


def test_the_cli_lists_the_grids(demo_models, sample_images, tmp_path, capsys):
    from trainer.__main__ import main

    config = tmp_path / "job.json"
    config.write_text((PRESETS / "LoRA.json").read_text(encoding="utf-8"), encoding="utf-8")
    settings = {**SMALL, "lora_data_directory": str(sample_images), "train_iterations": "2",
                "sample_every_n_steps": "1"}
    assert main(["train", str(config), "--model", str(demo_models["sd1"]), "--output-dir", str(tmp_path / "out"),
                 *(f"--set={k}={v}" for k, v in settings.items())]) == 0
    lines = capsys.readouterr().out.splitlines()
    folder = tmp_path / "out" / "p_samples"
    assert f"Sample previews: {folder} (2 grids)" in lines
    assert lines[-2:] == [str(folder / "p_000001.png"), str(folder / "p_000002.png")]

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    paths = []
    for name, radius in (("o.png", 12), ("t.png", 24)):
        image = Image.new("RGB", (64, 64), (30, 60, 160))
        ImageDraw.Draw(image).ellipse([32 - radius, 32 - radius, 32 + radius, 32 + radius], fill=(200, 40, 40))
        image.save(folder / name)
        paths.append(str(folder / name))
    return paths


def test_ileco_sweeps_0_and_1_through_the_trained_text_encoder(demo_models, tmp_path, monkeypatch, single_thread):
    spy = Spy(monkeypatch)
    job, host = make_job(demo_models, tmp_path, "iLECO", original_prompt="a red circle", target_prompt="a dog",
                         train_iterations="2", sample_every_n_steps="0")
    result = run_job(job, host)
    (path,) = result.extras["samples"]
    assert Image.open(path).size == (2 * 64, 2 * 64)  # (0, 1) × the Original and Target Prompts
    assert text_chunks(path)["prompts"] == ["a red circle", "a dog"]
    grid = cells(pixels(path))
    for row in range(2):
        assert np.array_equal(grid[row][0], pixels(spy.points[0]["base"][row][0]))
        assert not np.array_equal(grid[row][0], grid[row][1])


def test_addift_sweeps_minus_1_0_1(demo_models, tmp_path, pair):
    job, host = make_job(demo_models, tmp_path, "ADDifT_Action_SD1.5", original_image=pair[0], target_image=pair[1],
                         train_iterations="2", sample_every_n_steps="0", **{"train_learning_rate": "1e-2"})
    result = run_job(job, host)
    (path,) = result.extras["samples"]
    assert Image.open(path).size == (3 * 64, 64)
    assert text_chunks(path)["multipliers"] == [-1.0, 0.0, 1.0]


def test_difference_previews_its_second_pass_with_the_copier_held_off(demo_models, tmp_path, pair, monkeypatch,
                                                                      single_thread):
    spy = Spy(monkeypatch)
    job, host = make_job(demo_models, tmp_path, "Difference", original_image=pair[0], target_image=pair[1],
                         train_iterations="2", sample_every_n_steps="1", sample_multipliers="0, 1")
    result = run_job(job, host)
    assert sorted(p.name for p in (tmp_path / "p_samples").iterdir()) == ["p_000001.png", "p_000002.png"]
    assert len(result.extras["samples"]) == 2 and not (tmp_path / "p_copy_samples").exists()
    at_zero = cells(pixels(result.extras["samples"][-1]))[0][0]
    assert np.array_equal(at_zero, pixels(spy.points[-1]["base"][0][0]))  # the copier is off at multiplier 0 too


def test_sdxl_previews(demo_models, tmp_path, sample_images):
    job, host = make_job(demo_models, tmp_path, "LoRA", family="sdxl", lora_data_directory=str(sample_images),
                         train_iterations="1", sample_every_n_steps="0", sample_sampler="ddim")
    result = run_job(job, host)
    (path,) = result.extras["samples"]
    assert Image.open(path).size == (64, 64) and text_chunks(path)["sampler"] == "ddim"


def test_sample_points():
    assert sample_points(20, 10) == {10, 20}
    assert sample_points(25, 10) == {10, 20, 25}  # the last step always
    assert sample_points(20, 0) == {20}
    assert sample_points(5, 10) == {5}


def test_every_mode_has_default_multipliers_and_the_samplers_are_the_settings_choices():
    from trainer.sampling.samplers import SAMPLERS
    from trainer.settings import BY_KEY

    assert set(DEFAULT_MULTIPLIERS) == set(MODES)
    assert BY_KEY["sample_sampler"].choices == tuple(SAMPLERS)


def test_default_prompts_are_the_jobs_own(sample_images):
    from trainer.settings import Job, validate

    def job(mode, **fields):
        return Job(mode, validate({"lora_data_directory": str(sample_images)}, mode), **fields)

    assert sample_prompts(job("iLECO", original_prompt="cat ", target_prompt="")) == ["cat"]
    assert sample_prompts(job("ADDifT", original_prompt="a", target_prompt="a")) == ["a"]
    assert sample_prompts(job("Difference")) == [""]
    assert sample_prompts(job("LoRA")) == ["a green square on a yellow background"]  # the first image's
