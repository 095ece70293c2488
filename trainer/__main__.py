"""Command line: `python -m trainer <command>`. Errors print one line and exit 2; no tracebacks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import UserError

PRECISION_CHOICES = ("fp32", "bf16", "fp16")


def cmd_make_demo_model(args) -> int:
    from .models.demo import make_demo_model
    from .models.devices import PRECISIONS

    out = make_demo_model(args.family, args.out, seed=args.seed, dtype=PRECISIONS[args.dtype],
                          v_prediction=args.v_prediction, size=args.size)
    print(out)
    return 0


def cmd_info(args) -> int:
    from .demo_assets import ensure_demo_model
    from .models.components import load_components
    from .models.devices import PRECISIONS, default_device

    model = args.model
    if not model:
        model = ensure_demo_model()
        print(f"no --model given: using the bundled demo model {model} (random weights)")
    v_pred = {"auto": None, "v": True, "eps": False}[args.prediction]
    components = load_components(model, dtype=PRECISIONS[args.precision], device=default_device(),
                                 v_prediction=v_pred)
    print(components.summary())
    return 0


def cmd_inspect(args) -> int:
    import json

    from .networks.io import inspect_lora

    report = inspect_lora(args.lora, model=args.model, family_name=args.family)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    unmatched, non_finite = report["unmatched"], report["non_finite"]
    if non_finite["count"]:
        print(f"warning: {non_finite['count']} tensor(s) are not finite (NaN or infinite), first: "
              f"{non_finite['keys'][0]}; the file is broken", file=sys.stderr)
    return 1 if any(unmatched.values()) or non_finite["count"] else 0


DEMO_OVERRIDES = ["train_iterations=60", "image_size(height, width)=64", "image_min_length=64",
                  "image_buckets_step=64", "train_learning_rate=1e-3", "save_lora_name=demo", "save_overwrite=true",
                  "logging_save_csv=true"]


def cmd_train(args) -> int:
    import json
    import os
    import signal
    from pathlib import Path

    from .demo_assets import ensure_sample_images
    from .engine.control import Event, JobControl, Status
    from .host.standalone import StandaloneHost
    from .paths import PRESETS_DIR
    from .runner import run_job
    from .settings import apply_overrides, job_from_json

    assignments = list(args.set or [])
    if args.config:
        config = Path(args.config)
        data = read_config(config)
    elif args.resume:
        from .engine.state import job_file

        config = job_file(args.resume)  # the settings the state was started with
        data = read_config(config)
    else:
        config = PRESETS_DIR / "LoRA.json"
        data = json.loads(config.read_text(encoding="utf-8"))
        images = ensure_sample_images()
        assignments = [*DEMO_OVERRIDES, f"lora_data_directory={images}", *assignments]
        from .launch import LAUNCHED

        if os.environ.get("RANK", "0") == "0" and not os.environ.get(LAUNCHED):  # said once per launch
            print(f"no config given: a short LoRA run on the sample images in {images} (presets/LoRA.json, "
                  f"60 steps)")
    if args.resume:
        assignments.append(f"resume={args.resume}")
    data = apply_overrides(data, assignments)
    if args.model:
        data["model"] = args.model
    job, unknown = job_from_json(data, str(config))
    if unknown:
        print(f"warning: {config} has settings this version does not know (ignored): {', '.join(unknown)}",
              file=sys.stderr)
    output_dir = args.output_dir or (Path(args.resume).parent if args.resume else None)  # resumed: beside the state
    host = StandaloneHost(**({"lora_dir": Path(output_dir)} if output_dir else {}))
    world, launched = processes_of(job, host, args)
    if launched is not None:
        return launched
    training = []
    control = JobControl(on_event=lambda event: training.append(True) if event["kind"] == Event.STEP else None)

    def on_ctrl_c(*_):
        if not training:  # still loading or caching: nothing to save, stop now
            raise KeyboardInterrupt
        control.request_stop(save=True)  # training: stop after this step and save

    signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        result = run_job(job, host, control, world=world)
    except UserError as err:
        if world.size == 1:
            raise
        from .launch import report_failure

        report_failure(err, world.rank, world.size)
        return 2
    except Exception as err:
        from .launch import peer_gone

        if world.size == 1 or not peer_gone(err):
            raise
        return 1  # another process ended first; the launcher says which and why
    if not world.is_main:
        return 0
    print(result.message)
    if result.path:
        print(result.path)
    for grid in result.extras.get("samples", ()):  # the sample-preview grids (sample_every_n_steps), oldest first
        print(grid)
    return 0 if result.status == Status.FINISHED else 130  # a run Ctrl-C stopped did not finish


def processes_of(job, host, args):
    """Where this run trains: (World, None) to train here, or (SINGLE, exit code) when this process is done —
    it launched the data-parallel processes (`--devices` with several), or it is an idle extra process of a
    launch whose mode trains on one device."""
    import os

    from .engine.distributed import SINGLE, from_environment, launched_processes
    from .modes.registry import mode_class

    parallel = mode_class(job.mode).data_parallel
    if args.devices is not None:
        from .launch import launch, parse_devices

        kind, devices = parse_devices(args.devices)
        with host.peek(job.model):  # the model exists (the demo one is written once, here, not by every process)
            pass
        if len(devices) > 1 and parallel:
            return SINGLE, launch(kind, devices, without_devices(args.argv))
        if len(devices) > 1:
            print(f"{job.mode} trains on one device: running on the first of --devices only "
                  f"(data-parallel training is for LoRA and Multi-ADDifT)", file=sys.stderr)
        host.device = torch_device(kind, devices[0])
        return SINGLE, None
    if launched_processes() == 1:
        return SINGLE, None
    if not parallel:
        rank = int(os.environ.get("RANK", "0"))
        if rank > 0:
            return SINGLE, 0  # idle: process 0 runs the job alone
        print(f"{job.mode} trains on one device: process 0 runs it, the other {launched_processes() - 1} "
              f"process(es) stay idle (data-parallel training is for LoRA and Multi-ADDifT)", file=sys.stderr)
        return SINGLE, None
    from .launch import DEVICE_KIND

    world = from_environment(os.environ.get(DEVICE_KIND))
    host.device = world.device
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # process 0 tells the progress; the others only warnings
    return world, None


def torch_device(kind: str, entry: str):
    import torch

    return torch.device("cpu" if kind == "cpu" else f"cuda:{entry}")


def without_devices(argv: list[str]) -> list[str]:
    """The `train` arguments for the launched processes: these, less `--devices X`, less the command itself."""
    out, skip = [], False
    for arg in argv[argv.index("train") + 1:]:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            out.append(arg)
    return out


def read_config(path: Path) -> dict:
    """A settings JSON, or one line saying why it is not one."""
    import json

    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; give a settings JSON file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; a settings file is JSON") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply to be a settings file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of settings, not a {type(data).__name__}")
    return data


def cmd_ui(args) -> int:
    from .ui.standalone import serve

    if args.models_dir and not Path(args.models_dir).is_dir():
        raise UserError(f"--models-dir {args.models_dir}: not a folder")
    devices = None
    if args.devices is not None:
        from .launch import parse_devices

        kind, entries = parse_devices(args.devices)
        devices = [str(torch_device(kind, e)) for e in entries]
        print(f"one queue worker per device: {', '.join(devices)}")
    print(f"TrainTrain on http://127.0.0.1:{args.port}  (Ctrl-C to quit)")
    try:
        serve(args.models_dir, args.output_dir, args.data_dir, args.port, devices=devices)
    except OSError as err:  # Gradio: "Cannot find empty port in range …"
        raise UserError(f"cannot serve on 127.0.0.1:{args.port} ({str(err).splitlines()[0][:80]}); "
                        f"choose another --port") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="TrainTrain LoRA trainer")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-demo-model", help="write a tiny random-weight checkpoint in the LDM key layout")
    p.add_argument("--family", choices=("sd1", "sd2", "sdxl"), default="sd1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=PRECISION_CHOICES, default="fp16")
    p.add_argument("--v-prediction", action="store_true", help="mark it as a v-prediction model in its .yaml")
    p.add_argument("--size", choices=("tiny", "full"), default="tiny",
                   help="tiny: the demo/test model (tens of MB); full: the released architecture, random weights")
    p.add_argument("out", help="output .safetensors path (a .yaml is written beside it)")
    p.set_defaults(func=cmd_make_demo_model)

    p = sub.add_parser("info", help="load a checkpoint offline and print what was found")
    p.add_argument("model", nargs="?", help="checkpoint (.safetensors/.ckpt); default: the bundled demo model")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32")
    p.add_argument("--prediction", choices=("auto", "eps", "v"), default="auto")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("inspect", help="describe a LoRA file and list the keys the webui or ComfyUI would not load")
    p.add_argument("lora", help="a .safetensors LoRA / LoCon / LoHa file")
    p.add_argument("--model", help="check against this checkpoint (default: the family's released architecture)")
    p.add_argument("--family", choices=("sd1", "sd2", "sdxl"), help="when the file's metadata does not say")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="train from a JSON config (upstream's format); no config: a short demo run")
    p.add_argument("config", nargs="?", help="settings JSON (a preset or a saved run); default: the LoRA demo")
    p.add_argument("--model", help="checkpoint file (default: the config's model, else the bundled demo model)")
    p.add_argument("--output-dir", help="where the LoRA is written (default: output/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting by its upstream name or short name; repeatable")
    p.add_argument("--resume", metavar="DIR", help="continue the training state DIR (<name>_<N>steps-state, saved "
                                                   "with save_state); no config: with the settings it was started with")
    p.add_argument("--devices", help="train on these devices, one process each: CUDA numbers (0,1) or cpu,cpu; "
                                     "LoRA and Multi-ADDifT share out the batches (data-parallel), other modes use "
                                     "the first device")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("ui", help="serve the TrainTrain tab on 127.0.0.1 (the standalone web UI)")
    p.add_argument("--models-dir", help="folder searched for checkpoints (its VAE/ sub-folder for VAEs)")
    p.add_argument("--output-dir", help="where LoRAs are written (default: output/)")
    p.add_argument("--data-dir", help="folder for presets/, json/ (queue, saved settings) and logs/ "
                                      "(default: the ones beside the code)")
    p.add_argument("--port", type=int, default=7870)
    p.add_argument("--devices", help="a queue worker on each of these devices (CUDA numbers 0,1 or cuda:0,cuda:1; "
                                     "cpu,cpu to try it): queued jobs train at once, one per device")
    p.set_defaults(func=cmd_ui)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
