"""Issue 15, items 1 and 2: a file reported as created is a finite file; outputs without races.

Non-finite weights (a diverged run, a huge network_strength, an fp16 overflow) are never written, divergence stops
the run naming the step and the last good file; `inspect` flags non-finite tensors. A job reserves its output name,
so a second job of the same name is refused at the start; temp files left by a killed writer are removed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer import fileio
from trainer.errors import UserError
from trainer.runner import run_job

pytestmark = pytest.mark.filterwarnings("ignore")


def out_files(tmp_path) -> list[str]:
    folder = tmp_path / "out"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def all_finite(path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(path)).values())


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- 1. never a non-finite file ----------------------------------------------------------------------------------
def test_a_huge_learning_rate_writes_no_file(lora_job, tmp_path):
    job, host = lora_job(train_iterations="1", train_learning_rate="1e6")
    with pytest.raises(UserError) as err:
        run_job(job, host)
    message = str(err.value)
    assert "\n" not in message and ("diverged" in message or "not finite" in message), message
    assert "no file was written" in message
    assert not (tmp_path / "out").exists()  # no final file, no temp, no lock, not even the folder it made


def test_a_huge_network_strength_is_refused(lora_job, tmp_path):
    job, host = lora_job(train_iterations="1", network_strength="1e30")
    with pytest.raises(UserError, match="not finite") as err:
        run_job(job, host)
    assert "network_strength" in str(err.value)
    assert out_files(tmp_path) == []


def test_divergence_on_the_weights_stops_and_keeps_the_last_finite_save(lora_job, tmp_path, monkeypatch):
    """The weights turn NaN in step 3 (the loss of step 3 was still finite): the run stops at step 3, the step-2
    file stays and is named, and nothing is written after it."""
    from trainer.engine import loop

    real_build = loop.build_optimizer

    def poisoned_build(*args, **kwargs):
        optimizer = real_build(*args, **kwargs)
        calls = [0]

        def poison(opt, args, kwargs):
            calls[0] += 1
            if calls[0] == 3:
                with torch.no_grad():
                    opt.param_groups[0]["params"][0].fill_(float("nan"))

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(loop, "build_optimizer", poisoned_build)
    job, host = lora_job(train_iterations="6", save_per_steps="2")
    with pytest.raises(UserError) as err:
        run_job(job, host)
    message = str(err.value)
    kept = tmp_path / "out" / "t_2steps.safetensors"
    assert "diverged at step 3" in message and "non-finite weights" in message, message
    assert str(kept) in message
    assert out_files(tmp_path) == ["t_2steps.safetensors"]
    assert all_finite(kept)


def test_save_network_refuses_non_finite_tensors(tmp_path):
    from trainer.networks.io import save_network

    class Net:
        def save_tensors(self, strength):
            return {"a.lora_down.weight": torch.ones(2, 2), "b.lora_up.weight": torch.full((2, 2), 1e5),
                    "c.alpha": torch.tensor(1.0)}

    with pytest.raises(UserError, match=r"1 of 3 tensors.*b\.lora_up\.weight"):
        save_network(Net(), tmp_path / "x.safetensors", metadata={}, save_precision="fp16")  # 1e5 > fp16 max
    assert list(tmp_path.iterdir()) == []
    save_network(Net(), tmp_path / "x.safetensors", metadata={}, save_precision="fp32")  # finite in fp32
    assert all_finite(tmp_path / "x.safetensors")


def hand_made_lora(path: Path, value: float) -> Path:
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    down = torch.full((4, 768), 0.01)
    down[0, 0] = value
    save_file({f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": torch.zeros(320, 4),
               f"{name}.alpha": torch.tensor(4.0)}, str(path), metadata={"ss_base_model_version": "sd_v1"})
    return path


def test_inspect_flags_non_finite_tensors(tmp_path, capsys):
    from trainer.__main__ import main

    assert main(["inspect", str(hand_made_lora(tmp_path / "good.safetensors", 0.5))]) == 0
    capsys.readouterr()
    assert main(["inspect", str(hand_made_lora(tmp_path / "bad.safetensors", float("nan")))]) == 1
    captured = capsys.readouterr()
    assert "not finite" in captured.err and "lora_down.weight" in captured.err
    assert '"non_finite"' in captured.out


# -- 2. outputs without races -------------------------------------------------------------------------------------
def test_two_threads_saving_one_name_exactly_one_succeeds(tmp_path):
    from trainer.networks.io import save_network

    class Net:
        def save_tensors(self, strength):
            return {f"m{i}.lora_down.weight": torch.randn(64, 64) for i in range(20)}

    barrier, outcomes = threading.Barrier(4), []

    def save():
        barrier.wait()
        try:
            save_network(Net(), tmp_path / "same.safetensors", metadata={}, save_precision="fp32")
            outcomes.append("ok")
        except UserError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1, outcomes
    assert all("already exists" in o for o in outcomes if o != "ok")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.safetensors"]


def test_a_reservation_is_exclusive_between_threads(tmp_path):
    barrier, won, lost = threading.Barrier(6), [], []

    def take():
        barrier.wait()
        try:
            won.append(fileio.reserve_name(tmp_path / "r.safetensors"))
        except UserError:
            lost.append(1)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 5
    won[0].release()
    assert list(tmp_path.iterdir()) == []


def test_a_name_reserved_by_a_live_job_is_refused_at_the_start(lora_job, tmp_path, monkeypatch):
    job, host = lora_job()
    loads = []
    monkeypatch.setattr(type(host), "load_components", lambda *a, **k: loads.append(1) or 1 / 0)
    held = fileio.reserve_name(tmp_path / "out" / "t.safetensors")
    try:
        with pytest.raises(UserError, match="another job is writing"):
            run_job(job, host)
        assert loads == []  # refused before anything loads
    finally:
        held.release()
    assert out_files(tmp_path) == []


def test_a_stale_reservation_is_taken_over_and_released(lora_job, tmp_path):
    (tmp_path / "out").mkdir()
    lock = tmp_path / "out" / ".t.safetensors.lock"
    lock.write_text(f"{dead_pid()} {fileio.HOST} stale\n")
    job, host = lora_job(train_iterations="1")
    result = run_job(job, host)
    assert result.status == "finished" and out_files(tmp_path) == ["t.safetensors"]  # the lock is gone too


def test_temp_files_of_a_dead_writer_are_removed_at_the_next_run(lora_job, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".t.safetensors.{dead_pid()}-abcd1234{fileio.TEMP_SUFFIX}"
    live = out / f".other.safetensors.{os.getpid()}-abcd1234{fileio.TEMP_SUFFIX}"
    unrelated = out / "notes.tmp"
    fresh = out / f".t.safetensors.{dead_pid()}-efgh5678{fileio.TEMP_SUFFIX}"  # may be another machine's, writing
    for p in (stale, live, unrelated, fresh):
        p.write_bytes(b"partial")
        if p is not fresh:
            os.utime(p, (p.stat().st_mtime - 600,) * 2)
    job, host = lora_job(train_iterations="1")
    run_job(job, host)
    assert not stale.exists() and live.exists() and unrelated.exists() and fresh.exists()
    assert (out / "t.safetensors").is_file()


def test_temp_names_carry_the_writer_pid(tmp_path):
    with fileio.atomic_path(tmp_path / "x.bin") as tmp:
        assert tmp.name.startswith(f".x.bin.{os.getpid()}-") and tmp.name.endswith(fileio.TEMP_SUFFIX)
        tmp.write_bytes(b"1")
    assert (tmp_path / "x.bin").read_bytes() == b"1"
