"""Data-parallel training on torch.distributed (gloo on the CPU) through accelerate's launcher: two processes at
per-device batch 1 train what one process trains at batch 2; only rank 0 writes; a failing process ends the launch
with its one line; prompt modes run alone."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from trainer.engine.distributed import SINGLE, World
from trainer.launch import free_port
from trainer.runner import run_job

ROOT = Path(__file__).resolve().parent.parent


def launch_cli(args, tmp_path, timeout=240, env=None):
    full_env = {**os.environ, "TRAINTRAIN_DATA_DIR": str(tmp_path / "data"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=full_env)


def write_config(job, path: Path) -> Path:
    path.write_text(json.dumps(job.to_json()), encoding="utf-8")
    return path


def csv_steps(folder: Path) -> list[int]:
    (log,) = folder.rglob("*.csv")
    rows = [r for r in csv.reader(log.read_text(encoding="utf-8").splitlines()) if r and r[0].isdigit()]
    return [int(r[0]) for r in rows]


def pair_folder(tmp_path: Path) -> Path:
    from PIL import Image, ImageDraw

    folder = tmp_path / "pairs"
    folder.mkdir()
    for name, radius in (("a", 10), ("b", 16)):
        for suffix, grow in (("", 0), ("_after", 8)):
            img = Image.new("RGB", (64, 64), (30, 60, 160))
            ImageDraw.Draw(img).ellipse([32 - radius - grow, 32 - radius, 32 + radius + grow, 32 + radius],
                                        fill=(200, 40, 40))
            img.save(folder / f"{name}{suffix}.png")
        (folder / f"{name}.txt").write_text(f"shape {name}", encoding="utf-8")
    return folder


CASES = {
    "LoRA": {},  # the preset trains BASE too: captions are encoded through the text-encoder LoRA every step
    "Multi-ADDifT": {"mode": "Multi-ADDifT", "diff_target_name": "_after", "diff_use_diff_mask": "true",
                     "lora_trigger_word": "sks"},
    "LoRA, gradient checkpointing": {"use_gradient_checkpointing": "true"},  # recomputed forwards inside DDP
}


@pytest.mark.parametrize("case", CASES)
def test_two_gloo_processes_train_what_one_process_trains_at_twice_the_batch(case, lora_job, tmp_path, one_thread):
    overrides = dict(CASES[case])
    mode = overrides.pop("mode", "LoRA")
    if mode != "LoRA":
        overrides["lora_data_directory"] = str(pair_folder(tmp_path))
    overrides.update(train_iterations="4", logging_save_csv="true", save_lora_name="dp")

    job, host = lora_job(train_batch_size="1", **overrides)
    job = dataclasses.replace(job, mode=mode)
    config = write_config(job, tmp_path / "job.json")
    proc = launch_cli(["train", str(config), "--devices", "cpu,cpu", "--output-dir", str(tmp_path / "dp")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single_job, single_host = lora_job(train_batch_size="2", **overrides)
    single_job = dataclasses.replace(single_job, mode=mode)
    single = run_job(single_job, single_host, logs_dir=tmp_path / "single-logs")

    parallel = tmp_path / "dp" / "dp.safetensors"
    assert sorted(p.name for p in parallel.parent.iterdir()) == sorted(p.name for p in single.path.parent.iterdir())
    ours, theirs = load_file(str(parallel)), load_file(str(single.path))
    assert ours.keys() == theirs.keys()
    # The all-reduced mean of two gradients and the mean over a batch of two differ in the last float bits, which
    # Adam's first steps (≈ lr·sign(g)) can turn into up to ~lr on a near-zero gradient. Measured: relative
    # difference of all weights 6e-6, largest single difference 6e-5 (lr 1e-3, 4 steps, fp16 file).
    difference = torch.cat([(ours[k].float() - theirs[k].float()).flatten() for k in theirs])
    weights = torch.cat([theirs[k].float().flatten() for k in theirs])
    assert (difference.norm() / weights.norm()).item() < 1e-4 and difference.abs().max().item() < 1e-3
    trained = [k for k in theirs if k.endswith("lora_up.weight") or k.endswith("hada_w2_a")]
    assert trained and all(ours[k].float().abs().sum() > 0 for k in trained)

    with safe_open(str(parallel), "pt") as f:
        meta = f.metadata()
    assert (meta["ss_batch_size_per_device"], meta["ss_total_batch_size"], meta["ss_num_processes"]) == ("1", "2", "2")
    assert csv_steps(tmp_path / "data" / "logs") == [1, 2, 3, 4]  # rank 0 logs, one row per step
    assert "process 1" not in proc.stdout


def test_a_two_process_state_resumes_on_two_processes_to_the_same_lora(lora_job, tmp_path):
    job, _ = lora_job(train_batch_size="1", train_iterations="4", save_per_steps="2", save_state="true",
                      save_lora_name="rs")
    config = write_config(job, tmp_path / "job.json")
    whole = launch_cli(["train", str(config), "--devices", "cpu,cpu", "--output-dir", str(tmp_path / "out")], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    state = tmp_path / "out" / "rs_2steps-state"
    assert json.loads((state / "state.json").read_text(encoding="utf-8"))["processes"] == 2
    resumed = launch_cli(["train", "--resume", str(state), "--devices", "cpu,cpu", "--output-dir",
                          str(tmp_path / "resumed")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = load_file(str(tmp_path / "resumed" / "rs.safetensors")), load_file(str(tmp_path / "out" /
                                                                                           "rs.safetensors"))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_accelerate_launch_itself_starts_the_same_run(lora_job, tmp_path):
    """What the README says to run without --devices: accelerate's own CLI, two CPU processes."""
    job, _ = lora_job(train_batch_size="1", save_lora_name="acc", logging_save_csv="true")
    config = write_config(job, tmp_path / "job.json")
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                           str(free_port()),
                           "-m", "trainer", "train", str(config), "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env={**os.environ, "TRAINTRAIN_DATA_DIR": str(tmp_path / "data")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    with safe_open(str(tmp_path / "out" / "acc.safetensors"), "pt") as f:
        assert f.metadata()["ss_num_processes"] == "2"
    assert csv_steps(tmp_path / "data" / "logs") == [1, 2, 3, 4]
    assert proc.stdout.count("Successfully created") == 1  # process 0 says it; process 1 only trained


def test_a_failing_process_ends_the_launch_with_its_one_line(lora_job, tmp_path):
    """Process 1 raises at its second step while process 0 waits in the gradient all-reduce: the launch ends within
    seconds, prints process 1's line (no traceback), and leaves no process behind."""
    job, _ = lora_job(train_iterations="50", save_lora_name="fails")
    config = write_config(job, tmp_path / "job.json")
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "faulty_trainer.py").write_text(f'''
import os, sys, time
from pathlib import Path
from trainer.engine import loop
from trainer.errors import UserError
Path({str(tmp_path)!r}, "pid-" + os.environ["RANK"]).write_text(str(os.getpid()))
real, steps = loop.train_step, []

def train_step(*args, **kwargs):
    steps.append(1)
    if os.environ["RANK"] == "1" and len(steps) == 2:
        Path({str(tmp_path)!r}, "raised").write_text(repr(time.time()))
        raise UserError("the disk of process 1 is full")
    return real(*args, **kwargs)

loop.train_step = train_step
from trainer.__main__ import main
sys.exit(main(sys.argv[1:]))
''', encoding="utf-8")
    code = ("import sys; from trainer.launch import launch; "
            "sys.exit(launch('cpu', ['cpu', 'cpu'], sys.argv[1:], module='faulty_trainer'))")
    env = {**os.environ, "TRAINTRAIN_DATA_DIR": str(tmp_path / "data"),
           "PYTHONPATH": os.pathsep.join([str(entry), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code, str(config), "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    ended = time.time()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert ended - float((tmp_path / "raised").read_text()) < 15  # measured: 2.9 s, the launcher included
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "error: the disk of process 1 is full (process 1 of 2; the launch was stopped)", proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert not (tmp_path / "out" / "fails.safetensors").exists()
    deadline = time.time() + 5
    for pid in (int((tmp_path / f"pid-{r}").read_text()) for r in (0, 1)):
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(pid), f"process {pid} was left running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for the user (its parent, the launcher, has exited: init reaps it)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_a_prompt_mode_on_several_devices_runs_on_one_and_says_so(demo_models, tmp_path):
    from trainer.paths import PRESETS_DIR
    from trainer.settings import apply_overrides, job_from_json

    data = json.loads((PRESETS_DIR / "iLECO.json").read_text(encoding="utf-8"))
    data = apply_overrides(data, ["train_iterations=2", "save_lora_name=alone", "image_size(height, width)=64",
                                  "original_prompt=a red circle", "save_as_json=false"])
    data["model"] = str(demo_models["sd1"])
    job, _ = job_from_json(data)
    config = write_config(job, tmp_path / "job.json")
    proc = launch_cli(["train", str(config), "--devices", "cpu,cpu", "--output-dir", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iLECO trains on one device: running on the first of --devices only" in proc.stderr
    assert (tmp_path / "out" / "alone.safetensors").is_file()


def test_devices_are_checked_before_anything_starts(tmp_path):
    for devices, says in (("cpu,0", "CPU and CUDA cannot be mixed"), ("", "comma-separated list"),
                          ("0,1", "no CUDA device") if not torch.cuda.is_available() else ("0,0", "listed twice")):
        proc = launch_cli(["train", "--devices", devices, "--output-dir", str(tmp_path)], tmp_path, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_each_process_takes_its_share_of_the_whole_batch():
    rows = list(range(6))
    shares = [World(rank=r, size=3).share(rows) for r in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5]]
    batch = torch.arange(8).reshape(4, 2)
    assert torch.equal(World(rank=1, size=2).share(batch), batch[2:])
    assert World(rank=0, size=2).fill([7, 8, 9], per_device=2) == [7, 8, 9, 7]  # a short last batch is filled
    assert SINGLE.fill([7], per_device=2) == [7] and SINGLE.share(rows) is rows


def test_a_state_resumes_only_on_the_process_count_it_was_saved_with(lora_job, tmp_path):
    from trainer.errors import UserError

    job, host = lora_job(train_iterations="4", save_per_steps="2", save_state="true", save_lora_name="st")
    run_job(job, host)
    state = next((tmp_path / "out").glob("st_2steps-state"))
    again, host = lora_job(train_iterations="4", save_per_steps="2", save_state="true", save_lora_name="st",
                           resume=str(state), save_overwrite="true")
    with pytest.raises(UserError, match="trained on 1 process"):
        run_job(again, host, world=World(rank=0, size=2))
