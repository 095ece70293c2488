"""`python -m trainer train … --devices 0,1`: the data-parallel launch, started for the user through accelerate's
own launcher (torch.distributed's elastic agent: one process per device, a process that fails ends the others), and
the failure of any process reported as one line.

The processes run `python -m trainer train …` again, without `--devices`; each finds its place from the launcher's
environment (engine/distributed.py). `accelerate launch --multi_gpu --num_processes N -m trainer train …` starts
the same processes without this module.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from .errors import UserError

LAUNCHED = "TRAINTRAIN_LAUNCHED"  # set for the processes this module starts: they leave error lines to it
DEVICE_KIND = "TRAINTRAIN_DEVICE_KIND"  # "cpu" or "cuda": what the processes train on


def parse_devices(text: str) -> tuple[str, list[str]]:
    """`--devices` → ("cuda", ["0", "1"]) or ("cpu", ["cpu", "cpu"]). CUDA devices by index (`0`, `cuda:1`); the CPU
    as `cpu`, once per process (gloo, for trying a launch without GPUs)."""
    entries = [e.strip().lower() for e in str(text or "").split(",") if e.strip()]
    if not entries:
        raise UserError("--devices: give a comma-separated list, e.g. 0,1 (CUDA devices) or cpu,cpu")
    if all(e == "cpu" for e in entries):
        return "cpu", entries
    indices = [e.removeprefix("cuda:") for e in entries]
    if not all(i.isdigit() for i in indices):
        raise UserError(f"--devices {text}: use CUDA device numbers (0,1 or cuda:0,cuda:1), or cpu once per CPU "
                        "process or worker; CPU and CUDA cannot be mixed in one run")
    if len(set(indices)) != len(indices):
        raise UserError(f"--devices {text}: a CUDA device is listed twice; list each GPU once")
    import torch

    available = torch.cuda.device_count()
    missing = [i for i in indices if int(i) >= available]
    if missing:
        raise UserError(f"--devices {text}: no CUDA device {', '.join(missing)} here ({available} found)")
    return "cuda", indices


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind: str, devices: list[str], train_args: list[str], module: str = "trainer") -> int:
    """Start `python -m <module> train <train_args>` once per device and wait for all; 0 when every process
    finished. A failed process ends the launch: its own one-line error is printed (the first to fail), 2 returned."""
    from accelerate.commands.launch import launch_command_parser, multi_gpu_launcher
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = ["--multi_gpu", "--num_processes", str(len(devices)), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port()), "--monitor_interval", "0.5",
            "--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // len(devices)))]
    if kind == "cuda":
        args += ["--gpu_ids", ",".join(devices)]
    args += ["-m", module, "train", *train_args]
    parsed = launch_command_parser().parse_args(args)
    for name in ("torch.distributed.elastic", "torch.distributed.run", "accelerate"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # their failure reports: the one line below says it
    saved = {k: os.environ.get(k) for k in (LAUNCHED, DEVICE_KIND)}
    os.environ.update({LAUNCHED: "1", DEVICE_KIND: kind})
    try:
        multi_gpu_launcher(parsed)
    except ChildFailedError as err:
        rank, message = first_failure(err)
        print(f"error: {message} (process {rank} of {len(devices)}; the launch was stopped)", file=sys.stderr)
        return 2
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return 0


def first_failure(err) -> tuple[int, str]:
    """The process that failed first with a message of its own (its UserError line), else the first to fail."""
    failures = sorted(err.failures.items(), key=lambda kv: (kv[1].timestamp, kv[0]))
    told = [(rank, f) for rank, f in failures if f.error_file and os.path.isfile(f.error_file)]
    rank, failure = (told or failures)[0]
    message = failure.message.get("message", "") if isinstance(failure.message, dict) else failure.message
    message = str(message or "").removeprefix("UserError: ").strip()
    if not told:
        message = (f"a training process ended with {failure.signal_name()}" if failure.exitcode < 0 else
                   f"a training process exited with code {failure.exitcode}") + " (its console output says why)"
    return rank, message.splitlines()[0] if message else "a training process failed"


def report_failure(err: BaseException, rank: int, size: int) -> None:
    """A process's error: into the launcher's error file (torch elastic's own, read by `launch`) and, unless
    `launch` started this process (it prints the one line), on stderr."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(err)
    if not os.environ.get(LAUNCHED):
        print(f"error: {err} (process {rank} of {size})", file=sys.stderr)


PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crashing",
             "NCCL communicator was aborted")


def peer_gone(err: BaseException) -> bool:
    """An error of a collective because another process ended: not this process's fault (the launcher reports the
    process that failed first), so this one exits without a traceback."""
    import torch.distributed as dist

    return isinstance(err, getattr(dist, "DistError", ())) or (
        isinstance(err, RuntimeError) and any(phrase in str(err) for phrase in PEER_GONE))

