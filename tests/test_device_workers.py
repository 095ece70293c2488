"""One queue worker per device (`python -m trainer ui --devices …`): queued jobs train at once, each on its own
device, the status and the Queue tab say which device runs which job, and a job's weights depend on its seed only,
not on the job training beside it."""

from __future__ import annotations

import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from trainer.jobs.queue import JobQueue
from trainer.jobs.service import TrainingService, describe, device_labels
from trainer.runner import run_job


def two_device_service(host, tmp_path, runner) -> TrainingService:
    return TrainingService(host, queue_file=tmp_path / "queue.json", logs_dir=tmp_path / "logs", json_dir=tmp_path,
                           run_job=runner, devices=["cpu", "cpu"])


def test_two_queued_jobs_train_at_once_each_on_its_device_and_both_land(lora_job, tmp_path, one_thread):
    alone, host = lora_job(save_lora_name="alone", train_seed="5")
    alone_result = run_job(alone, host)  # the reference: the same settings with nothing beside it

    both = threading.Barrier(2, timeout=60)  # each job waits until the other is running too: they overlap
    seen = {}

    def runner(job, job_host, control, logs_dir, json_dir):
        both.wait()
        seen[job.settings.save_lora_name] = (str(job_host.device), service.running(), service.status())
        return run_job(job, job_host, control, logs_dir, json_dir)

    service = two_device_service(host, tmp_path, runner)
    first, _ = lora_job(save_lora_name="first", train_seed="5")
    second, _ = lora_job(save_lora_name="second", train_seed="9", network_rank="2")
    service.enqueue(first)
    service.enqueue(second)
    assert service.wait(240)

    out = tmp_path / "out"
    assert (out / "first.safetensors").is_file() and (out / "second.safetensors").is_file()
    assert service.queue.running() == [] and len(service.queue) == 0
    devices = {name: device for name, (device, _, _) in seen.items()}
    assert set(devices) == {"first", "second"} and all(d == "cpu" for d in devices.values())
    running = seen["second"][1]
    assert sorted(label for _, label in running) == ["cpu#1", "cpu#2"]  # both running, on different workers
    status = seen["second"][2]
    assert status.others and status.idle_devices == 0
    assert "Also running: '" in describe(status) and " on cpu#" in describe(status)

    # same seed and settings as the job that trained alone: the same weights, whatever trained beside it
    ours, reference = load_file(str(out / "first.safetensors")), load_file(str(alone_result.path))
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


def test_the_queue_tab_lists_the_training_jobs_with_their_devices(lora_job, tmp_path):
    from trainer.ui.tab import TrainTrainTab

    gate, started = threading.Event(), threading.Barrier(3, timeout=60)

    def runner(job, job_host, control, logs_dir, json_dir):
        started.wait()
        gate.wait(60)
        raise RuntimeError("not trained here")

    _, host = lora_job()
    service = two_device_service(host, tmp_path, runner)
    for name in ("a", "b", "c"):
        service.enqueue(lora_job(save_lora_name=name)[0])
    started.wait()
    try:
        rows = [row[0] for row in TrainTrainTab(service, host)._queue_rows()]
        assert rows == ["a (training on cpu#1)", "b (training on cpu#2)", "c"]
        with pytest.raises(Exception, match="every device is training"):
            service.start(lora_job(save_lora_name="d")[0])
    finally:
        gate.set()
        started.abort()
    assert service.wait(60)


def test_the_queue_file_keeps_every_running_job_and_reads_the_old_layout(tmp_path):
    from trainer.settings import Job, validate

    def job(name):
        return Job(mode="LoRA", settings=validate({"save_lora_name": name}, "LoRA"))

    queue = JobQueue(tmp_path / "queue.json")
    a, b = job("a"), job("b")
    queue.mark_running(a)
    queue.mark_running(b)
    assert [j["save_lora_name"] for j in json.loads((tmp_path / "queue.json").read_text())["running"]] == ["a", "b"]
    queue.mark_ended(a)
    assert [j.settings.save_lora_name for j in queue.running()] == ["b"]
    reread = JobQueue(tmp_path / "queue.json")  # the process died while b ran
    assert [j.settings.save_lora_name for j in reread.interrupted()] == ["b"]

    old = tmp_path / "old.json"  # one running job (or null) there, as before several devices
    old.write_text(json.dumps({"jobs": [], "running": job("c").to_json(), "interrupted": []}), encoding="utf-8")
    assert [j.settings.save_lora_name for j in JobQueue(old).interrupted()] == ["c"]


def test_device_labels_number_a_device_listed_twice():
    assert device_labels(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert device_labels(["cpu", "cpu", "cuda:0"]) == ["cpu#1", "cpu#2", "cuda:0"]


def test_the_standalone_app_gets_a_worker_per_device(tmp_path):
    from trainer.ui.standalone import build_app

    blocks, service = build_app(output_dir=tmp_path / "out", data_dir=tmp_path / "data", devices=["cpu", "cpu"])
    assert service.devices == ["cpu#1", "cpu#2"] and service.status().idle_devices == 2
    _, single = build_app(output_dir=tmp_path / "out", data_dir=tmp_path / "data2")
    assert single.devices == [""] and single.status().idle_devices == 1


def test_stop_reaches_a_job_still_running_on_another_device(lora_job, tmp_path):
    import time
    from types import SimpleNamespace

    from trainer.engine.control import Status

    def runner(job, job_host, control, logs_dir, json_dir):
        name = job.settings.save_lora_name
        deadline = time.monotonic() + 30
        while name == "long" and not control.stop_requested and time.monotonic() < deadline:
            time.sleep(0.02)
        status = Status.STOPPED if control.stop_requested else Status.FINISHED
        return SimpleNamespace(status=status, path=None, message=f"{name} {status}")

    _, host = lora_job()
    service = two_device_service(host, tmp_path, runner)
    service.start(lora_job(save_lora_name="long")[0])
    service.start(lora_job(save_lora_name="short")[0])  # started last: the one shown
    deadline = time.monotonic() + 20
    while len(service.running()) != 1 and time.monotonic() < deadline:  # until "short" has ended
        time.sleep(0.02)
    status = service.status()
    assert (status.name, status.state) == ("short", "finished") and [o[0] for o in status.others] == ["long"]
    assert service.stop(save=False) == "Stopping 'long' after this step (not saved)."
    assert service.wait(10)
