"""The queue (persisted, FIFO, duplicate names, delete any row) and the training service around it."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.engine.control import Event, Status
from trainer.errors import UserError
from trainer.jobs import plot
from trainer.jobs.queue import QUEUE_HEADERS, JobQueue, queue_row
from trainer.host.standalone import StandaloneHost
from trainer.jobs.service import TrainingService, describe
from trainer.settings import Job, validate


def job(name: str, mode: str = "LoRA", **raw) -> Job:
    return Job(mode=mode, settings=validate({"save_lora_name": name, **raw}, mode))


class FakeRunner:
    """Stands in for runner.run_job: records the order and emits steps; `gate` holds a job open. It does not stop
    (the stop test runs the real runner, so the stop path it checks is the one users get)."""

    def __init__(self, steps=3):
        self.ran = []
        self.steps = steps
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, job, host, control, logs_dir, json_dir):
        self.ran.append(job.settings.save_lora_name)
        self.started.set()
        for step in range(1, self.steps + 1):
            self.gate.wait(10)
            control.emit(Event.STEP, step=step, total=self.steps, loss=1.0 / step, loss_ema=1.0 / step, lrs=[1e-4],
                         elapsed=step, eta=self.steps - step)
        return SimpleNamespace(status=Status.FINISHED, path=Path(f"/out/{job.settings.save_lora_name}.safetensors"),
                               message=f"Successfully created /out/{job.settings.save_lora_name}.safetensors")


def service(tmp_path, runner, resume=True) -> TrainingService:
    return TrainingService(StandaloneHost(lora_dir=tmp_path / "out"), queue_file=tmp_path / "queue.json", logs_dir=tmp_path / "logs",
                           json_dir=tmp_path, resume_queue=resume, run_job=runner)


def test_queue_rejects_a_duplicate_save_lora_name_and_not_other_fields(tmp_path):
    queue = JobQueue(tmp_path / "queue.json")
    queue.add(job("a"))
    queue.add(job("b"))  # same (empty) scheduler settings: upstream's off-by-one compared those and refused
    with pytest.raises(UserError, match="Duplicated LoRA name"):
        queue.add(job("a"))
    with pytest.raises(UserError, match="Duplicated LoRA name"):
        queue.add(job("c"), running="c")
    assert queue.names() == ["a", "b"]


def test_queue_deletes_any_row_including_the_first(tmp_path):
    queue = JobQueue(tmp_path / "queue.json")
    for name in "abc":
        queue.add(job(name))
    queue.delete("a")
    assert queue.names() == ["b", "c"]
    queue.delete("c")
    assert queue.names() == ["b"]
    with pytest.raises(UserError, match="no queued job named 'zzz'"):
        queue.delete("zzz")


def test_queue_survives_a_restart_in_upstream_json(tmp_path):
    path = tmp_path / "queue.json"
    queue = JobQueue(path)
    queue.add(Job(mode="iLECO", settings=validate({"save_lora_name": "x", "train_iterations": "7"}, "iLECO"),
                  original_prompt="a cat", target_prompt="a dog"))
    queue.add(job("y"))
    saved = json.loads(path.read_text(encoding="utf-8"))["jobs"]
    assert saved[0]["mode"] == "iLECO" and saved[0]["train_iterations"] == "7" and saved[0]["original prompt"] == "a cat"
    again = JobQueue(path)
    assert again.names() == ["x", "y"]
    assert again.jobs()[0].settings.train_iterations == 7 and again.jobs()[0].target_prompt == "a dog"
    assert again.pop().settings.save_lora_name == "x"
    assert JobQueue(path).names() == ["y"]  # popping is persisted too


def test_queue_rows_have_the_upstream_columns():
    row = queue_row(job("n"))
    assert len(row) == len(QUEUE_HEADERS) and row[:2] == ["n", "LoRA"] and QUEUE_HEADERS[:4] == [
        "Name", "Mode", "Model", "VAE"]


def test_service_runs_started_job_then_queue_fifo(tmp_path):
    runner = FakeRunner()
    runner.gate.clear()
    svc = service(tmp_path, runner)
    assert "Started" in svc.start(job("first"))
    assert runner.started.wait(5)
    with pytest.raises(UserError, match="is running"):
        svc.start(job("other"))
    with pytest.raises(UserError, match="Duplicated"):
        svc.enqueue(job("first"))  # the running job's name
    svc.enqueue(job("second"))
    svc.enqueue(job("third"))
    assert svc.status().queued == 2 and svc.status().busy
    runner.gate.set()
    assert svc.wait(10)
    assert runner.ran == ["first", "second", "third"]
    status = svc.status()
    assert status.state == "finished" and "third.safetensors" in status.message and status.queued == 0


@pytest.mark.parametrize("save", [True, False])
def test_service_stop_answers_after_the_running_step_and_moves_on(lora_job, tmp_path, save):
    """Stop pressed during step 2 of a real run: service.stop → the job's JobControl → the engine stops there."""
    from trainer.runner import run_job

    results, stopped = [], []

    def runner(job_, host, control, *rest):
        original = control.on_event

        def on_event(event):  # the button, pressed while the worker reports step 2
            original(event)
            if event["kind"] == Event.STEP and event["step"] == 2 and job_.settings.save_lora_name == "long":
                stopped.append(svc.stop(save=save))

        control.on_event = on_event
        results.append(run_job(job_, host, control, *rest))
        return results[-1]

    long_job, host = lora_job(save_lora_name="long", train_iterations="50")
    next_job, _ = lora_job(save_lora_name="next", train_iterations="2")
    svc = TrainingService(host, queue_file=tmp_path / "q.json", logs_dir=tmp_path / "logs", json_dir=tmp_path,
                          run_job=runner)
    svc.start(long_job)
    svc.enqueue(next_job)
    assert svc.wait(300)
    assert stopped == ["Stopping 'long' after this step" + (" and saving it." if save else " (not saved).")]
    assert [r.steps for r in results] == [2, 2]
    assert results[0].status == (Status.STOPPED_SAVED if save else Status.STOPPED)
    assert results[1].status == Status.FINISHED and svc.status().state == "finished"
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert saved == (["long_2steps.safetensors"] if save else []) + ["next.safetensors"]


def test_service_resumes_the_persisted_queue_after_a_restart(tmp_path):
    runner = FakeRunner()
    runner.gate.clear()
    first = service(tmp_path, runner)
    first.start(job("running"))
    first.enqueue(job("pending-1"))
    first.enqueue(job("pending-2"))
    # the app stops here (the running job is lost with the process; pending jobs are on disk)
    later = FakeRunner()
    second = service(tmp_path, later)
    assert second.wait(10)
    assert later.ran == ["pending-1", "pending-2"]
    runner.gate.set()


def test_service_reports_errors_in_one_line_and_keeps_going(tmp_path):
    def failing(job, *args):
        if job.settings.save_lora_name == "bad":
            raise UserError("lora_data_directory: /nope is not a folder")
        if job.settings.save_lora_name == "boom":
            raise RuntimeError("unexpected")
        return FakeRunner()(job, *args)

    svc = service(tmp_path, failing)
    svc.start(job("bad"))
    svc.enqueue(job("boom"))
    svc.enqueue(job("good"))
    assert svc.wait(10)
    assert svc.status().state == "finished"
    svc.start(job("bad"))
    svc.wait(10)
    assert svc.status().message == "Error: lora_data_directory: /nope is not a folder"
    svc.start(job("boom"))
    svc.wait(10)
    assert svc.status().message.startswith("Error: RuntimeError: unexpected") and "\n" not in svc.status().message


def test_progress_text_has_step_total_ema_lr_elapsed_eta(tmp_path):
    runner = FakeRunner(steps=4)
    svc = service(tmp_path, runner)
    seen = []
    runner_call = runner.__call__

    def spy(job, host, control, *rest):
        original = control.on_event

        def on_event(event):
            original(event)
            seen.append(describe(svc.status()))

        control.on_event = on_event
        return runner_call(job, host, control, *rest)

    svc._run_job = spy
    svc.start(job("p"))
    svc.wait(10)
    assert seen[1] == "LoRA 'p': step 2/4 (50%) · loss EMA 0.50000 · lr 1.00e-04 · elapsed 0:02 · ETA 0:02"
    assert [row[0] for row in svc.status().history] == [1, 2, 3, 4]


def test_a_real_short_job_through_the_service(lora_job, tmp_path):
    from trainer.runner import run_job

    job_, host = lora_job(train_iterations="3", logging_save_csv="true")
    svc = TrainingService(host, queue_file=tmp_path / "q.json", logs_dir=tmp_path / "logs", json_dir=tmp_path,
                          run_job=run_job)
    svc.start(job_)
    assert svc.wait(300)
    status = svc.status()
    assert status.state == "finished" and status.message.startswith("Successfully created"), status.message
    assert Path(status.path).is_file() and status.step == 3
    log_file = plot.find_log("", tmp_path / "logs")
    series = plot.series_from_log(log_file)
    assert series["step"] == [1, 2, 3] and len(series["lrs"]) == 2  # text encoder + UNet groups
    figure = plot.loss_figure(series)
    assert len(figure.axes) == 2 and figure.axes[0].get_ylabel() == "Loss"


def test_plot_finds_named_logs_under_logs_dir_only(tmp_path, monkeypatch):
    logs = tmp_path / "logs" / "20260101"
    logs.mkdir(parents=True)
    (logs / "mine-20260101_000000.csv").write_text("network_rank,4\nStep,Loss,Learning Rate 1\n1,0.5,0.001\n"
                                                   "2,0.4,0.0009\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "decoy.csv").write_text("Step,Loss\n1,9\n", encoding="utf-8")  # in the working directory
    assert plot.find_log("mine-20260101_000000", tmp_path / "logs").name == "mine-20260101_000000.csv"
    assert plot.find_log("", tmp_path / "logs").name == "mine-20260101_000000.csv"
    series = plot.series_from_log(plot.find_log("mine-20260101_000000.csv", tmp_path / "logs"))
    assert series["loss"] == [0.5, 0.4] and series["raw"] is None
    with pytest.raises(UserError, match="no log named decoy.csv"):
        plot.find_log("decoy", tmp_path / "logs")
    assert plot.series_from_history([(1, 2.0, 1.5, 1e-4), (2, 1.0, 1.4, 9e-5)])["lrs"] == {
        "Learning Rate 1": [1e-4, 9e-5]}


def test_traintrain_data_dir_moves_json_and_logs_for_every_entry_point(tmp_path):
    """What runs write (the queue, saved settings, CSV logs) goes under TRAINTRAIN_DATA_DIR when it is set — these
    tests set it, so parallel workers never share a queue — and beside the code when it is not."""
    import os
    import subprocess
    import sys

    from trainer import paths

    assert paths.JSON_DIR == Path(os.environ["TRAINTRAIN_DATA_DIR"]) / "json" != paths.ROOT / "json"
    code = "from trainer import paths; print(paths.JSON_DIR); print(paths.LOGS_DIR); print(paths.PRESETS_DIR)"
    for value, root in ((str(tmp_path), tmp_path), ("", paths.ROOT)):
        env = {**os.environ, "TRAINTRAIN_DATA_DIR": value}
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=paths.ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
        assert out == [str(root / "json"), str(root / "logs"), str(paths.ROOT / "presets")]
