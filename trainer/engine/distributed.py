"""Data-parallel training on torch.distributed through accelerate: who this process is among the launched ones,
what it trains on, and what it shares.

`accelerate launch -m trainer train …` (or `--devices`, trainer/launch.py) starts one process per device. Every
process loads the model and trains the same network; each step's batch is drawn by all of them identically (the
same generators, so the same items, noise and timesteps) and each takes its own contiguous share of the rows; DDP
all-reduces the gradients, so N processes at per-device batch B train as one process at batch N·B. Rank 0 alone
caches the training data (the others receive it), saves, logs and samples. A single process (no launcher, or a
prompt mode) never imports accelerate and never touches torch.distributed: `SINGLE` is an identity.
"""

from __future__ import annotations

import dataclasses
import os

import torch


def launched_processes() -> int:
    """How many processes the launcher started (torchrun's WORLD_SIZE; 1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


@dataclasses.dataclass(frozen=True)
class World:
    """This process among the launched ones. `accelerator` is accelerate's, only when there are several."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None
    accelerator: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- the batch ---------------------------------------------------------------------------------------------
    def global_batch(self, per_device: int) -> int:
        return per_device * self.size

    def fill(self, rows: list, per_device: int) -> list:
        """The rows of one global batch, repeated from its start when a bucket's last batch is short, so every
        process gets `per_device` rows (torch's DistributedSampler pads the same way). One process: unchanged."""
        if self.size == 1 or not rows:
            return rows
        want = self.global_batch(per_device)
        return [rows[i % len(rows)] for i in range(want)]

    def share(self, x):
        """This process's contiguous share of a global batch (a tensor's first dimension, or a list)."""
        if self.size == 1:
            return x
        n = len(x)
        if n % self.size:
            raise ValueError(f"a batch of {n} rows cannot be split over {self.size} processes")
        per = n // self.size
        return x[self.rank * per:(self.rank + 1) * per]

    # -- the step ----------------------------------------------------------------------------------------------
    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` in DDP (accelerate's prepare_model): its forward must run the step, so the gradients of its
        parameters are all-reduced in backward. One process: the module itself."""
        if self.size == 1:
            return module
        return self.accelerator.prepare_model(module, device_placement=False)

    def combine(self, loss: torch.Tensor, stop: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean loss over the processes and whether any asked to stop, in one all-reduce (every process then
        ends at the same step: a process that stopped alone would leave the others waiting in the next one)."""
        flag = torch.tensor(float(stop), device=loss.device)
        if self.size == 1:
            return loss.detach().float().reshape(1), flag.reshape(1)
        import torch.distributed as dist

        both = torch.stack([loss.detach().float(), flag])
        dist.all_reduce(both, op=dist.ReduceOp.SUM)
        return (both[0] / self.size).reshape(1), both[1].reshape(1)

    # -- what rank 0 makes and the others receive ----------------------------------------------------------------
    def broadcast(self, value):
        """Rank 0's `value` on every process (pickled; tensors travel on the CPU)."""
        if self.size == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box = [to_device(value, "cpu") if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def wait(self) -> None:
        if self.size > 1:
            self.accelerator.wait_for_everyone()


SINGLE = World()


def from_environment(device: str | None = None) -> World:
    """The World of a process a launcher started (WORLD_SIZE > 1): accelerate sets up the process group — gloo on
    the CPU, NCCL on CUDA — and picks this process's device; `device` ("cpu" or "cuda"), when given, is the kind
    the launch asked for. Otherwise SINGLE."""
    if launched_processes() == 1:
        return SINGLE
    from accelerate import Accelerator

    cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu)  # DDP's defaults: every adapter takes part in every step
    return World(rank=accelerator.process_index, size=accelerator.num_processes, device=accelerator.device,
                 accelerator=accelerator)


class StepModule(torch.nn.Module):
    """The one thing DDP wraps: the network (its parameters are the ones reduced) and a forward that runs the mode's
    step on this process's share of the batch. The frozen model is not a submodule (nothing of it is broadcast)."""

    def __init__(self, network: torch.nn.Module, mode, ctx):
        super().__init__()
        self.network = network
        self._run = [mode, ctx]  # not modules: kept out of DDP's view

    def forward(self, index: int):
        mode, ctx = self._run
        out = mode.step(ctx, index)
        return out.pred, out.target, out.timesteps, out.mask


def to_device(value, device):
    """`value` with every tensor in it (nested in lists, tuples, dicts and dataclasses) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list):
        return [to_device(v, device) for v in value]
    if isinstance(value, tuple):
        return tuple(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: to_device(getattr(value, f.name), device)
                                             for f in dataclasses.fields(value) if f.init})
    return value


def prepare_shared(mode, ctx) -> None:
    """mode.prepare on rank 0; the other processes receive what it cached and the generators' states after it, so
    every process draws the same batches, noise and timesteps from then on."""
    world = ctx.world
    if world.size == 1:
        mode.prepare(ctx)
        return
    if world.is_main:
        mode.prepare(ctx)
        payload = {"data": mode.shared_data(), "generator": ctx.generator.get_state(), "rng": ctx.rng.getstate(),
                   "torch": torch.get_rng_state()}
    else:
        payload = None
    payload = world.broadcast(payload)
    if not world.is_main:
        ctx.generator.set_state(payload["generator"])
        ctx.rng.setstate(payload["rng"])
        torch.set_rng_state(payload["torch"])
        mode.adopt_shared(ctx, to_device(payload["data"], ctx.device))
