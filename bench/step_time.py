"""Seconds per LoRA step: ours (the real engine) against two reference loops, side by side in one process.

    python bench/step_time.py [--family sd1|sdxl] [--size tiny|small|full] [--res 256] [--batch 1] [--steps 20]
                              [--device cuda|cpu|cuda:1] [--precision fp32|fp16|bf16]

Timed chunks alternate (ours, references, ours, …) after a warm-up; the table gives median seconds per step and the
ratios: ours / the hand-written loop (bench/reference.py, fp32 only) and ours / the plain diffusers + peft loop
(bench/reference_peft.py: autocast and GradScaler in half precision, as users write it). Also: our iLECO step over
its floor (2 UNet forwards + 1 backward), and our step with gradient checkpointing. On CUDA each row gives the peak
GPU memory of its steps (torch.cuda.max_memory_allocated) and the last line the engine's estimate for the job.
Rank 16, AdamW, cached latents and conditionings. --device: CUDA when present (default), else the CPU;
--precision: the UNet's dtype (default fp16 on CUDA, fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import random
import time

from models import build, median, table  # noqa: I001  (bench/ is a folder of scripts)

import torch

from bench.reference import ReferenceLoop
from bench.reference_peft import PeftLoop
from trainer.engine.memory import RUNTIME_OVERHEAD_GIB, estimate
from trainer.data.batches import BucketBatches
from trainer.engine.loop import enable_gradient_checkpointing, train_step
from trainer.engine.types import TrainContext
from trainer.engine.optim import build_optimizer, build_scheduler
from trainer.modes import common
from trainer.modes.ileco import ILECOMode
from trainer.modes.lora import Bucket, LoRAMode
from trainer.networks.network import NetworkSpec, create_network
from trainer.networks.targets import select_targets
from trainer.settings import Job, validate


PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def settings(args, mode="LoRA", blocks=None):
    raw = {"network_rank": 16, "network_alpha": 8, "train_batch_size": str(args.batch), "train_learning_rate": "1e-4",
           "train_optimizer": "AdamW", "train_lr_scheduler": "constant", "train_model_precision": args.precision,
           "image_size(height, width)": str(args.res), "image_min_length": str(min(args.res, 512))}
    if blocks is not None:
        raw["network_blocks(BASE = TextEncoder)"] = blocks
    return validate(raw, mode)


def context(c, s, device, dtype):
    return TrainContext(components=c, settings=s, device=device, model_dtype=dtype,
                        lora_dtype=torch.float32, seed=0, generator=torch.Generator(device).manual_seed(0),
                        rng=random.Random(0), alpha_bar=c.noise_scheduler.alphas_cumprod.float().to(device))


class Peak:
    """Peak GPU memory over the steps timed for each row (nothing on the CPU)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.gib = {}

    def around(self, key, fn):
        def run():
            if self.cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            if self.cuda:
                torch.cuda.synchronize(self.device)  # the step's kernels are done before the clock stops
                peak = torch.cuda.max_memory_allocated(self.device) / 2**30
                self.gib[key] = max(self.gib.get(key, 0.0), peak)
        return run

    def of(self, key) -> str:
        return f"{self.gib[key]:.2f}" if key in self.gib else "-"


def counts_of(c) -> dict:
    """The engine estimate's inputs (engine/memory.py), counted from the modules instead of a checkpoint."""
    n = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    return {"unet": n([c.unet]), "text": n(c.text_encoders), "vae": n([c.vae]) if c.vae is not None else 0,
            "model_channels": c.unet.config.block_out_channels[0]}


def cached_inputs(c, args):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(args.batch, 4, args.res // 8, args.res // 8, generator=g)
    with torch.no_grad():
        ids = c.tokenizers[0](["a photo"] * args.batch, padding="max_length", max_length=77,
                              return_tensors="pt").input_ids
        hidden = torch.cat([te(ids, output_hidden_states=True).hidden_states[-2 if c.family.is_sdxl else -1]
                            for te in c.text_encoders], dim=-1)
        pooled = c.text_encoders[-1](ids).text_embeds if c.family.is_sdxl else None
    return latents, hidden, pooled


def time_steps(fn, n) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="sd1", choices=("sd1", "sdxl"))
    p.add_argument("--size", default="tiny", choices=("tiny", "small", "full"))
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--chunks", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", choices=tuple(PRECISIONS), help="the UNet's dtype (default: fp16 on CUDA, else fp32)")
    args = p.parse_args()
    device = torch.device(args.device)
    args.precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    dtype = PRECISIONS[args.precision]
    torch.manual_seed(0)
    c = build(args.family, args.size)
    unet_blocks = [b for b in validate().network_blocks if b != "BASE"]
    s = settings(args, blocks=unet_blocks)
    latents, hidden, pooled = cached_inputs(c, args)  # on the CPU in fp32, then moved
    counts = counts_of(c)
    c.vae = None
    c.unet.to(device, dtype)
    latents, hidden = latents.to(device), hidden.to(device, dtype)
    pooled = pooled.to(device, dtype) if pooled is not None else None
    per_chunk = max(1, args.steps // args.chunks)
    peak = Peak(device)

    # ours: the real LoRA mode step through the engine
    ctx = context(c, s, device, dtype)
    mode = LoRAMode(Job("LoRA", s))
    mode.buckets = [Bucket((args.res, args.res), latents, ["a photo"] * args.batch, hidden,
                           pooled, None, list(range(args.batch)))]
    mode.batches = BucketBatches([args.batch], args.batch, random.Random(0))
    ctx.network = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=tuple(unet_blocks)),
                                 device=device)
    optimizer = build_optimizer("AdamW", ctx.network.param_groups(1e-4), ctx.network, 1e-4, {})
    scheduler = build_scheduler("constant", optimizer, 10**6, s, {})
    scaler = torch.amp.GradScaler(device.type, enabled=ctx.needs_loss_scaling)
    ours_step = peak.around("ours", lambda: train_step(ctx, mode, 0, optimizer, scheduler, scaler))
    ctx.network.detach()

    targets = select_targets(c.family, c.unet, c.text_encoders, "lierla", blocks=unet_blocks)
    names = {id(m): n for n, m in c.unet.named_modules()}
    added = None
    if c.family.is_sdxl:
        added = {"text_embeds": pooled, "time_ids": torch.tensor(
            [[args.res, args.res, 0, 0, args.res, args.res]] * args.batch, device=device, dtype=dtype)}
    references = {}
    if dtype == torch.float32:  # hooks of fp32 adapters on the layers: the plain fp32 loop only
        references["hand-written"] = ReferenceLoop(c.unet, [t.module for t in targets], latents, hidden,
                                                   ctx.alpha_bar, added=added)
    references["diffusers + peft"] = PeftLoop(c.unet, [names[id(t.module)] for t in targets], latents, hidden,
                                              ctx.alpha_bar, added=added, dtype=dtype)

    ours, ref = [], {name: [] for name in references}
    for chunk in range(args.chunks + 1):
        ctx.network.attach()
        t = time_steps(ours_step, per_chunk)
        ctx.network.detach()
        times = {}
        for name, loop in references.items():
            loop.attach()
            times[name] = time_steps(peak.around(name, loop.step), per_chunk)
            loop.detach()
        if chunk:  # chunk 0 is the warm-up
            ours += t
            for name in references:
                ref[name] += times[name]
    rows = [(f"LoRA step (lierla, UNet) vs {name}", f"{median(ours):.4f}", f"{median(ref[name]):.4f}",
             f"{median(ours) / median(ref[name]):.3f}", peak.of("ours"), peak.of(name)) for name in references]

    # gradient checkpointing
    ctx.network.attach()
    enable_gradient_checkpointing(c.unet, [])
    ckpt = time_steps(peak.around("checkpointing", ours_step), per_chunk * args.chunks)[1:]
    c.unet.disable_gradient_checkpointing()
    c.unet.eval()
    rows.append(("LoRA step, gradient checkpointing", f"{median(ckpt):.4f}", f"{median(ours):.4f}",
                 f"{median(ckpt) / median(ours):.3f} (vs without)", peak.of("checkpointing"), peak.of("ours")))

    # iLECO: our step against its floor (2 forwards + 1 backward through the same LoRA'd UNet)
    ileco = ILECOMode(Job("iLECO", settings(args, "iLECO", unet_blocks), original_prompt="a photo"))
    ileco.orig = ileco.targ = (hidden[:1], pooled[:1] if pooled is not None else None)
    ileco.latents = latents
    ileco_ctx = context(c, ileco.job.settings, device, dtype)
    ileco_ctx.network = ctx.network

    def floor():
        t = torch.randint(0, 1000, (args.batch,), device=device)
        size = (args.res, args.res)
        with torch.no_grad(), ctx.network.at(0.0), ileco_ctx.autocast():
            target = common.predict(ileco_ctx, latents, t, *ileco.targ, size)
        with ctx.network.at(1.0), ileco_ctx.autocast():
            pred = common.predict(ileco_ctx, latents, t, *ileco.orig, size)
        torch.nn.functional.mse_loss(pred.float(), target.float()).backward()
        for p in ctx.network.parameters():
            p.grad = None

    ileco_step = peak.around("iLECO", lambda: train_step(ileco_ctx, ileco, 0, optimizer, scheduler, scaler))
    floor = peak.around("floor", floor)
    time_steps(floor, 1), time_steps(ileco_step, 1)
    f_times, i_times = [], []
    for _ in range(args.chunks):
        f_times += time_steps(floor, per_chunk)
        i_times += time_steps(ileco_step, per_chunk)
    rows.append(("iLECO step vs its floor", f"{median(i_times):.4f}", f"{median(f_times):.4f}",
                 f"{median(i_times) / median(f_times):.3f}", peak.of("iLECO"), peak.of("floor")))
    ctx.network.detach()

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{c.source}, {args.res}px, batch {args.batch}, {args.precision} UNet, {where}, torch {torch.__version__}, "
          f"{args.chunks} chunks x {per_chunk} steps")
    print(table(rows, ("measure", "ours s/step", "reference s/step", "ratio", "ours peak GiB", "ref peak GiB")))
    if device.type == "cuda":
        guess = estimate(counts, s, str(device))
        print(f"engine estimate for this job (shown at Start): {guess['total_gib'] - RUNTIME_OVERHEAD_GIB:.2f} GiB "
              f"on the GPU (weights {guess['weights_gib']:.2f}, adapters {guess['adapters_gib']:.2f}, activations "
              f"{guess['activations_gib']:.2f}); measured peak of our step {peak.of('ours')} GiB")


if __name__ == "__main__":
    main()
