"""The mode contract. The runner calls, in order:

    mode = Mode(job)
    mode.check_inputs(lora_dir)      before anything loads: every input check that needs no model
    mode.prepare(ctx)                cache what the steps use (latents, conditionings); free what they don't
    for p in mode.passes():          plain data: which network each pass trains (or loads), and where it goes
        mode.begin_pass(ctx, p)
        ... the runner attaches p's network; the engine calls mode.step(ctx, i) p.settings.train_iterations times
        mode.end_pass(ctx, p)        after a finished pass (Difference measures its copier here)
    mode.quality_report(ctx)         after the last pass, before its final save (None: no report)
    mode.state_dict()                its iteration state, saved with a training state (load_state_dict resumes)
    mode.eval_outputs(ctx, g, ts)    the evaluation loss's batches, when eval_every_n_steps is set
    mode.shared_data() / adopt_shared(ctx, data)   a data-parallel mode's cache, from rank 0 to the other processes

A mode never drives the engine or the runner itself; `StepOutput` and `TrainContext` are all it needs of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..engine.types import StepOutput, TrainContext
from ..networks.blocks import BASE


@dataclass(frozen=True)
class Pass:
    """One network: trained by one engine run, or only loaded from `resume` (`train=False`)."""

    settings: object  # settings.Settings of this pass
    blocks: tuple[str, ...]  # the network_blocks it trains (a mode may drop BASE)
    resume: str = ""  # start from this saved LoRA instead of a new network
    train: bool = True
    suffix: str = ""  # of the output file name ("_copy": Difference's copier)
    save: bool = True  # write the final file; False: a later pass uses the network, nobody keeps it
    keep: bool = False  # after the pass: freeze the network at multiplier 1 and keep it on under later passes
    reseed: bool = False  # start fresh generators from `seed` (else the previous pass's carry on)
    seed: int | None = None  # None: the job's seed
    number: int = 1  # 1-based, for logs and the CSV file name
    start: int = 0  # steps already done: a training state's (`resume`); the engine goes on at start + 1

    @property
    def trains_text_encoder(self) -> bool:
        return BASE in self.blocks


class Mode:
    """Defaults for every hook; a mode overrides `prepare` and `step` and what else it needs."""

    name = ""
    resolution: tuple[int, int] | None = None  # (height, width) for the metadata; None: the family's
    tag_frequency: dict | None = None  # caption tags → count (`ss_tag_frequency`)
    data_parallel = False  # a dataset mode several processes can share out (engine/distributed.py)

    def __init__(self, job):
        self.job = job
        self.trains_text_encoder = BASE in self.blocks()

    def blocks(self) -> tuple[str, ...]:
        """The blocks the (first) network trains."""
        return tuple(self.job.settings.network_blocks)

    def check_inputs(self, lora_dir: Path) -> None:
        """Refuse bad inputs (UserError, one line) before any model is loaded."""

    def prepare(self, ctx: TrainContext) -> None:
        raise NotImplementedError

    def shared_data(self) -> dict:
        """What prepare cached (tensors, captions), sent from rank 0 to the other processes of a data-parallel
        run; `adopt_shared` takes it there instead of preparing again."""
        raise NotImplementedError(f"{self.name} does not train on several processes")

    def adopt_shared(self, ctx: TrainContext, data: dict) -> None:
        raise NotImplementedError(f"{self.name} does not train on several processes")

    def passes(self) -> list[Pass]:
        """One pass with the job's settings, continuing `network_resume` when it is set."""
        s = self.job.settings
        return [Pass(settings=s, blocks=self.blocks(), resume=s.network_resume)]

    def begin_pass(self, ctx: TrainContext, p: Pass) -> None:
        """Called before the pass's network is attached."""

    def step(self, ctx: TrainContext, index: int) -> StepOutput:
        raise NotImplementedError

    def end_pass(self, ctx: TrainContext, p: Pass) -> None:
        """Called after a pass that finished all its steps."""

    def eval_outputs(self, ctx: TrainContext, generator, t_values: list[int]) -> list[StepOutput]:
        """The evaluation loss's batches, every item at every timestep of `t_values` (quality.timestep_rows),
        noised only from `generator`: what a training step predicts and regresses onto, on fixed data, never drawing
        from the training streams."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What the steps have consumed of the data (e.g. the batches still due this epoch), for a training state
        (engine/state.py); {} for a mode whose step depends only on its index and the context's generators."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`, after `prepare`."""

    def quality_report(self, ctx: TrainContext) -> dict | None:
        return None
