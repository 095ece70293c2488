"""Training states (`save_state`, `resume`): what a stopped run needs to go on exactly as if it had not stopped.

With `save_state` on, each periodic save and a Stop-and-Save also write `<LoRA file stem>-state/` beside the LoRA,
one folder that appears whole or not at all (fileio.atomic_folder):

    network.safetensors   the pass's trainable tensors in their training dtype (`network.state_dict()`)
    kept<N>.safetensors   earlier passes' networks held on under this one (Difference's copier), kohya keys
    training.pt           optimizer, schedule and loss-scaler state, the RNG states, the mode's data order
    log.csv               the CSV log's rows so far (when the run logs one), so the resumed run's log is whole
    job.json              the job as it was started (upstream's JSON; `resume` points here): a settings file
    state.json            step, pass, seed, device, model fingerprints, loss EMA and losses; a sha256 per file

`resume` continues one. `continue_job` refuses, before any model loads, a folder that is not a whole state, or one
whose job differs in anything that changes the maths (MAY_DIFFER lists what may differ); `TrainingStates.restore`
loads it into the freshly built network, optimizer and schedule, and the engine goes on at the next step.
training.pt is read with `torch.load(weights_only=True)`: tensors and plain containers, never code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import UserError
from ..fileio import atomic_folder
from ..modes.registry import mode_class
from ..settings import TABLE, Job, job_from_json

log = logging.getLogger(__name__)

STATE_SUFFIX = "-state"
FORMAT = 1
STATE_FILE, JOB_FILE, NETWORK_FILE, TRAINING_FILE, LOG_FILE = (
    "state.json", "job.json", "network.safetensors", "training.pt", "log.csv")
# What changes no step's maths: what is saved and logged and how, previews and the evaluation loss (they draw from
# their own generators), the strength applied when saving, gradient checkpointing (it recomputes the same
# activations), the latent cache (the same posteriors, the same noise). train_seed is compared as the seed the run
# drew (-1 here: the state's).
MAY_DIFFER = frozenset({s.key for s in TABLE if s.key.startswith(("save_", "logging_", "sample_"))} | {
    "resume", "eval_every_n_steps", "network_strength", "use_gradient_checkpointing", "diff_save_1st_pass",
    "cache_latents_to_disk"})
JOB_FIELDS = ("original_prompt", "target_prompt", "original_image", "target_image")
NEW_RUN = "resume with the state's settings or start a new run"
CHOOSE = f"choose a <name>_<N>steps{STATE_SUFFIX} folder"


def state_folder(lora_path) -> Path:
    """`<dir>/<name>_5steps.safetensors` → `<dir>/<name>_5steps-state`."""
    lora_path = Path(lora_path)
    return lora_path.with_name(lora_path.stem + STATE_SUFFIX)


def job_file(folder) -> Path:
    """The settings a state was started with (`python -m trainer train --resume DIR` reads them)."""
    path = Path(folder) / JOB_FILE
    if not path.is_file():
        raise UserError(f"resume: {folder} is not a training state (no {JOB_FILE}); {CHOOSE}")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path) -> dict:
    """Name, size and the webui's old model hash (sha256 of the 64 KiB at 1 MiB, 8 hex digits): read in an instant,
    and different for any two checkpoints one would train on."""
    path = Path(path)
    with open(path, "rb") as f:
        f.seek(0x100000)
        digest = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    return {"name": path.name, "size": path.stat().st_size, "hash": digest}


def model_fingerprints(host, job: Job) -> dict:
    """The checkpoint's and the VAE's fingerprints, as the host resolves the job's model (the demo model included)."""
    with host.peek(job.model) as model:
        path = model.path if model is not None else host.resolve(job.model)
    vae = host.resolve(job.vae, "VAE") if job.vae else ""
    return {"model": file_fingerprint(path), "vae": file_fingerprint(vae) if vae else None}


# -- reading and checking ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SavedState:
    """A training state as read back from its folder, every file checked against its sha256."""

    folder: Path
    job: Job
    step: int  # steps done in its pass
    pass_number: int
    seed: int  # the seed the run drew (train_seed -1 picks one)
    device: str  # "cpu" / "cuda": generator states do not cross device types
    models: dict  # model_fingerprints
    loss_ema: float
    losses: tuple[float, ...]
    kept: tuple[str, ...]  # file names of earlier passes' networks, in pass order
    processes: int = 1  # of the data-parallel run that saved it (engine/distributed.py)


def read_state(folder) -> SavedState:
    """The state in `folder`; one line for a folder that is missing, not a state, incomplete or damaged."""
    folder = Path(folder)
    where = f"resume: {folder}"
    if not folder.is_dir():
        raise UserError(f"{where} is not a folder; {CHOOSE}")
    try:
        manifest = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where} is not a training state, or not a whole one (no {STATE_FILE}); {CHOOSE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{where} is damaged: {STATE_FILE} cannot be read ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UserError(f"{where}: {STATE_FILE} is not a training state of format {FORMAT} (this version's)")
    try:
        files = dict(manifest["files"])
        for name in (NETWORK_FILE, TRAINING_FILE, JOB_FILE, *manifest["kept"]):
            if name not in files:
                raise KeyError(name)
        for name, digest in files.items():
            if not (folder / name).is_file():
                raise UserError(f"{where} is incomplete: {name} is missing; {CHOOSE}")
            if sha256_of(folder / name) != digest:
                raise UserError(f"{where} is damaged: {name} does not match its checksum")
        job, _ = job_from_json(json.loads((folder / JOB_FILE).read_text(encoding="utf-8")), str(folder / JOB_FILE))
        return SavedState(folder, job, int(manifest["step"]), int(manifest["pass"]), int(manifest["seed"]),
                          str(manifest["device"]), dict(manifest["models"]), float(manifest["loss_ema"]),
                          tuple(float(x) for x in manifest["losses"]), tuple(manifest["kept"]),
                          int(manifest.get("processes", 1)))
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{where} is damaged: {STATE_FILE} lacks or garbles {err}") from None


def continue_job(job: Job, host, passes: list, processes: int = 1) -> tuple[list, SavedState | None]:
    """The passes to run and the state they continue (`resume`), every check made; (passes, None) without one.
    `processes`: of this (data-parallel) run, which must be the state's: the batches and their order depend on it."""
    if not job.settings.resume:
        return passes, None
    state = read_state(job.settings.resume)
    check_state(state, job, passes, torch.device(host.device).type, model_fingerprints(host, job))
    if state.processes != processes:
        raise UserError(f"resume: {state.folder.name} was trained on {state.processes} process(es), and this run "
                        f"has {processes}: the batches would differ; launch it as it was saved, or start a new run")
    return continue_passes(passes, state), state


def check_state(state: SavedState, job: Job, passes: list, device: str, models: dict) -> None:
    """Refuse, in one line, a state this job cannot continue exactly: another mode, no step left, another device
    type, a setting that changes the maths (all but MAY_DIFFER), other prompts or images, another model or VAE."""
    where, theirs = f"resume: {state.folder.name}", state.job
    if theirs.mode != job.mode:
        raise UserError(f"{where} is the state of a {theirs.mode} run, and this job is {job.mode}; {NEW_RUN}")
    ours = {p.number: p for p in passes}
    if state.pass_number in ours and state.step >= ours[state.pass_number].settings.train_iterations:
        raise UserError(f"{where} is at step {state.step}, and train_iterations is "
                        f"{ours[state.pass_number].settings.train_iterations} here: nothing is left to train")
    for p, q in zip(mode_class(theirs.mode)(theirs).passes(), passes):
        prefix = f"pass {q.number}'s " if q.number > 1 else ""
        difference = first_difference(p.settings, q.settings) or (
            f"train_seed is {p.seed} in the state and {q.seed} here" if q.number > 1 and p.seed != q.seed else None)
        if difference:
            raise UserError(f"{where}: {prefix}{difference}; {NEW_RUN}")
    seed = job.settings.train_seed
    if seed >= 0 and seed != state.seed:
        raise UserError(f"{where}: train_seed is {state.seed} in the state and {seed} here; {NEW_RUN}")
    for key in JOB_FIELDS:
        if getattr(theirs, key) != getattr(job, key):
            raise UserError(f"{where}: {key.replace('_', ' ')} is {getattr(theirs, key)!r} in the state and "
                            f"{getattr(job, key)!r} here; {NEW_RUN}")
    for what in ("model", "vae"):
        if _identity(state.models.get(what)) != _identity(models[what]):
            raise UserError(f"{where} was trained on the {what} {_shown_file(state.models.get(what))}, and this job "
                            f"uses {_shown_file(models[what])}; choose the state's {what} or start a new run")
    if state.device != device:
        raise UserError(f"{where} was saved on {state.device}, and this run is on {device}: its random number "
                        f"generators continue only there")
    if len(state.kept) != sum(p.keep for p in passes if p.number < state.pass_number):
        raise UserError(f"{where} is damaged: it holds {len(state.kept)} earlier network(s) for pass "
                        f"{state.pass_number}")


def first_difference(theirs, ours) -> str | None:
    """The first setting, in table order, that differs and changes the maths: "<key> is <a> in the state and <b>
    here" with the values as written; None when none does."""
    for setting in TABLE:
        key = setting.key
        if key in MAY_DIFFER or key == "train_seed" or getattr(theirs, key) == getattr(ours, key):
            continue
        return f"{key} is {_shown(theirs.raw[setting.name])} in the state and {_shown(ours.raw[setting.name])} here"
    return None


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or '""'
    return str(value) if str(value) != "" else '""'


def _identity(fingerprint: dict | None):
    return None if fingerprint is None else (fingerprint["size"], fingerprint["hash"])


def _shown_file(fingerprint: dict | None) -> str:
    return "(none)" if fingerprint is None else f"{fingerprint['name']} (hash {fingerprint['hash']})"


def continue_passes(passes: list, state: SavedState) -> list:
    """The job's passes as the state continues them: an earlier pass that stays on under later ones is loaded from
    the state (Difference's copier), any other earlier pass is skipped, and the state's pass starts after its step."""
    out, kept = [], iter(state.kept)
    for p in passes:
        if p.number < state.pass_number and p.keep:
            out.append(dataclasses.replace(p, resume=str(state.folder / next(kept)), train=False, save=False))
        elif p.number == state.pass_number:
            out.append(dataclasses.replace(p, start=state.step))
        elif p.number > state.pass_number:
            out.append(p)
    return out


# -- writing and restoring --------------------------------------------------------------------------------------------
def rng_states(ctx) -> dict:
    """Every random stream a step may draw from: the pass's generator and Python RNG, torch's global CPU RNG and,
    on CUDA, each device's."""
    states = {"generator": ctx.generator.get_state(), "python": ctx.rng.getstate(), "torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(ctx, states: dict) -> None:
    """Back to `rng_states(ctx)`, in place: the mode's data order holds the same `ctx.rng` object."""
    ctx.generator.set_state(states["generator"])
    ctx.rng.setstate(states["python"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


@dataclass(frozen=True)
class TrainingStates:
    """A job's training states: what each state it saves records (when `save`), and the state it continues
    (`loaded`). The runner makes one per job and a copy per pass (`for_pass`); the engine calls `restore` once the
    optimizer and schedule exist, and `write` beside each periodic and stop-and-save LoRA."""

    job: Job
    seed: int
    device: str
    models: dict
    save: bool
    loaded: SavedState | None = None
    pass_number: int = 1
    kept: tuple = ()  # networks of earlier passes held on under this one (Difference's copier)

    @classmethod
    def of_job(cls, job: Job, host, seed: int, loaded: SavedState | None) -> "TrainingStates | None":
        """None when the job neither saves nor continues a state."""
        if not job.settings.save_state and loaded is None:
            return None
        return cls(job, seed, torch.device(host.device).type, model_fingerprints(host, job), job.settings.save_state,
                   loaded)

    def for_pass(self, p, kept) -> "TrainingStates":
        return dataclasses.replace(self, pass_number=p.number, kept=tuple(kept))

    def restore(self, ctx, mode, optimizer, scheduler, scaler, log_csv) -> tuple[int, float | None, list[float]]:
        """Load the state into the pass just built — network, optimizer, schedule, loss scaler, RNGs, the mode's data
        order, the CSV rows so far — and return (steps done, loss EMA, losses); (0, None, []) for a fresh pass."""
        state = self.loaded
        if state is None or state.pass_number != self.pass_number:
            return 0, None, []
        try:
            ctx.network.load_state_dict(load_file(str(state.folder / NETWORK_FILE)))
        except RuntimeError as err:
            raise UserError(f"resume: {state.folder.name}'s network does not fit this job's "
                            f"({str(err).splitlines()[0][:160]})") from None
        try:
            training = torch.load(state.folder / TRAINING_FILE, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UserError(f"resume: {state.folder.name}/{TRAINING_FILE} holds more than tensors and plain values "
                            f"({str(err).splitlines()[0][:160]})") from None
        optimizer.load_state_dict(training["optimizer"])
        if hasattr(scheduler, "load_state_dict"):
            scheduler.load_state_dict(training["scheduler"])
        scaler.load_state_dict(training["scaler"])
        mode.load_state_dict(training["mode"])
        set_rng_states(ctx, training["rng"])
        if log_csv is not None and (state.folder / LOG_FILE).is_file():
            continue_log(log_csv.path, _read(state.folder / LOG_FILE))
        log.info("resumed from %s: pass %d, step %d", state.folder, state.pass_number, state.step)
        return state.step, state.loss_ema, list(state.losses)

    def write(self, lora_path, ctx, mode, optimizer, scheduler, scaler, step: int, ema: float, losses: list[float],
              log_csv) -> Path:
        """The state after `step` as `state_folder(lora_path)`, beside the LoRA just saved."""
        folder = state_folder(lora_path)
        kept = [f"kept{i}.safetensors" for i in range(1, len(self.kept) + 1)]
        try:
            with atomic_folder(folder, overwrite=ctx.settings.save_overwrite) as tmp:
                save_file(_on_cpu(ctx.network.state_dict()), str(tmp / NETWORK_FILE))
                for name, network in zip(kept, self.kept):
                    save_file(_on_cpu(network.save_tensors()), str(tmp / name))
                schedule = scheduler.state_dict() if hasattr(scheduler, "state_dict") else {}
                torch.save({"optimizer": optimizer.state_dict(), "scheduler": schedule, "scaler": scaler.state_dict(),
                            "rng": rng_states(ctx), "mode": mode.state_dict()}, tmp / TRAINING_FILE)
                if log_csv is not None:
                    (tmp / LOG_FILE).write_text(log_rows(log_csv.path), encoding="utf-8", newline="")
                job = {**self.job.to_json(), "resume": os.path.abspath(folder)}
                (tmp / JOB_FILE).write_text(json.dumps(job, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
                manifest = {"format": FORMAT, "step": step, "pass": self.pass_number, "seed": self.seed,
                            "device": self.device, "processes": ctx.world.size, "models": self.models,
                            "loss_ema": ema, "losses": list(losses), "kept": kept,
                            "files": {p.name: sha256_of(p) for p in sorted(tmp.iterdir())}}
                (tmp / STATE_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        except FileExistsError:
            raise UserError(f"{folder} already exists; tick save_overwrite or choose another save_lora_name") from None
        except OSError as err:
            raise UserError(f"{folder} not written: {err.strerror or err}") from None
        log.info("saved the training state %s", folder)
        return folder


def _on_cpu(tensors: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _read(path) -> str:
    """Text with its line ends as written (the CSV writer's are CRLF)."""
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def log_rows(path) -> str:
    """The CSV log from its column line on: the columns and the rows so far."""
    lines = _read(path).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("Step,"))
    return "".join(lines[start:])


def continue_log(path, saved: str) -> None:
    """Append a state's rows to the resumed run's new log, when its columns are the state's (else the log starts
    at the next step: e.g. the evaluation loss was turned on or off)."""
    columns, *rows = saved.splitlines(keepends=True)
    if log_rows(path) != columns:
        log.warning("the CSV log %s starts after the state's step: its columns differ from the state's", path)
        return
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.writelines(rows)
