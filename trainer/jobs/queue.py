"""The job queue: FIFO, persisted in `json/queue.json` (upstream's JSON per job), so pending jobs survive a restart.

The file is `{"jobs": [...], "running": [...], "interrupted": [...]}`; each job is `Job.to_json()` (upstream's
layout); "running" holds one job per device that trains (a file of an earlier version holds one job or null there).
A job leaves "jobs" when it starts and is kept in "running" until it ends, so a job that was running when
the process died is found on the next start: it is listed as interrupted (never silently re-run) until a job of that
name is started or queued again, or it is deleted. A file of the wrong shape is renamed to
`queue.json.bad-<timestamp>` (kept as a backup) and the queue starts empty, with a warning.
Names are `save_lora_name` ("" → "untitled"); a name may be queued once.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from ..errors import UserError
from ..fileio import write_bytes_atomic, write_json_atomic
from ..settings import TABLE, Job, job_from_json

log = logging.getLogger(__name__)

QUEUE_HEADERS = ["Name", "Mode", "Model", "VAE", *(s.name for s in TABLE), *(s.name for s in TABLE),
                 "Original prompt", "Target prompt"]


def job_name(job: Job) -> str:
    return job.settings.save_lora_name or "untitled"


def queue_row(job: Job) -> list[str]:
    """One Queue-tab row: name, mode, model, VAE, pass-1 values, pass-2 values (pass 1 again if none), prompts."""
    second = job.second_pass or job.settings
    values = [job.settings.raw[s.name] for s in TABLE] + [second.raw[s.name] for s in TABLE]
    return [job_name(job), job.mode, job.model, job.vae or "None", *(str(v) for v in values),
            job.original_prompt, job.target_prompt]


class JobQueue:
    """Thread-safe FIFO of Jobs mirrored to a JSON file after every change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._running: list[Job] = []
        self._interrupted: list[Job] = []
        self.backup: Path | None = None  # where a bad queue file was moved, if it was
        self._jobs: list[Job] = self._read()
        if self._running:  # the last process died while these ran: they were interrupted
            for job in self._running:
                name = job_name(job)
                log.warning("%s: job %r was running when TrainTrain stopped; it is marked interrupted and not re-run",
                            self.path, name)
                self._interrupted = [j for j in self._interrupted if job_name(j) != name] + [job]
            self._running = []
            self._write_quietly()

    # -- the file ------------------------------------------------------------------------------------------------
    def _read(self) -> list[Job]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self._set_aside(f"it is not readable JSON ({_one_line(err)})")
            return []
        if not isinstance(data, dict):
            self._set_aside(f"expected a JSON object with a \"jobs\" list, found {type(data).__name__}")
            return []
        entries, running, interrupted = data.get("jobs", []), data.get("running"), data.get("interrupted", [])
        if not isinstance(entries, list) or not isinstance(interrupted, list) \
                or not (running is None or isinstance(running, (dict, list))):
            self._set_aside('"jobs", "interrupted" and "running" must be lists')
            return []
        jobs, self._interrupted = self._jobs_from(entries), self._jobs_from(interrupted)
        dropped = len(jobs) != len(entries) or len(self._interrupted) != len(interrupted)
        running = [] if running is None else [running] if isinstance(running, dict) else running
        self._running = self._jobs_from(running)
        dropped = dropped or len(self._running) != len(running)
        if dropped:
            self._back_up(copy=True)
        return jobs

    def _jobs_from(self, entries: list) -> list[Job]:
        jobs = []
        for entry in entries:
            try:
                jobs.append(job_from_json(entry, str(self.path))[0])
            except UserError as err:
                log.warning("dropped a queued job that no longer validates: %s", err)
            except Exception as err:  # noqa: BLE001 - a hand-edited entry of the wrong shape
                log.warning("%s: dropped a queued job of the wrong shape (%s)", self.path, _one_line(err))
        return jobs

    def _set_aside(self, why: str) -> None:
        log.warning("%s is not a queue file: %s; starting with an empty queue", self.path, why)
        self._back_up(copy=False)

    def _back_up(self, copy: bool) -> None:
        """Keep the file as `<name>.bad-<timestamp>`: moved away (a bad file), or copied (some jobs dropped)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.bad-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.bad-{stamp}-{n}")
        try:
            if copy:
                write_bytes_atomic(target, self.path.read_bytes(), overwrite=False)
            else:
                os.rename(self.path, target)
        except OSError as err:
            log.warning("could not keep a backup of %s (%s)", self.path, _one_line(err))
            return
        self.backup = target
        log.warning("the previous queue file is kept as %s", target)

    def _write(self) -> None:
        write_json_atomic(self.path, {"jobs": [job.to_json() for job in self._jobs],
                                      "running": [job.to_json() for job in self._running],
                                      "interrupted": [job.to_json() for job in self._interrupted]})

    def _write_quietly(self) -> None:
        try:
            self._write()
        except OSError as err:
            log.warning("could not update %s (%s)", self.path, _one_line(err))

    # -- the running jobs ----------------------------------------------------------------------------------------
    def mark_running(self, job: Job) -> None:
        """Record `job` as running (it is kept in the file until `mark_ended`); it is no longer 'interrupted'."""
        with self._lock:
            self._running.append(job)
            self._forget_interrupted(job_name(job))
            self._write_quietly()

    def mark_ended(self, job: Job) -> None:
        with self._lock:
            if any(j is job for j in self._running):
                self._running = [j for j in self._running if j is not job]
                self._write_quietly()

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running)

    def interrupted(self) -> list[Job]:
        """Jobs that were running when an earlier process ended without finishing them."""
        with self._lock:
            return list(self._interrupted)

    def _forget_interrupted(self, name: str) -> bool:
        before = len(self._interrupted)
        self._interrupted = [j for j in self._interrupted if job_name(j) != name]
        return len(self._interrupted) != before

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def names(self) -> list[str]:
        with self._lock:
            return [job_name(j) for j in self._jobs]

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def add(self, job: Job, running=()) -> int:
        """Append; refuses a name that is `running` (a name, or a set of them) or already queued. Returns the
        1-based position."""
        name = job_name(job)
        running = {running} if isinstance(running, str) else set(running or ())
        with self._lock:
            if name in running or name in (job_name(j) for j in self._jobs):
                raise UserError(f"Duplicated LoRA name: {name!r} is already running or queued; change save_lora_name")
            self._jobs.append(job)
            self._forget_interrupted(name)  # queued again: it will run, so it is no longer just "interrupted"
            self._write()
            return len(self._jobs)

    def pop(self, running: bool = False) -> Job | None:
        """The first job, removed from the queue; with `running`, recorded as running in the same write."""
        with self._lock:
            if not self._jobs:
                return None
            job = self._jobs.pop(0)
            if running:
                self._running.append(job)
                self._forget_interrupted(job_name(job))
            self._write()
            return job

    def delete(self, name: str) -> Job:
        """Remove the queued job called `name` (any position, the first included), or dismiss an interrupted one."""
        name = str(name or "").strip()
        with self._lock:
            for i, job in enumerate(self._jobs):
                if job_name(job) == name:
                    del self._jobs[i]
                    self._write()
                    return job
            for job in self._interrupted:
                if job_name(job) == name:
                    self._forget_interrupted(name)
                    self._write()
                    return job
        raise UserError(f"no queued job named {name!r}")


def _one_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0][:160] or type(err).__name__
