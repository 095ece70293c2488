"""Seconds per LoRA step: ours (the real engine) against the reference loop, side by side in one process.

    python bench/step_time.py [--family sd1|sdxl] [--size tiny|small|full] [--res 256] [--batch 1] [--steps 20]

Timed chunks alternate (ours, reference, ours, …) after a warm-up; the table gives median seconds per step and
ours/reference. Also: our iLECO step over its floor (2 UNet forwards + 1 backward), and our step with gradient
checkpointing. fp32, rank 16, AdamW, cached latents and conditionings — on the CPU here, CUDA where present.
"""

from __future__ import annotations

import argparse
import random
import time

from models import build, median, table  # noqa: I001  (bench/ is a folder of scripts)

import torch

from bench.reference import ReferenceLoop
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


def settings(args, mode="LoRA", blocks=None):
    raw = {"network_rank": 16, "network_alpha": 8, "train_batch_size": str(args.batch), "train_learning_rate": "1e-4",
           "train_optimizer": "AdamW", "train_lr_scheduler": "constant", "train_model_precision": "fp32",
           "image_size(height, width)": str(args.res)}
    if blocks is not None:
        raw["network_blocks(BASE = TextEncoder)"] = blocks
    return validate(raw, mode)


def context(c, s):
    return TrainContext(components=c, settings=s, device=torch.device("cpu"), model_dtype=torch.float32,
                        lora_dtype=torch.float32, seed=0, generator=torch.Generator().manual_seed(0),
                        rng=random.Random(0), alpha_bar=c.noise_scheduler.alphas_cumprod.float())


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
    args = p.parse_args()
    torch.manual_seed(0)
    c = build(args.family, args.size)
    unet_blocks = [b for b in validate().network_blocks if b != "BASE"]
    s = settings(args, blocks=unet_blocks)
    latents, hidden, pooled = cached_inputs(c, args)
    c.vae = None
    per_chunk = max(1, args.steps // args.chunks)

    # ours: the real LoRA mode step through the engine
    ctx = context(c, s)
    mode = LoRAMode(Job("LoRA", s))
    mode.buckets = [Bucket((args.res, args.res), latents, ["a photo"] * args.batch, hidden,
                           pooled, None, list(range(args.batch)))]
    mode.batches = BucketBatches([args.batch], args.batch, random.Random(0))
    ctx.network = create_network(c.family, c.unet, c.text_encoders, NetworkSpec(blocks=tuple(unet_blocks)))
    optimizer = build_optimizer("AdamW", ctx.network.param_groups(1e-4), ctx.network, 1e-4, {})
    scheduler = build_scheduler("constant", optimizer, 10**6, s, {})
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    ours_step = lambda: train_step(ctx, mode, 0, optimizer, scheduler, scaler)  # noqa: E731
    ctx.network.detach()

    layers = [t.module for t in select_targets(c.family, c.unet, c.text_encoders, "lierla", blocks=unet_blocks)]
    added = None
    if c.family.is_sdxl:
        added = {"text_embeds": pooled,
                 "time_ids": torch.tensor([[args.res, args.res, 0, 0, args.res, args.res]] * args.batch).float()}
    reference = ReferenceLoop(c.unet, layers, latents, hidden, ctx.alpha_bar, added=added)

    ours, ref = [], []
    for chunk in range(args.chunks + 1):
        ctx.network.attach()
        t = time_steps(ours_step, per_chunk)
        ctx.network.detach()
        reference.attach()
        r = time_steps(reference.step, per_chunk)
        reference.detach()
        if chunk:  # chunk 0 is the warm-up
            ours += t
            ref += r
    rows = [("LoRA step (lierla, UNet)", f"{median(ours):.4f}", f"{median(ref):.4f}",
             f"{median(ours) / median(ref):.3f}")]

    # gradient checkpointing
    ctx.network.attach()
    enable_gradient_checkpointing(c.unet, [])
    ckpt = time_steps(ours_step, per_chunk * args.chunks)[1:]
    c.unet.disable_gradient_checkpointing()
    c.unet.eval()
    rows.append(("LoRA step, gradient checkpointing", f"{median(ckpt):.4f}", f"{median(ours):.4f}",
                 f"{median(ckpt) / median(ours):.3f} (vs without)"))

    # iLECO: our step against its floor (2 forwards + 1 backward through the same LoRA'd UNet)
    ileco = ILECOMode(Job("iLECO", settings(args, "iLECO", unet_blocks), original_prompt="a photo"))
    ileco.orig = ileco.targ = (hidden[:1], pooled[:1] if pooled is not None else None)
    ileco.latents = latents
    ileco_ctx = context(c, ileco.job.settings)
    ileco_ctx.network = ctx.network

    def floor():
        t = torch.randint(0, 1000, (args.batch,))
        size = (args.res, args.res)
        with torch.no_grad(), ctx.network.at(0.0):
            target = common.predict(ileco_ctx, latents, t, *ileco.targ, size)
        with ctx.network.at(1.0):
            pred = common.predict(ileco_ctx, latents, t, *ileco.orig, size)
        torch.nn.functional.mse_loss(pred, target).backward()
        for p in ctx.network.parameters():
            p.grad = None

    ileco_step = lambda: train_step(ileco_ctx, ileco, 0, optimizer, scheduler, scaler)  # noqa: E731
    time_steps(floor, 1), time_steps(ileco_step, 1)
    f_times, i_times = [], []
    for _ in range(args.chunks):
        f_times += time_steps(floor, per_chunk)
        i_times += time_steps(ileco_step, per_chunk)
    rows.append(("iLECO step vs its floor", f"{median(i_times):.4f}", f"{median(f_times):.4f}",
                 f"{median(i_times) / median(f_times):.3f}"))
    ctx.network.detach()

    print(f"{c.source}, {args.res}px, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, {args.chunks} chunks x {per_chunk} steps")
    print(table(rows, ("measure", "ours s/step", "reference s/step", "ratio")))


if __name__ == "__main__":
    main()
