"""Peak resident memory of whole LoRA runs, and the engine's own estimate of what a run needs.

    python bench/memory.py [--size full|tiny] [--steps 2]

Each configuration runs in a fresh subprocess (load the checkpoint → cache latents → train → save) and reports
its peak RSS (VmHWM). Default: the full SD1.5 architecture with random weights, written once to a scratch
folder as fp16 (as released checkpoints are), trained in fp32 — 512² with and without gradient checkpointing,
and 256².
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import table  # noqa: E402

from trainer.networks.blocks import BLOCK_IDS  # noqa: E402

UNET_BLOCKS = [b for b in BLOCK_IDS if b != "BASE"]  # the text encoder frozen: the lean, common LoRA setup

RUN = r"""
import sys, json, re, time
from pathlib import Path
from trainer.host.standalone import StandaloneHost
from trainer.runner import run_job
from trainer.settings import job_from_json
res, ckpt = sys.argv[3], sys.argv[4] == "1"
job, _ = job_from_json({"mode": "LoRA", "model": sys.argv[1], "lora_data_directory": sys.argv[2],
    "image_size(height, width)": res, "image_min_length": res, "train_iterations": sys.argv[6],
    "train_batch_size": "1", "save_lora_name": "mem", "save_overwrite": True, "train_model_precision": "fp32",
    "use_gradient_checkpointing": ckpt,
    "network_blocks(BASE = TextEncoder)": sys.argv[7].split(",")})
t0 = time.time()
run_job(job, StandaloneHost(lora_dir=Path(sys.argv[5])))
# VmHWM, not ru_maxrss: after fork+exec Linux carries the parent's peak into the child's ru_maxrss
peak_kib = int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"peak_gib": peak_kib / 2**20, "seconds": time.time() - t0}))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="full")
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    from trainer.demo_assets import ensure_sample_images
    from trainer.engine.memory import estimate, parameter_counts
    from trainer.models.demo import make_demo_model
    from trainer.settings import validate

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = make_demo_model("sd1", scratch / "model.safetensors", size=args.size)
        for res, ckpt in (("512", False), ("512", True), ("256", False)):
            images = ensure_sample_images(scratch / f"images{res}", size=int(res))
            proc = subprocess.run([sys.executable, "-c", RUN, str(model), str(images), res, "1" if ckpt else "0",
                                   str(scratch / "out"), str(args.steps), ",".join(UNET_BLOCKS)],
                                  capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("{")), None)
            if line is None:
                raise RuntimeError(proc.stderr[-3000:])
            measured = json.loads(line)
            s = validate({"image_size(height, width)": res, "train_batch_size": "1", "train_model_precision": "fp32",
                          "use_gradient_checkpointing": ckpt, "network_blocks(BASE = TextEncoder)": UNET_BLOCKS})
            guess = estimate(parameter_counts(model), s, device="cpu")
            rows.append((f"{res}², checkpointing {'on' if ckpt else 'off'}", f"{measured['peak_gib']:.2f}",
                         f"{guess['total_gib']:.2f}", f"{measured['seconds']:.0f}"))
    print(f"SD1.5 architecture ({args.size}), random weights from an fp16 file, fp32 training, batch 1, "
          f"{args.steps} steps, UNet LoRA (lierla rank 16)")
    print(table(rows, ("run", "peak RSS GiB", "engine estimate GiB", "seconds")))


if __name__ == "__main__":
    main()
