"""Start-up: from a fresh Python to the first optimizer step of a LoRA run, ours against diffusers' pipeline path.

    python bench/startup.py [--size tiny|full] [--model CKPT] [--runs 3] [--cache-only]

Ours: `python -m trainer`'s path (read the checkpoint → components → cache latents of 8 images → step 1).
Reference: `StableDiffusionPipeline.from_single_file(CKPT, config=<local folder>)` → the same caching → one
step of the reference loop. Then `cache_latents_to_disk`: a first run (no cache yet: it encodes and writes the files
beside the images) against the same run repeated (it reads them, no VAE). Each run is a fresh subprocess (imports
count); the tables give median seconds. `--cache-only`: the second table only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import median, table  # noqa: E402

OURS = r"""
import sys, time, json
t0 = float(sys.argv[1])
from pathlib import Path
from trainer.engine.control import JobControl
from trainer.host.standalone import StandaloneHost
from trainer.runner import run_job
from trainer.settings import job_from_json
job, _ = job_from_json({"mode": "LoRA", "model": sys.argv[2], "lora_data_directory": sys.argv[3],
    "image_size(height, width)": sys.argv[4], "image_min_length": sys.argv[4], "train_iterations": "2",
    "train_batch_size": "1", "save_lora_name": "startup", "save_overwrite": True, "train_model_precision": "fp32",
    "cache_latents_to_disk": sys.argv[6] == "1",
    "network_blocks(BASE = TextEncoder)": [b for b in __import__("trainer.networks.blocks", fromlist=["x"]).BLOCK_IDS if b != "BASE"]})
control = JobControl()
marks = {}
def on_event(e):
    if e["kind"] == "phase" and e["text"].startswith("caching"):
        marks["loaded"] = time.time() - t0
    if e["kind"] == "step" and e["step"] == 1:
        print(json.dumps({"seconds": time.time() - t0, **marks}), flush=True)
        control.request_stop()
control.on_event = on_event
run_job(job, StandaloneHost(lora_dir=Path(sys.argv[5])), control)
"""

REFERENCE = r"""
import sys, time, json
t0 = float(sys.argv[1])
import torch
from pathlib import Path
from PIL import Image
from diffusers import StableDiffusionPipeline
sys.path.insert(0, sys.argv[6])
from reference import ReferenceLoop
pipe = StableDiffusionPipeline.from_single_file(sys.argv[2], config=sys.argv[5], local_files_only=True,
                                                torch_dtype=torch.float32, safety_checker=None)
loaded = time.time() - t0
size = int(sys.argv[4])
images = sorted(Path(sys.argv[3]).glob("*.png"))
with torch.no_grad():
    pixels = torch.stack([torch.from_numpy(__import__("numpy").asarray(Image.open(p).convert("RGB").resize((size, size))))
                          .permute(2, 0, 1).float() / 127.5 - 1 for p in images])
    latents = torch.cat([pipe.vae.encode(x[None]).latent_dist.sample() for x in pixels]) * pipe.vae.config.scaling_factor
    ids = pipe.tokenizer(["a photo"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = pipe.text_encoder(ids).last_hidden_state
cached = time.time() - t0
del pipe.vae
unet = pipe.unet.requires_grad_(False)
layers = [m for n, m in unet.named_modules() if ".attentions." in n and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
loop = ReferenceLoop(unet, layers, latents[:1], hidden, pipe.scheduler.alphas_cumprod.float())
loop.attach()
loop.step()
print(json.dumps({"seconds": time.time() - t0, "loaded": loaded, "cached": cached}), flush=True)
"""


def diffusers_folder(model: Path, folder: Path) -> Path:
    """A local diffusers pipeline folder (configs and tokenizer only) for `from_single_file(config=...)`."""
    sys.path.insert(0, str(ROOT))
    from trainer.models.components import load_components

    c = load_components(model, with_vae=True)
    c.unet.save_config(folder / "unet")
    c.vae.save_config(folder / "vae")
    c.text_encoders[0].config.save_pretrained(folder / "text_encoder")
    c.tokenizers[0].save_pretrained(folder / "tokenizer")
    c.noise_scheduler.save_config(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
    }), encoding="utf-8")
    return folder


def run(script: str, *args) -> dict:
    """Seconds from process start: "loaded" (components ready), "seconds" (step 1 done)."""
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", script, str(t0), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(proc.stderr[-3000:])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--model", help="an SD1.x checkpoint (default: a random one of --size, in a scratch folder)")
    p.add_argument("--res", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--cache-only", action="store_true", help="only the first-run / repeated-run comparison")
    args = p.parse_args()
    from trainer.demo_assets import ensure_sample_images
    from trainer.models.demo import make_demo_model

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = Path(args.model) if args.model else make_demo_model("sd1", scratch / f"{args.size}.safetensors",
                                                                     size=args.size)
        images = scratch / "images"
        ensure_sample_images(images, size=args.res)
        for src in list(images.glob("*.png")):  # 4 drawn images, twice: 8
            (images / f"copy_{src.name}").write_bytes(src.read_bytes())
        ours, theirs, first, repeated = [], [], [], []
        if not args.cache_only:
            config = diffusers_folder(model, scratch / "diffusers")
            for _ in range(args.runs):
                ours.append(run(OURS, model, images, args.res, scratch / "out", 0))
                theirs.append(run(REFERENCE, model, images, args.res, config, Path(__file__).parent))
        for _ in range(args.runs):
            for stale in images.glob("*.traintrain-cache.safetensors"):
                stale.unlink()
            first.append(run(OURS, model, images, args.res, scratch / "out", 1))
            repeated.append(run(OURS, model, images, args.res, scratch / "out", 1))
    print(f"{model.name} ({args.size}), 8 images at {args.res}px, {args.runs} runs each")
    a, b = median([r["seconds"] for r in repeated]), median([r["seconds"] for r in first])
    print(table([("start-up to step 1", f"{a:.2f}", f"{b:.2f}", f"{a / b:.3f}")],
                ("cache_latents_to_disk", "repeated run s", "first run s", "ratio")))
    if args.cache_only:
        return
    rows = []
    for label, key in (("imports + checkpoint → components", "loaded"), ("start-up to step 1", "seconds")):
        a, b = median([r[key] for r in ours]), median([r[key] for r in theirs])
        rows.append((label, f"{a:.2f}", f"{b:.2f}", f"{a / b:.3f}"))
    rest_ours = median([r["seconds"] - r["loaded"] for r in ours])
    rest_theirs = median([r["seconds"] - r["loaded"] for r in theirs])
    rows.append(("latents of 8 images + step 1", f"{rest_ours:.2f}", f"{rest_theirs:.2f}",
                 f"{rest_ours / rest_theirs:.3f}"))
    print(table(rows, ("measure", "ours s", "diffusers pipeline s", "ratio")))


if __name__ == "__main__":
    main()
