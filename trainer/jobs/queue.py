"""The job queue: FIFO, persisted in `json/queue.json` (upstream's JSON per job), so pending jobs survive a restart.

A job leaves the file when it starts. Names are `save_lora_name` ("" → "untitled"); a name may be queued once.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from ..errors import UserError
from ..fileio import write_json_atomic
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
        self._jobs: list[Job] = self._read()

    def _read(self) -> list[Job]:
        if not self.path.exists():
            return []
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8")).get("jobs", [])
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            log.warning("%s is not a queue file (%s); starting with an empty queue", self.path, err)
            return []
        jobs = []
        for entry in entries:
            try:
                jobs.append(job_from_json(entry, str(self.path))[0])
            except UserError as err:
                log.warning("dropped a queued job that no longer validates: %s", err)
        return jobs

    def _write(self) -> None:
        write_json_atomic(self.path, {"jobs": [job.to_json() for job in self._jobs]})

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def names(self) -> list[str]:
        with self._lock:
            return [job_name(j) for j in self._jobs]

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def add(self, job: Job, running: str | None = None) -> int:
        """Append; refuses a name that is running or already queued. Returns the 1-based position."""
        name = job_name(job)
        with self._lock:
            if name == running or name in (job_name(j) for j in self._jobs):
                raise UserError(f"Duplicated LoRA name: {name!r} is already running or queued; change save_lora_name")
            self._jobs.append(job)
            self._write()
            return len(self._jobs)

    def pop(self) -> Job | None:
        with self._lock:
            if not self._jobs:
                return None
            job = self._jobs.pop(0)
            self._write()
            return job

    def delete(self, name: str) -> Job:
        """Remove the queued job called `name` (any position, the first included)."""
        name = str(name or "").strip()
        with self._lock:
            for i, job in enumerate(self._jobs):
                if job_name(job) == name:
                    del self._jobs[i]
                    self._write()
                    return job
        raise UserError(f"no queued job named {name!r}")
