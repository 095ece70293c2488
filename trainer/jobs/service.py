"""The training service behind the tab: one worker thread runs a started job, then the queue, FIFO.

The UI only submits jobs (`start`, `enqueue`), asks to stop, and reads `status()` — a plain snapshot it can render.
Every job gets its own JobControl (no global stop flag); errors end the job with a one-line message and the worker
moves on to the next queued job.

The running job stays recorded in the queue file until it ends; one left there by a process that died is reported
as interrupted (`RunStatus.interrupted`, and the state "interrupted" while nothing else has run) and is not re-run.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..engine.control import Event, JobControl, Status
from ..errors import UserError
from ..host.base import Host
from ..paths import JSON_DIR, LOGS_DIR
from ..settings import Job
from .queue import JobQueue, job_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunStatus:
    """What the UI shows about the current (or last) job."""

    name: str = ""
    mode: str = ""
    state: str = "idle"  # idle | interrupted | loading | training | finished | stopped | error
    step: int = 0
    total: int = 0
    loss_ema: float | None = None
    lrs: tuple = ()
    elapsed: float = 0.0
    eta: float = 0.0
    message: str = ""
    path: str | None = None
    history: tuple = ()  # (step, raw loss, loss EMA, *lrs) of the current pass
    eval_history: tuple = ()  # (step, evaluation loss) of the current pass, when eval_every_n_steps is set
    samples: tuple = ()  # paths of the job's sample-preview grids so far, oldest first
    queued: int = 0
    interrupted: tuple = ()  # names of jobs that were running when an earlier process died (not re-run)

    @property
    def busy(self) -> bool:
        return self.state in ("loading", "training")

    @property
    def percent(self) -> float:
        return 100.0 * self.step / self.total if self.total else 0.0


def prompt_tag(path) -> str:
    """How a prompt in the webui applies the file: `<lora:NAME:1>` (NAME is the file name without its suffix)."""
    return f"<lora:{Path(path).stem}:1>"


def clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def interrupted_notice(names) -> str:
    if not names:
        return ""
    listed = ", ".join(f"'{n}'" for n in names)
    were, it = ("was", "it") if len(names) == 1 else ("were", "them")
    return (f"Interrupted: {listed} {were} running when TrainTrain stopped and did not finish; not re-run. "
            f"Start {it} again to train (Delete in the Queue tab dismisses this).")


def describe(status: RunStatus) -> str:
    """The Message-box text for a status: progress while a job runs, its result afterwards."""
    queued = f"\n{status.queued} job(s) waiting in the queue" if status.queued else ""
    if status.interrupted and status.state != "interrupted":
        queued += "\n" + interrupted_notice(status.interrupted)
    if status.state == "idle":
        return "Ready." + queued
    if status.state == "loading":
        return f"{status.mode} '{status.name}': {status.message}" + queued
    if status.state == "training":
        lr = f"{status.lrs[-1]:.2e}" if status.lrs else "-"
        ema = f"{status.loss_ema:.5f}" if status.loss_ema is not None else "-"
        return (f"{status.mode} '{status.name}': step {status.step}/{status.total} ({status.percent:.0f}%) · "
                f"loss EMA {ema} · lr {lr} · elapsed {clock(status.elapsed)} · ETA {clock(status.eta)}" + queued)
    return status.message + queued


@dataclass
class _Run:
    job: Job
    control: JobControl
    status: RunStatus
    history: list = field(default_factory=list)
    eval_history: list = field(default_factory=list)
    samples: list = field(default_factory=list)


class TrainingService:
    def __init__(self, host: Host, queue_file: Path = JSON_DIR / "queue.json", logs_dir: Path = LOGS_DIR,
                 json_dir: Path = JSON_DIR, resume_queue: bool = True, run_job=None):
        from ..runner import run_job as default_run_job

        self.host = host
        self.logs_dir = Path(logs_dir)
        self.json_dir = Path(json_dir)
        self.queue = JobQueue(queue_file)
        self._run_job = run_job or default_run_job
        self._lock = threading.Lock()
        self._run: _Run | None = None  # the job running now, or the last one (for its result)
        self._worker: threading.Thread | None = None
        for job in self.queue.interrupted():
            log.warning("job %r was interrupted when TrainTrain stopped; start it again to train it", job_name(job))
        if resume_queue and len(self.queue):
            log.info("resuming %d queued job(s) from %s", len(self.queue), self.queue.path)
            self._ensure_worker(None)

    # -- what the UI calls -------------------------------------------------------------------------------------------
    def start(self, job: Job) -> str:
        with self._lock:
            if self._busy():
                raise UserError(f"'{self._run.status.name}' is running; press Add to Queue to run this job after it")
            self._ensure_worker(job)
        return f"Started {job.mode} '{job_name(job)}'."

    def enqueue(self, job: Job) -> str:
        with self._lock:
            running = self._run.status.name if self._busy() else None
            position = self.queue.add(job, running=running)
            self._ensure_worker(None)
        return f"Added '{job_name(job)}' to the queue (position {position})."

    def stop(self, save: bool) -> str:
        with self._lock:
            if not self._busy():
                return "No job is running."
            self._run.control.request_stop(save=save)
            name = self._run.status.name
        return f"Stopping '{name}' after this step" + (" and saving it." if save else " (not saved).")

    def delete(self, name: str) -> str:
        job = self.queue.delete(name)
        return f"Removed '{job_name(job)}' from the queue."

    def status(self) -> RunStatus:
        interrupted = tuple(job_name(j) for j in self.queue.interrupted())
        with self._lock:
            status = self._run.status if self._run else RunStatus()
            history = tuple(self._run.history) if self._run else ()
            eval_history = tuple(self._run.eval_history) if self._run else ()
            samples = tuple(self._run.samples) if self._run else ()
        if self._run is None and interrupted:
            status = replace(status, state="interrupted", message=interrupted_notice(interrupted))
        return replace(status, history=history, eval_history=eval_history, samples=samples, queued=len(self.queue),
                       interrupted=interrupted)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker has nothing left to do (tests, CLI). True if it finished in time."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    # -- the worker ----------------------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return self._worker is not None  # cleared by the worker itself, under the lock, when the queue is empty

    def _ensure_worker(self, first: Job | None) -> None:
        """Caller holds the lock. Starts the worker if it is not running (it then takes `first`, else the queue)."""
        if self._busy():
            return
        if first is None and not len(self.queue):
            return
        if first is not None:  # show it as busy from this moment, before the thread has started
            self._run = self._new_run(first)
        self._worker = threading.Thread(target=self._work, args=(first,), name="traintrain-worker", daemon=True)
        self._worker.start()

    def _new_run(self, job: Job) -> _Run:
        control = JobControl(external_interrupt=self.host.interrupted, external_skip=self.host.skipped)
        run = _Run(job, control, RunStatus(name=job_name(job), mode=job.mode, state="loading",
                                           message="loading the model and caching the training data…"))
        control.on_event = lambda event, run=run: self._on_event(run, event)
        return run

    def _work(self, job: Job | None) -> None:
        while True:
            with self._lock:  # popping and retiring under the lock: an enqueue never falls between the two
                if job is None:
                    job = self.queue.pop(running=True)  # kept in the file as "running" until it ends
                    if job is None:
                        self._worker = None
                        return
                    self._run = self._new_run(job)
                else:
                    self.queue.mark_running(job)
                run = self._run
            try:
                self._execute(run)
            finally:
                self.queue.mark_ended()
            job = None

    def _execute(self, run: _Run) -> None:
        try:
            with self.host.job_context(run.job):
                result = self._run_job(run.job, self.host, run.control, self.logs_dir, self.json_dir)
            state = "finished" if result.status == Status.FINISHED else "stopped"
            message = result.message + (f"\nIn a prompt: {prompt_tag(result.path)}" if result.path else "")
            self._set(run, state=state, message=message, path=str(result.path) if result.path else None)
        except UserError as err:
            self._set(run, state="error", message=f"Error: {err}")
        except Exception as err:  # noqa: BLE001 — the boundary: keep the worker alive, show one line, log the rest
            log.exception("training job %r failed", run.status.name)
            self._set(run, state="error", message=f"Error: {type(err).__name__}: {err} (details in the console)")

    def _set(self, run: _Run, **changes) -> None:
        with self._lock:
            run.status = replace(run.status, **changes)

    def _on_event(self, run: _Run, event: dict) -> None:
        try:
            self.host.report(event)  # the host's own progress display (the webui's shared.state, its Lora list)
        except Exception:  # noqa: BLE001 — a display must never end a training job
            log.exception("the host could not show a %s event", event["kind"])
        kind = event["kind"]
        if kind == Event.STEP:
            lrs = tuple(event["lrs"])
            with self._lock:
                if event["step"] == 1:  # a new pass (Difference trains twice): plot the pass that runs
                    run.history.clear()
                    run.eval_history.clear()
                run.history.append((event["step"], event["loss"], event["loss_ema"], *lrs))
                if event.get("eval_loss") is not None:
                    run.eval_history.append((event["step"], event["eval_loss"]))
                run.samples.extend(event.get("samples") or ())
                run.status = replace(run.status, state="training", step=event["step"], total=event["total"],
                                     loss_ema=event["loss_ema"], lrs=lrs, elapsed=event["elapsed"],
                                     eta=event["eta"])
        elif kind == Event.PHASE:
            self._set(run, message=event["text"])

