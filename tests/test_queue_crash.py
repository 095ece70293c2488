"""The queue survives crashes (issue 15, item 7): the running job stays in queue.json until it ends, a restart shows
it as interrupted (never re-run), and a queue file of the wrong shape is backed up and replaced by an empty queue."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.engine.control import Status
from trainer.host.standalone import StandaloneHost
from trainer.jobs.queue import JobQueue
from trainer.jobs.service import TrainingService, describe
from trainer.settings import Job, validate


def job(name: str) -> Job:
    return Job(mode="LoRA", settings=validate({"save_lora_name": name}, "LoRA"))


class Runner:
    """A stand-in for runner.run_job; blocks on `gate` so a job can be 'running' when the process 'dies'."""

    def __init__(self, block=False, fail=None):
        self.ran, self.gate, self.started, self.fail = [], threading.Event(), threading.Event(), fail
        if not block:
            self.gate.set()

    def __call__(self, job_, host, control, logs_dir, json_dir):
        name = job_.settings.save_lora_name
        self.ran.append(name)
        self.started.set()
        self.gate.wait(20)
        if self.fail:
            raise self.fail
        return SimpleNamespace(status=Status.FINISHED, path=None, message=f"Successfully created {name}")


def service(tmp_path, runner, resume=True) -> TrainingService:
    return TrainingService(StandaloneHost(lora_dir=tmp_path / "out"), queue_file=tmp_path / "queue.json",
                           logs_dir=tmp_path / "logs", json_dir=tmp_path, resume_queue=resume, run_job=runner)


def saved(tmp_path) -> dict:
    return json.loads((tmp_path / "queue.json").read_text(encoding="utf-8"))


def test_a_killed_run_is_shown_as_interrupted_and_not_rerun(tmp_path, caplog):
    first_runner = Runner(block=True)
    first = service(tmp_path, first_runner)
    try:
        first.start(job("running"))
        assert first_runner.started.wait(5)
        first.enqueue(job("pending"))
        on_disk = saved(tmp_path)
        assert [j["save_lora_name"] for j in on_disk["running"]] == ["running"]  # upstream's per-job JSON
        assert [j["save_lora_name"] for j in on_disk["jobs"]] == ["pending"]

        # the process is killed here: a new one starts from the same file without the first finishing
        later = Runner()
        with caplog.at_level(logging.WARNING):
            second = service(tmp_path, later)
        assert second.wait(10)
        assert later.ran == ["pending"]  # the pending job resumes, the interrupted one does not re-run
        status = second.status()
        assert status.interrupted == ("running",) and status.state == "finished"
        assert "Interrupted: 'running'" in describe(status) and "not re-run" in describe(status)
        assert any("'running'" in r.getMessage() and "interrupted" in r.getMessage() for r in caplog.records)

        # killed again before anyone looked: still reported, nothing runs
        idle = Runner()
        third = service(tmp_path, idle)
        assert third.wait(10) and idle.ran == []
        status = third.status()
        assert status.state == "interrupted" and status.interrupted == ("running",) and not status.busy
        assert describe(status).startswith("Interrupted: 'running' was running")

        # Delete dismisses it; starting it again also clears it
        third.delete("running")
        assert third.status().interrupted == () and service(tmp_path, Runner()).status().state == "idle"
    finally:
        first_runner.gate.set()
        first.wait(10)


def test_starting_an_interrupted_job_again_clears_the_notice(tmp_path):
    path = tmp_path / "queue.json"
    path.write_text(json.dumps({"jobs": [], "running": job("x").to_json()}), encoding="utf-8")
    runner = Runner()
    svc = service(tmp_path, runner)
    assert svc.status().interrupted == ("x",)
    svc.start(job("x"))
    assert svc.wait(10) and runner.ran == ["x"]
    assert svc.status().interrupted == () and saved(tmp_path)["interrupted"] == []


@pytest.mark.parametrize("fail", [None, RuntimeError("boom")])
def test_the_running_entry_is_cleared_when_the_job_ends(tmp_path, fail):
    svc = service(tmp_path, Runner(fail=fail))
    svc.start(job("a"))
    svc.enqueue(job("b"))
    assert svc.wait(10)
    assert saved(tmp_path) == {"jobs": [], "running": [], "interrupted": []}
    assert service(tmp_path, Runner()).status().interrupted == ()


BAD_FILES = {
    "jobs null": b'{"jobs": null}',
    "a list": b'[{"save_lora_name": "a"}]',
    "garbage bytes": b"\xff\xfe\x00\x13garbage\x80",
    "truncated json": b'{"jobs": [{"save_lora_name": ',
    "a string": b'"jobs"',
    "jobs a string": b'{"jobs": "abc"}',
    "running a number": b'{"jobs": [], "running": 1}',
    "nested too deep": b"[" * 100000 + b"]" * 100000,
}


@pytest.mark.parametrize("content", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_a_bad_queue_file_is_backed_up_and_the_queue_starts_empty(tmp_path, caplog, content):
    path = tmp_path / "queue.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        svc = service(tmp_path, Runner())
    assert len(svc.queue) == 0 and svc.status().state == "idle"
    assert any("is not a queue file" in r.getMessage() for r in caplog.records)
    backups = list(tmp_path.glob("queue.json.bad-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == content and svc.queue.backup == backups[0]
    assert "\n" not in caplog.records[0].getMessage()
    svc.enqueue(job("new"))  # the queue works and writes a good file again
    assert svc.wait(10) and saved(tmp_path)["jobs"] == []
    assert JobQueue(path).backup is None


def test_bad_entries_are_dropped_and_the_file_is_kept_as_a_backup(tmp_path, caplog):
    path = tmp_path / "queue.json"
    content = json.dumps({"jobs": [job("ok").to_json(), "junk", 5, {"mode": "Nope"}]}).encode()
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        queue = JobQueue(path)
    assert queue.names() == ["ok"]
    assert queue.backup is not None and queue.backup.read_bytes() == content
    assert path.read_bytes() == content  # copied, not moved: nothing is rewritten until the queue changes


def test_a_second_bad_file_gets_its_own_backup(tmp_path):
    path = tmp_path / "queue.json"
    for content in (b'{"jobs": null}', b"[]"):
        path.write_bytes(content)
        JobQueue(path)
    assert sorted(p.read_bytes() for p in tmp_path.glob("queue.json.bad-*")) == [b'[]', b'{"jobs": null}']


def test_the_standalone_ui_builds_over_a_bad_queue_file(tmp_path):
    from trainer.ui.standalone import build_app

    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "queue.json").write_bytes(b'{"jobs": null}')
    _blocks, svc = build_app(models_dir=tmp_path / "models", output_dir=tmp_path / "out", data_dir=tmp_path)
    assert len(svc.queue) == 0 and list((tmp_path / "json").glob("queue.json.bad-*"))


def test_old_files_without_running_still_load(tmp_path):
    path = tmp_path / "queue.json"
    path.write_text(json.dumps({"jobs": [job("a").to_json()]}), encoding="utf-8")
    queue = JobQueue(path)
    assert queue.names() == ["a"] and queue.interrupted() == [] and queue.backup is None
    assert not list(Path(tmp_path).glob("*.bad-*"))
