"""Resumable runs (`save_state`, `resume`, engine/state.py): a run stopped with Stop-and-Save and resumed ends with
the weights of the run that never stopped — bit for bit on the CPU in fp32, one thread (several threads may split
a sum differently from run to run: conftest.one_thread) — and a state that cannot be continued exactly is refused in
one line before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from trainer.__main__ import main
from trainer.engine import state as state_module
from trainer.engine.control import JobControl
from trainer.errors import UserError
from trainer.host.standalone import StandaloneHost
from trainer.jobs.logs import read_log
from trainer.modes.lora import LoRAMode
from trainer.runner import run_job
from trainer.settings import apply_overrides, job_from_json

pytestmark = pytest.mark.filterwarnings("ignore")
PRESETS = Path(__file__).parent.parent / "presets"
COMMON = {"save_lora_name": "r", "train_seed": "0", "image_size(height, width)": "64", "network_rank": "4",
          "network_alpha": "2", "train_learning_rate": "1e-3", "save_precision": "fp32", "save_as_json": "false",
          "train_model_precision": "fp32", "logging_save_csv": "true"}


@pytest.fixture(scope="module")
def world(demo_models, sample_images, tmp_path_factory):
    """make(mode, out, **settings) → (Job, host writing into `out`), and a run(...) that stops after `stop_at` step
    events (Stop and Save) and logs into its own folder. One thread: the comparisons are bit for bit."""
    root = tmp_path_factory.mktemp("resume")
    pair = []
    for name, radius in (("o.png", 10), ("t.png", 22)):
        img = Image.new("RGB", (64, 64), (30, 60, 160))
        ImageDraw.Draw(img).ellipse((32 - radius, 32 - radius, 32 + radius, 32 + radius), fill=(200, 40, 40))
        img.save(root / name)
        pair.append(str(root / name))
    extra = {"LoRA": {"image_min_length": "64", "image_buckets_step": "64", "lora_data_directory": str(sample_images),
                      "train_batch_size": "2"}}  # 4 images, 2 per batch: the data order matters

    def make(mode, out="out", second=None, model="sd1", **settings):
        data = json.loads((PRESETS / f"{mode}.json").read_text(encoding="utf-8"))
        values = {**COMMON, **extra.get(mode, {}), **settings}
        data = apply_overrides(data, [f"{k}={v}" for k, v in values.items()])
        data.update({"model": str(demo_models[model]), "original prompt": "a red circle", "target prompt": "",
                     "original image": pair[0], "target image": pair[1]})
        if second is not None:
            data["2nd pass"] = {**data, **second}
        job, _ = job_from_json(data)
        return job, StandaloneHost(lora_dir=root / out)

    def run(job, host, stop_at=None, logs="logs"):
        control = JobControl()
        events = []

        def on_event(event):
            events.append(event)
            if stop_at is not None and sum(e["kind"] == "step" for e in events) == stop_at:
                control.request_stop(save=True)

        control.on_event = on_event
        return run_job(job, host, control, logs_dir=root / logs), events

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make, run, root
    torch.set_num_threads(threads)


def same_tensors(a: Path, b: Path) -> float:
    """The largest |difference| between two LoRA files with the same keys."""
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    return max((ta[k].double() - tb[k].double()).abs().max().item() for k in ta)


@pytest.fixture(scope="module")
def lora_runs(world):
    """LoRA, 10 steps: straight; stopped at 5 with a state; resumed from it under the same name."""
    make, run, root = world
    straight, _ = run(*make("LoRA", save_lora_name="straight", train_iterations="10"), logs="logs-straight")
    stopped, _ = run(*make("LoRA", train_iterations="10", save_state="true"), stop_at=5, logs="logs-stopped")
    state = root / "out" / "r_5steps-state"
    resumed, events = run(*make("LoRA", train_iterations="10", resume=str(state)), logs="logs-resumed")
    return straight, stopped, resumed, events, state


def test_a_lora_run_stopped_and_resumed_ends_with_the_weights_of_the_straight_run(lora_runs):
    straight, stopped, resumed, events, _ = lora_runs
    assert stopped.status == "stopped_saved" and stopped.steps == 5
    assert resumed.status == "finished" and resumed.steps == 10
    assert [e["step"] for e in events if e["kind"] == "step"] == [6, 7, 8, 9, 10]  # continues at k + 1
    assert same_tensors(straight.path, resumed.path) == 0.0  # fp32 on the CPU, one thread: exact
    assert resumed.losses == straight.losses


def test_the_state_folder_holds_the_whole_training_state(lora_runs, world):
    _, stopped, _, _, state = lora_runs
    assert stopped.path == state.parent / "r_5steps.safetensors"  # the folder sits beside its LoRA
    names = sorted(p.name for p in state.iterdir())
    assert names == ["job.json", "log.csv", "network.safetensors", "state.json", "training.pt"]
    manifest = json.loads((state / "state.json").read_text(encoding="utf-8"))
    assert (manifest["step"], manifest["pass"], manifest["seed"], manifest["device"]) == (5, 1, 0, "cpu")
    assert manifest["models"]["model"]["name"] == "demo-sd1.safetensors" and manifest["models"]["vae"] is None
    assert sorted(manifest["files"]) == ["job.json", "log.csv", "network.safetensors", "training.pt"]
    assert len(manifest["losses"]) == 5
    job = json.loads((state / "job.json").read_text(encoding="utf-8"))
    assert job["mode"] == "LoRA" and job["train_learning_rate"] == "1e-3" and job["resume"] == str(state)
    network = load_file(str(state / "network.safetensors"))
    assert network and all(t.dtype == torch.float32 for t in network.values())  # full precision, not save_precision
    training = torch.load(state / "training.pt", weights_only=True)
    assert set(training) == {"optimizer", "scheduler", "scaler", "rng", "mode"}
    assert set(training["rng"]) == {"generator", "python", "torch"}  # "cuda" too on a CUDA device
    assert training["mode"]["batches"]["bucket_sizes"] == [4] and training["optimizer"]["state"]
    assert not [p for p in state.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_the_csv_log_of_the_resumed_run_continues_the_stopped_one(lora_runs, world):
    root = world[2]
    [straight] = (root / "logs-straight").rglob("*.csv")
    [stopped] = (root / "logs-stopped").rglob("*.csv")
    [resumed] = (root / "logs-resumed").rglob("*.csv")
    assert list(read_log(stopped)["Step"]) == [1, 2, 3, 4, 5]
    frame, expected = read_log(resumed), read_log(straight)
    assert list(frame["Step"]) == list(range(1, 11))  # the state's rows 1…5, then the new rows 6…10
    assert frame.equals(expected)  # the loss EMA and the schedule continue too


def test_ileco_with_a_drawn_seed_resumes_to_the_weights_of_the_straight_run(world):
    """A prompt mode: iLECO's latents and timesteps come from the generator of the seed the run drew (-1)."""
    make, run, root = world
    run(*make("iLECO", out="ileco", train_iterations="6", train_seed="-1", save_state="true"), stop_at=3)
    state = root / "ileco" / "r_3steps-state"
    seed = json.loads((state / "state.json").read_text(encoding="utf-8"))["seed"]
    # the run straight, with the seed the stopped run drew
    straight, _ = run(*make("iLECO", out="ileco", save_lora_name="straight", train_iterations="6",
                            train_seed=str(seed)))
    resumed, _ = run(*make("iLECO", out="ileco", train_iterations="6", train_seed="-1", resume=str(state)))
    assert resumed.steps == 6 and same_tensors(straight.path, resumed.path) == 0.0


def test_the_evaluation_loss_of_a_resumed_run_starts_from_the_state(world):
    """The resumed run measures its starting evaluation loss on the restored network: the stopped run's last value."""
    make, run, root = world
    stopped, _ = run(*make("iLECO", out="evalres", train_iterations="6", eval_every_n_steps="3", save_state="true"),
                     stop_at=3)
    (step, at_stop), = stopped.extras["eval_history"]
    resumed, _ = run(*make("iLECO", out="evalres", train_iterations="6", eval_every_n_steps="3",
                           resume=str(root / "evalres" / "r_3steps-state")))
    assert step == 3 and resumed.extras["eval_start"] == at_stop
    assert [s for s, _ in resumed.extras["eval_history"]] == [6]
    assert f"({at_stop:.6f} at step 3, where it resumed)" in resumed.message


def test_difference_resumes_inside_its_second_pass(world):
    """The state of pass 2 carries the copier of pass 1 (kept1.safetensors), which is loaded instead of trained."""
    make, run, root = world
    two = {"use_2nd_pass_settings": "true"}
    straight, _ = run(*make("Difference", out="diff", second={"train_iterations": "4"}, save_lora_name="straight",
                            train_iterations="3", **two))
    run(*make("Difference", out="diff", second={"train_iterations": "4"}, train_iterations="3", save_state="true",
              **two), stop_at=5)  # pass 1's three steps, then two of pass 2
    state = root / "diff" / "r_2steps-state"
    assert json.loads((state / "state.json").read_text(encoding="utf-8"))["kept"] == ["kept1.safetensors"]
    resumed, events = run(*make("Difference", out="diff", second={"train_iterations": "4"}, train_iterations="3",
                                resume=str(state), **two))
    assert [e["step"] for e in events if e["kind"] == "step"] == [3, 4]
    assert same_tensors(straight.path, resumed.path) == 0.0


# -- refusals: one line each, before any model loads ---------------------------------------------------------------
@pytest.fixture
def refused(world, lora_runs, monkeypatch):
    """settings → the one-line UserError of resuming the LoRA state with them; loading a model fails the test."""
    make, _, _ = world
    monkeypatch.setattr(StandaloneHost, "load_components", lambda *a, **k: pytest.fail("a model was loaded"))

    def attempt(state=None, mode="LoRA", **settings):
        values = {"train_iterations": "10", "resume": str(state or lora_runs[4]), **settings}
        with pytest.raises(UserError) as err:
            run_job(*make(mode, **values))
        message = str(err.value)
        assert "\n" not in message and message.startswith("resume: ")
        return message

    return attempt


def test_a_changed_learning_rate_is_refused_naming_it(refused):
    message = refused(train_learning_rate="2e-3")
    assert message == ("resume: r_5steps-state: train_learning_rate is 1e-3 in the state and 2e-3 here; resume with "
                       "the state's settings or start a new run")


@pytest.mark.parametrize("settings, named", [
    ({"train_lr_scheduler": "linear"}, "train_lr_scheduler is cosine in the state and linear here"),
    ({"train_seed": "7"}, "train_seed is 0 in the state and 7 here"),
    ({"network_blocks(BASE = TextEncoder)": "IN01"}, "network_blocks is"),
    ({"train_iterations": "20"}, "train_iterations is 10 in the state and 20 here"),
    ({"train_iterations": "5"}, "is at step 5, and train_iterations is 5 here: nothing is left to train"),
    ({"mode": "iLECO"}, "is the state of a LoRA run, and this job is iLECO"),
    ({"model": "sd2"}, "was trained on the model demo-sd1.safetensors"),
])
def test_a_state_that_cannot_be_continued_exactly_is_refused(refused, settings, named):
    assert named in refused(**settings)


def test_settings_that_change_no_maths_may_differ(lora_runs, world):
    """What is saved and logged, previews, the evaluation loss: checked, not refused (nothing is trained here)."""
    make, _, _ = world
    job, host = make("LoRA", train_iterations="10", resume=str(lora_runs[4]), save_lora_name="other",
                     save_per_steps="3", save_precision="fp16", logging_save_csv="false", eval_every_n_steps="2",
                     sample_every_n_steps="4", save_state="true", network_strength="0.5", train_seed="-1")
    passes, loaded = state_module.continue_job(job, host, LoRAMode(job).passes())
    assert loaded.folder == lora_runs[4] and [p.start for p in passes] == [5]


@pytest.mark.parametrize("damage, named", [
    (lambda s: (s / "state.json").unlink(), "is not a training state, or not a whole one (no state.json)"),
    (lambda s: (s / "training.pt").unlink(), "is incomplete: training.pt is missing"),
    (lambda s: (s / "state.json").write_text("{\"format\": 1", encoding="utf-8"), "is damaged: state.json"),
    (lambda s: _flip_a_byte(s / "network.safetensors"), "is damaged: network.safetensors does not match"),
    (lambda s: _edit_manifest(s, step="five"), "is damaged: state.json lacks or garbles"),
])
def test_a_partial_or_corrupt_state_is_refused(refused, lora_runs, tmp_path, damage, named):
    import shutil

    copy = tmp_path / "r_5steps-state"
    shutil.copytree(lora_runs[4], copy)
    damage(copy)
    assert named in refused(state=copy)


def test_a_missing_folder_is_refused(refused, tmp_path):
    assert "is not a folder" in refused(state=tmp_path / "nowhere")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    (folder / "state.json").write_text(json.dumps({**manifest, **changes}), encoding="utf-8")


def test_the_cli_resumes_with_the_settings_the_state_was_started_with(lora_runs, capsys, monkeypatch):
    """`train --resume DIR` without a config reads DIR/job.json (shown here by the refusal of a changed rate)."""
    monkeypatch.setattr(StandaloneHost, "load_components", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["train", "--resume", str(lora_runs[4]), "--set", "train_learning_rate=5e-4"]) == 2
    assert "train_learning_rate is 1e-3 in the state and 5e-4 here" in capsys.readouterr().err
    assert main(["train", "--resume", str(lora_runs[4].parent / "nothing")]) == 2
    assert "is not a training state (no job.json)" in capsys.readouterr().err
