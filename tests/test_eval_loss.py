"""Issue 16 item 3: the evaluation loss — the mode's objective on fixed data, fixed noise and fixed timesteps —
in the CSV, the Plot and the message; the same number twice for the same LoRA; no effect on the trained weights;
and it falls where training works."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainer.runner as runner
from trainer.engine.evaluation import evaluation_loss
from trainer.engine.hooks import StepHook
from trainer.host.standalone import StandaloneHost
from trainer.jobs import plot
from trainer.runner import run_job
from trainer.settings import apply_overrides, job_from_json


def test_eval_loss_in_the_csv_the_plot_and_the_message(lora_job, tmp_path):
    job, host = lora_job(train_iterations="10", eval_every_n_steps="5", logging_save_csv="true")
    result = run_job(job, host, logs_dir=tmp_path / "logs")
    history = result.extras["eval_history"]
    assert [step for step, _ in history] == [5, 10]
    (log_file,) = (tmp_path / "logs").rglob("*.csv")
    rows = list(csv.reader(log_file.read_text(encoding="utf-8").splitlines()))
    header = next(i for i, row in enumerate(rows) if row[0] == "Step")
    assert rows[header][-2:] == ["Raw Loss", "Eval Loss"]
    data = rows[header + 1:]
    assert len(data) == 10
    assert [(int(r[0]), float(r[-1])) for r in data if r[-1]] == [(5, history[0][1]), (10, history[1][1])]
    series = plot.series_from_log(log_file)
    assert [step for step, _ in series["eval"]] == [5, 10]  # pandas parses floats to within an ulp
    assert [value for _, value in series["eval"]] == pytest.approx([v for _, v in history], rel=1e-15)
    figure = plot.loss_figure(series)
    assert "Eval Loss" in [line.get_label() for line in figure.axes[0].get_lines()]
    assert f"Evaluation loss: {history[1][1]:.6f} at step 10 ({result.extras['eval_start']:.6f} at the start)" \
        in result.message
    # off (the default): upstream's columns only
    job, host = lora_job(train_iterations="2", logging_save_csv="true", save_lora_name="off")
    result = run_job(job, host, logs_dir=tmp_path / "logs2")
    (log_file,) = (tmp_path / "logs2").rglob("*.csv")
    assert "Eval Loss" not in log_file.read_text(encoding="utf-8") and "eval_history" not in result.extras
    assert plot.series_from_log(log_file)["eval"] is None


class Probe(StepHook):
    """At one step: the evaluation loss twice, and the training streams before and after it."""

    def __init__(self, mode, at):
        self.mode, self.at, self.seen = mode, at, {}

    def after_step(self, ctx, step):
        if step == self.at:
            before = (ctx.generator.get_state(), ctx.rng.getstate(), torch.get_rng_state())
            weights = [p.detach().clone() for p in ctx.network.parameters()]
            self.seen["values"] = (evaluation_loss(ctx, self.mode), evaluation_loss(ctx, self.mode))
            after = (ctx.generator.get_state(), ctx.rng.getstate(), torch.get_rng_state())
            self.seen["streams kept"] = (torch.equal(before[0], after[0]) and before[1] == after[1]
                                         and torch.equal(before[2], after[2]))
            self.seen["weights kept"] = all(torch.equal(a, b) for a, b in zip(weights, ctx.network.parameters()))
        return {}


def test_the_same_lora_gives_the_same_number_and_evaluating_changes_no_weight(lora_job, monkeypatch, one_thread):
    probes = []
    real = runner.job_hooks

    def with_probe(job, mode, output, host=None):
        probes.append(Probe(mode, at=3))
        return [*real(job, mode, output, host), probes[-1]]

    monkeypatch.setattr(runner, "job_hooks", with_probe)
    job, host = lora_job(train_iterations="6", eval_every_n_steps="2", train_batch_size="1")
    evaluated = load_file(str(run_job(job, host).path))
    first, second = probes[0].seen["values"]
    assert first == second and probes[0].seen["streams kept"] and probes[0].seen["weights kept"]
    job, host = lora_job(train_iterations="6", train_batch_size="1", save_lora_name="plain")
    plain = load_file(str(run_job(job, host).path))
    assert evaluated.keys() == plain.keys() and all(torch.equal(evaluated[k], plain[k]) for k in plain)


def test_eval_loss_falls_where_the_training_loss_falls(demo_models, tmp_path):
    """iLECO on the SD1 demo, 30 steps (measured: the training loss falls from 1.1e-3 to 6.8e-5 over the first and
    last five steps, the evaluation loss from 4.8e-4 at the start to 1.6e-4 at step 15 and 5.8e-5 at step 30)."""
    data = json.loads((Path(__file__).parent.parent / "presets" / "iLECO.json").read_text(encoding="utf-8"))
    data = apply_overrides(data, ["save_lora_name=e", "train_seed=0", "image_size=64", "train_iterations=30",
                                  "train_learning_rate=3e-3", "eval_every_n_steps=15", "save_as_json=false",
                                  "original prompt=a red circle"])
    data["model"] = str(demo_models["sd1"])
    job, _ = job_from_json(data)
    result = run_job(job, StandaloneHost(lora_dir=tmp_path / "out"))
    losses = result.losses
    assert sum(losses[-5:]) < 0.2 * sum(losses[:5])
    start, ((_, middle), (_, end)) = result.extras["eval_start"], result.extras["eval_history"]
    assert end < middle < start and end < 0.3 * start, (start, middle, end)
