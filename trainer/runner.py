"""A job from start to file: settings → checks → components (from the host) → mode.prepare → the mode's passes,
each a network trained by the engine (or loaded) → the final file, the quality report and the job's message.

Everything that is checkable without loading a model (output name, existing files, data folder, resume files) is
checked first, so a bad input costs nothing and never leaves a partial file. The mode contract is modes/base.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import preflight
from .engine.control import Event, JobControl, Status
from .engine.distributed import SINGLE, World, prepare_shared
from .engine.hooks import StepHook, keeps_vae
from .engine.loop import run_engine
from .engine.saving import last_good_file, save_lora
from .engine.state import TrainingStates, continue_job, state_folder
from .engine.types import Output, Result, TrainContext, Trained, save_points
from .errors import UserError
from .fileio import remove_stale_temps, reserve_name, write_json_atomic
from .host.base import Host
from .jobs.logs import LossLog, csv_path
from .models.devices import PRECISIONS
from .modes.base import Mode, Pass
from .modes.registry import mode_class
from .networks.io import NonFiniteTensors, read_lora
from .networks.network import Network, NetworkSpec, create_network, resume_network
from .paths import JSON_DIR
from .reports import headline_metadata, report_summary, write_report
from .settings import Job

log = logging.getLogger(__name__)


_GLOBAL_RNG = threading.Lock()  # torch's global generator: jobs training at once (a worker per device) take turns


@contextlib.contextmanager
def seeded_global_rng(seed: int, device: torch.device):
    """torch's global generator seeded with `seed` for a block (the network's initial weights), then restored, one
    job at a time: a job's weights depend on its seed only, not on another job training beside it."""
    forked = [device] if device.type == "cuda" else []
    with _GLOBAL_RNG, torch.random.fork_rng(devices=forked, device_type=device.type if forked else "cuda"):
        torch.manual_seed(seed)
        yield


def pick_seed(seed: int) -> int:
    return seed if seed >= 0 else random.SystemRandom().randint(0, 2**32 - 1)


def model_dtype(name: str) -> torch.dtype | None:
    return None if name == "model" else PRECISIONS[name]


def pass_output(base: Output, p: Pass) -> Output:
    return dataclasses.replace(base, suffix=p.suffix, overwrite=p.settings.save_overwrite, extra_metadata={})


def pass_paths(output: Output, p: Pass) -> list[Path]:
    """The final and periodic files a pass writes (after the step it starts from), and their training states."""
    if not p.train:
        return []
    s = p.settings
    paths = [output.path()] if p.save else []
    periodic = [output.path(n) for n in sorted(save_points(s.train_iterations, s.save_per_steps)) if n > p.start]
    return paths + periodic + ([state_folder(path) for path in periodic] if s.save_state else [])


def check_outputs(output: Output, p: Pass) -> None:
    """Refuse, before loading, a final or periodic file of this pass that exists (unless save_overwrite)."""
    if output.overwrite:
        return
    for path in pass_paths(output, p):
        if path.exists():
            raise UserError(f"{path} already exists; tick save_overwrite or choose another save_lora_name")


def uncached_output(base: Output, passes: list[Pass]) -> tuple[Output, str]:
    """Forge applies a LoRA it applied before under the same file name without reading the file again
    (forge-api.md F6), so there a run that would overwrite a file saves under the next free name instead:
    <name>_2, <name>_3, … Returns the output and a line for the message ("" when the name is kept)."""
    def taken(output: Output) -> bool:
        return any(path.exists() for p in passes for path in pass_paths(pass_output(output, p), p))

    if not base.overwrite or not taken(base):
        return base, ""
    n = 2
    while taken(dataclasses.replace(base, name=f"{base.name}_{n}")):
        n += 1
    renamed = dataclasses.replace(base, name=f"{base.name}_{n}")
    return renamed, (f"Saved as {renamed.path().name}, not over {base.path().name}: Forge would keep applying the "
                     "old file under its old name.")


def check_resume(p: Pass) -> None:
    if p.resume and not Path(p.resume).is_file():
        raise UserError(f"network_resume: {p.resume} is not a file")


def save_job_json(job: Job, when: datetime.datetime, json_dir: Path = JSON_DIR) -> Path:
    name = job.settings.save_lora_name or "untitled"
    path = Path(json_dir) / when.strftime("%Y%m%d") / f"{name}-{when.strftime('%Y%m%d_%H%M%S')}.json"
    return write_json_atomic(path, job.to_json())


def network_spec(s, blocks) -> NetworkSpec:
    return NetworkSpec(network_type=s.network_type, rank=s.network_rank, alpha=s.network_alpha,
                       conv_rank=s.network_conv_rank, conv_alpha=s.network_conv_alpha, element=s.network_element,
                       blocks=tuple(blocks))


def run_job(job: Job, host: Host, control: JobControl | None = None, logs_dir: Path | None = None,
            json_dir: Path | None = None, world: World = SINGLE) -> Result:
    """`world`: this process of a data-parallel launch (engine/distributed.py); rank 0 alone writes files."""
    control = control or JobControl()
    s = job.settings
    mode: Mode = mode_class(job.mode)(job)
    if world.size > 1 and not mode.data_parallel:
        raise UserError(f"{job.mode} trains on one device; launch it as one process (data-parallel training is "
                        f"for LoRA and Multi-ADDifT)")
    mode.check_inputs(Path(host.lora_dir))
    base = Output(directory=Path(host.lora_dir), name=s.save_lora_name, overwrite=s.save_overwrite, mode=job.mode,
                  model_name=Path(job.model).stem if job.model else "demo")
    base.path()  # validates the name before anything is loaded
    passes, resumed = continue_job(job, host, mode.passes(), world.size)  # `resume`: checked before any load
    renamed = ""
    if getattr(host, "caches_lora_files", False):
        base, renamed = uncached_output(base, passes)
    for p in passes:
        check_outputs(pass_output(base, p), p)
        check_resume(p)
    preflight_checks(job, host, passes, base.directory)
    if not world.is_main:  # rank 0 reserves the name and writes the files; this process only trains
        return _run_reserved(job, host, control, mode, base, passes, logs_dir, json_dir, resumed, world)
    remove_stale_temps(base.directory)  # left by a run that was killed while saving
    with reserve_name(base.path()):  # a second job of this name is refused here, until this one ends
        if renamed:
            log.warning("%s", renamed)
        result = _run_reserved(job, host, control, mode, base, passes, logs_dir, json_dir, resumed, world)
    return dataclasses.replace(result, message=f"{result.message}\n{renamed}") if renamed else result


def preflight_checks(job: Job, host: Host, passes: list[Pass], lora_dir: Path) -> None:
    """What else can be refused before loading: the folder, each pass's optimizer/schedule and resume family,
    and whether the job fits the device's memory."""
    preflight.check_output_dir(lora_dir)
    resident, freed = host.holds(job.model), host.freed_bytes(job.model)
    with host.peek(job.model) as model:
        for p in passes:
            preflight.check_resume_family(p.resume, model)
            if p.train:
                preflight.check_optimizer(p.settings)
                preflight.check_memory(p.settings, model, torch.device(host.device), resident, freed)


def _run_reserved(job: Job, host: Host, control: JobControl, mode: Mode, base: Output, passes: list[Pass],
                  logs_dir: Path | None, json_dir: Path | None, resumed=None, world: World = SINGLE) -> Result:
    s = job.settings
    started = datetime.datetime.now()
    if s.save_as_json and world.is_main:
        log.info("settings saved to %s", save_job_json(job, started, json_dir or JSON_DIR))

    seed = resumed.seed if resumed else pick_seed(s.train_seed)
    with _GLOBAL_RNG:
        torch.manual_seed(seed)
    device = torch.device(host.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)  # the job's own peak, for its message and CSV header
    control.emit(Event.PHASE, text="loading the model…")
    components = host.load_components(job.model, model_dtype(s.train_model_precision),
                                      PRECISIONS[s.train_VAE_precision], True if s.model_v_pred else None, job.vae)
    log.info("%s", components.summary())
    for note in components.notes:
        log.warning("%s", note)
    ctx = TrainContext(
        components=components, settings=s, device=device, model_dtype=components.dtype,
        lora_dtype=PRECISIONS[s.train_lora_precision], seed=seed, generator=torch.Generator(device).manual_seed(seed),
        rng=random.Random(seed),
        alpha_bar=components.noise_scheduler.alphas_cumprod.to(device=device, dtype=torch.float32), world=world,
    )
    if device.type == "cuda" and ctx.lora_dtype == torch.float16:
        log.warning("train_lora_precision fp16: gradients are not loss-scaled (torch's GradScaler cannot unscale "
                    "fp16 weights), so small ones may vanish; fp32 is safer")
    hooks = job_hooks(job, mode, base, host) if world.is_main else []  # previews and evaluation: rank 0's
    ctx.keep_vae = keeps_vae(hooks)
    for hook in hooks:
        hook.before_prepare(ctx)
    control.emit(Event.PHASE, text="caching the training data…")
    prepare_shared(mode, ctx)  # one process of a data-parallel run caches; the others receive it
    components.unet.to(device)
    for encoder in components.text_encoders:
        encoder.to(device)
    base.tag_frequency, base.resolution = mode.tag_frequency, mode.resolution
    logs = PassLogs(s.logging_save_csv and world.is_main, started, logs_dir)
    result = run_passes(ctx, mode, passes, base, control, logs, hooks, TrainingStates.of_job(job, host, seed, resumed))
    notes = list(components.notes)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        notes.append(f"Peak GPU memory: {peak:.2f} GiB ({device})")
        for opened in logs.opened:
            opened.add_header("peak_gpu_memory_gib", f"{peak:.2f}")
    if notes:
        result = dataclasses.replace(result, message="\n".join([result.message, *notes]))
    return result


def job_hooks(job: Job, mode: Mode, output: Output, host: Host | None = None) -> list[StepHook]:
    """What runs beside the steps of this job (engine/hooks.py), from its settings; none by default. Previews render
    through the host's own generation where it offers one (Host.preview_renderer)."""
    s = job.settings
    hooks: list[StepHook] = []
    if s.eval_every_n_steps > 0:
        from .engine.evaluation import EvalLoss

        hooks.append(EvalLoss(job, mode))
    if s.sample_every_n_steps >= 0:
        from .sampling.previews import Previews

        renderer = getattr(host, "preview_renderer", None)
        hooks.append(Previews(job, mode, output, renderer(job) if renderer else None))
    return hooks


def run_passes(ctx: TrainContext, mode: Mode, passes: list[Pass], base: Output, control: JobControl,
               logs: "PassLogs", hooks: list[StepHook] = (), states: TrainingStates | None = None) -> Result:
    """Each pass in order; a pass that does not finish ends the job. Kept networks stay on (frozen) until the end.
    `states`: the training states the passes save and the one they continue (engine/state.py)."""
    kept: list[Network] = []
    result = None
    try:
        for p in passes:
            ctx = pass_context(ctx, p)
            mode.begin_pass(ctx, p)
            ctx.network = attach_network(ctx, p)
            for hook in hooks:
                hook.begin_pass(ctx, p, p is passes[-1])
            try:
                result = run_pass(ctx, mode, p, pass_output(base, p), control, logs, last=p is passes[-1],
                                  hooks=hooks, states=states.for_pass(p, kept) if states else None)
            finally:
                if p.keep:
                    freeze(ctx.network)
                    kept.append(ctx.network)
                else:
                    ctx.network.detach()
            if result.status != Status.FINISHED:
                break
    finally:
        for network in reversed(kept):
            network.detach()
    control.emit(Event.DONE, status=result.status, path=str(result.path) if result.path else None,
                 message=result.message, report=result.report)
    return result


def pass_context(ctx: TrainContext, p: Pass) -> TrainContext:
    """The context of a pass: its settings, and fresh generators when it is re-seeded."""
    if not p.reseed:
        return dataclasses.replace(ctx, settings=p.settings, network=None)
    seed = ctx.seed if p.seed is None else p.seed
    return dataclasses.replace(ctx, settings=p.settings, seed=seed, network=None,
                               generator=torch.Generator(ctx.device).manual_seed(seed), rng=random.Random(seed))


def attach_network(ctx: TrainContext, p: Pass) -> Network:
    """A new network for the pass's settings and blocks, or the one saved in `p.resume`; attached after any
    network already attached."""
    c = ctx.components
    if p.resume:
        tensors, _ = read_lora(p.resume)
        network = resume_network(c.family, c.unet, c.text_encoders, tensors, p.resume, dtype=ctx.lora_dtype,
                                 device=ctx.device)
    else:
        with seeded_global_rng(ctx.seed, ctx.device):
            network = create_network(c.family, c.unet, c.text_encoders, network_spec(ctx.settings, p.blocks),
                                     dtype=ctx.lora_dtype, device=ctx.device)
    if ctx.settings.logging_verbose:
        for adapter in network.adapters:
            log.info("  %s (rank %d)", adapter.lora_name, adapter.rank)
    return network


def freeze(network: Network) -> None:
    network.requires_grad_(False)
    network.eval()
    network.multiplier = 1.0


def run_pass(ctx: TrainContext, mode: Mode, p: Pass, output: Output, control: JobControl, logs: "PassLogs",
             last: bool, hooks: list[StepHook] = (), states: TrainingStates | None = None) -> Result:
    """Train (or only load) the pass's network; then the hooks' end of pass; when it finished: the mode's
    end-of-pass hook, the quality report of the last pass, the final save."""
    started_at = time.time()
    if p.train:
        trained = run_engine(ctx, mode, output, control, started_at=started_at, log_csv=logs.open(ctx, output.suffix),
                             hooks=hooks, states=states)
    else:
        log.info("pass %d: loaded from %s", p.number, p.resume)
        trained = Trained(Status.FINISHED, 0, [], optimizer=None)
    extras, lines = {}, []
    for hook in hooks:
        values = dict(hook.end_pass(ctx, p, trained.steps, trained.status == Status.FINISHED))
        if values.get("message"):
            lines.append(values.pop("message"))
        extras.update(values)
    tail = "".join(f"\n{line}" for line in lines)
    if trained.status == Status.STOPPED_SAVED:
        return Result(trained.status, trained.path, trained.steps, trained.losses,
                      f"Stopped at step {trained.steps}. Successfully created {trained.path}{tail}", extras=extras)
    if trained.status == Status.STOPPED:
        return Result(trained.status, None, trained.steps, trained.losses, f"Stopped at step {trained.steps}{tail}",
                      extras=extras)
    mode.end_pass(ctx, p)
    if not ctx.world.is_main:
        return Result(Status.FINISHED, None, trained.steps, trained.losses, f"Trained {trained.steps} steps as "
                      f"process {ctx.world.rank} of {ctx.world.size}; process 0 saves the file")
    report = mode.quality_report(ctx) if last else None
    if report is not None:
        output.extra_metadata.update(headline_metadata(report))
    path = None
    if p.save and p.train:
        try:
            path = save_lora(ctx, output, trained.optimizer, trained.steps, started_at)
        except NonFiniteTensors as err:
            raise UserError(f"{err} (after step {trained.steps}; {last_good_file(output, p.settings, trained.steps)})"
                            ) from None
        if report is not None:
            write_report(report, path)
    message = f"Successfully created {path}" if path else f"Finished {trained.steps} steps (not saved)"
    if report is not None:
        message += "\n" + report_summary(report)
    return Result(Status.FINISHED, path, trained.steps, trained.losses, message + tail, report, extras)


@dataclass
class PassLogs:
    """CSV logs per pass (`<name>-<time>.csv`, Difference's copier `<name>_copy-<time>.csv`)."""

    enabled: bool
    started: datetime.datetime
    logs_dir: Path | None = None
    opened: list = dataclasses.field(default_factory=list)  # the LossLogs of the passes so far

    def open(self, ctx: TrainContext, suffix: str = ""):
        if not self.enabled:
            return None
        s = ctx.settings
        header = {**s.raw, "model_version": ctx.components.family.model_version}
        kwargs = {"logs_dir": self.logs_dir} if self.logs_dir else {}
        path = csv_path(s.save_lora_name or "untitled", self.started, suffix=suffix, **kwargs)
        extra = ("eval_loss",) if s.eval_every_n_steps > 0 else ()
        self.opened.append(LossLog(path, header, len(ctx.network.param_groups(1.0)), extra))
        return self.opened[-1]
