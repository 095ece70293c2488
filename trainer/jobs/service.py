"""The training service behind the tab: a worker thread per device runs a started job, then the queue, FIFO.

One device unless the standalone app is given several (`ui --devices cuda:0,cuda:1`): then each device has its own
worker, and queued jobs start on whichever device is free, so two jobs train at once. The status shown is that of
the job started last (Stop stops it, or another device's job once it has ended); the others are listed beside it
with their devices.

The UI only submits jobs (`start`, `enqueue`), asks to stop, and reads `status()` — a plain snapshot it can render.
Every job gets its own JobControl (no global stop flag); errors end the job with a one-line message and the worker
moves on to the next queued job.

The running job stays recorded in the queue file until it ends; one left there by a process that died is reported
as interrupted (`RunStatus.interrupted`, and the state "interrupted" while nothing else has run) and is not re-run.
"""

from __future__ import annotations

import logging
import threading
import time
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
    device: str = ""  # where this job trains, when the service has several devices
    others: tuple = ()  # (name, device, step, total) of the other jobs running now, on the other devices
    idle_devices: int = 1  # devices with no job: Start can run one now

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
    queued = "".join(f"\nAlso running: '{name}' on {device}" + (f", step {step}/{total}" if total else "")
                     for name, device, step, total in status.others)
    queued += f"\n{status.queued} job(s) waiting in the queue" if status.queued else ""
    if status.interrupted and status.state != "interrupted":
        queued += "\n" + interrupted_notice(status.interrupted)
    if status.state == "idle":
        return "Ready." + queued
    on = f" on {status.device}" if status.device else ""
    if status.state == "loading":
        return f"{status.mode} '{status.name}'{on}: {status.message}" + queued
    if status.state == "training":
        lr = f"{status.lrs[-1]:.2e}" if status.lrs else "-"
        ema = f"{status.loss_ema:.5f}" if status.loss_ema is not None else "-"
        return (f"{status.mode} '{status.name}'{on}: step {status.step}/{status.total} ({status.percent:.0f}%) · "
                f"loss EMA {ema} · lr {lr} · elapsed {clock(status.elapsed)} · ETA {clock(status.eta)}" + queued)
    return status.message + queued


def device_labels(devices) -> list[str]:
    """How the status and the Queue tab name each device: its name, numbered when it is listed twice (cpu#1)."""
    names = [str(d) for d in devices]
    return [f"{n}#{names[:i + 1].count(n)}" if names.count(n) > 1 else n for i, n in enumerate(names)]


@dataclass
class _Run:
    job: Job
    control: JobControl
    status: RunStatus
    history: list = field(default_factory=list)
    eval_history: list = field(default_factory=list)
    samples: list = field(default_factory=list)


@dataclass
class _Slot:
    """One device: the host that trains there, its worker thread while it has work, and its current or last run."""

    host: Host
    device: str = ""  # shown in the status and the Queue tab; "" with a single device
    worker: threading.Thread | None = None
    run: _Run | None = None


class TrainingService:
    def __init__(self, host: Host, queue_file: Path = JSON_DIR / "queue.json", logs_dir: Path = LOGS_DIR,
                 json_dir: Path = JSON_DIR, resume_queue: bool = True, run_job=None, devices=None):
        """`devices`: several devices of the standalone app, each with a worker (`host.on_device(d)` trains there);
        None: the host's one device."""
        from ..runner import run_job as default_run_job

        self.host = host
        self.logs_dir = Path(logs_dir)
        self.json_dir = Path(json_dir)
        self.queue = JobQueue(queue_file)
        self._run_job = run_job or default_run_job
        self._lock = threading.Lock()
        if devices and len(devices) > 1:
            self._slots = [_Slot(host.on_device(d), label) for d, label in zip(devices, device_labels(devices))]
        else:
            self._slots = [_Slot(host.on_device(devices[0]) if devices else host)]
        self._shown: _Run | None = None  # the job started last: the one the status describes and Stop stops
        for job in self.queue.interrupted():
            log.warning("job %r was interrupted when TrainTrain stopped; start it again to train it", job_name(job))
        if resume_queue and len(self.queue):
            log.info("resuming %d queued job(s) from %s", len(self.queue), self.queue.path)
            with self._lock:
                self._dispatch(None)

    @property
    def devices(self) -> list[str]:
        return [slot.device for slot in self._slots]

    # -- what the UI calls -------------------------------------------------------------------------------------------
    def start(self, job: Job) -> str:
        with self._lock:
            if not self._idle():
                busy = [slot.run.status.name for slot in self._slots if slot.run]
                if len(self._slots) == 1:
                    raise UserError(f"'{busy[0]}' is running; press Add to Queue to run this job after it")
                raise UserError(f"every device is training ({', '.join(repr(n) for n in busy)}); press Add to Queue "
                                "to run this job on the first one free")
            slot = self._dispatch(job)
        return f"Started {job.mode} '{job_name(job)}'" + (f" on {slot.device}." if slot.device else ".")

    def enqueue(self, job: Job) -> str:
        with self._lock:
            running = {slot.run.status.name for slot in self._slots if slot.worker is not None and slot.run}
            position = self.queue.add(job, running=running)
            self._dispatch(None)
        return f"Added '{job_name(job)}' to the queue (position {position})."

    def stop(self, save: bool) -> str:
        with self._lock:
            run = self._shown
            if run is None or not self._running(run):  # the job shown has ended: another device's, if one runs
                run = next((slot.run for slot in self._slots if slot.worker is not None and slot.run), None)
            if run is None:
                return "No job is running."
            run.control.request_stop(save=save)
            name = run.status.name
        return f"Stopping '{name}' after this step" + (" and saving it." if save else " (not saved).")

    def delete(self, name: str) -> str:
        job = self.queue.delete(name)
        return f"Removed '{job_name(job)}' from the queue."

    def running(self) -> list[tuple[Job, str]]:
        """The jobs training now and their devices ("" with a single device), in device order."""
        with self._lock:
            return [(slot.run.job, slot.device) for slot in self._slots if slot.worker is not None and slot.run]

    def status(self) -> RunStatus:
        interrupted = tuple(job_name(j) for j in self.queue.interrupted())
        with self._lock:
            run = self._shown
            status = run.status if run else RunStatus()
            history = tuple(run.history) if run else ()
            eval_history = tuple(run.eval_history) if run else ()
            samples = tuple(run.samples) if run else ()
            others = tuple((slot.run.status.name, slot.device, slot.run.status.step, slot.run.status.total)
                           for slot in self._slots if slot.worker is not None and slot.run and slot.run is not run)
            idle = sum(slot.worker is None for slot in self._slots)
        if run is None and interrupted:
            status = replace(status, state="interrupted", message=interrupted_notice(interrupted))
        return replace(status, history=history, eval_history=eval_history, samples=samples, queued=len(self.queue),
                       interrupted=interrupted, others=others, idle_devices=idle)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every worker has nothing left to do (tests, CLI). True if they finished in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                workers = [slot.worker for slot in self._slots if slot.worker is not None]
            if not workers:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            workers[0].join(left)

    # -- the workers ---------------------------------------------------------------------------------------------
    def _idle(self) -> list[_Slot]:
        return [slot for slot in self._slots if slot.worker is None]

    def _running(self, run: _Run) -> bool:
        return any(slot.run is run and slot.worker is not None for slot in self._slots)

    def _dispatch(self, first: Job | None) -> _Slot | None:
        """Caller holds the lock. `first` on the first idle device (returned); then as many idle devices as there
        are queued jobs get a worker, which takes them from the queue."""
        idle = self._idle()
        slot = None
        if first is not None:
            slot = idle.pop(0)
            slot.run = self._shown = self._new_run(first, slot)  # busy from this moment, before the thread starts
            self._start_worker(slot, first)
        for spare in idle[:len(self.queue)]:
            self._start_worker(spare, None)
        return slot

    def _start_worker(self, slot: _Slot, first: Job | None) -> None:
        name = "traintrain-worker" + (f"-{slot.device}" if slot.device else "")
        slot.worker = threading.Thread(target=self._work, args=(slot, first), name=name, daemon=True)
        slot.worker.start()

    def _new_run(self, job: Job, slot: _Slot) -> _Run:
        control = JobControl(external_interrupt=slot.host.interrupted, external_skip=slot.host.skipped)
        run = _Run(job, control, RunStatus(name=job_name(job), mode=job.mode, state="loading", device=slot.device,
                                           message="loading the model and caching the training data…"))
        control.on_event = lambda event, run=run, host=slot.host: self._on_event(run, host, event)
        return run

    def _work(self, slot: _Slot, job: Job | None) -> None:
        while True:
            with self._lock:  # popping and retiring under the lock: an enqueue never falls between the two
                if job is None:
                    job = self.queue.pop(running=True)  # kept in the file as "running" until it ends
                    if job is None:
                        slot.worker = None
                        return
                    slot.run = self._shown = self._new_run(job, slot)
                else:
                    self.queue.mark_running(job)
                run = slot.run
            try:
                self._execute(run, slot.host)
            finally:
                self.queue.mark_ended(run.job)
            job = None

    def _execute(self, run: _Run, host: Host) -> None:
        try:
            with host.job_context(run.job):
                result = self._run_job(run.job, host, run.control, self.logs_dir, self.json_dir)
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

    def _on_event(self, run: _Run, host: Host, event: dict) -> None:
        try:
            host.report(event)  # the host's own progress display (the webui's shared.state, its Lora list)
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

