"""Optimizers and learning-rate schedules by the names users pick, each from its own package.

Packages are imported when chosen, so one missing optional package never breaks the others; a missing one is
an error that names the package to install. Extra arguments come from `train_optimizer_settings` /
`train_lr_scheduler_settings` (`k=v` pairs, literal values).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

import torch

from ..errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimizerEntry:
    module: str  # package module
    attr: str  # class name in it
    package: str  # what to pip install
    defaults: tuple = ()  # (key, value) pairs the user may override
    takes_model: bool = False  # AdamMini wants the module, not parameter groups
    adaptive: bool = False  # Prodigy / D-Adaptation: learning rate ~1.0
    schedule_free: bool = False


_BNB = "bitsandbytes.optim"
OPTIMIZERS: dict[str, OptimizerEntry] = {
    "adamw": OptimizerEntry("torch.optim", "AdamW", "torch"),  # torch picks foreach/fused per device
    "adam": OptimizerEntry("torch.optim", "Adam", "torch"),
    "sgdnesterov": OptimizerEntry("torch.optim", "SGD", "torch", (("momentum", 0.9), ("nesterov", True))),
    "adamw8bit": OptimizerEntry(_BNB, "AdamW8bit", "bitsandbytes"),
    "adam8bit": OptimizerEntry(_BNB, "Adam8bit", "bitsandbytes"),
    "sgdnesterov8bit": OptimizerEntry(_BNB, "SGD8bit", "bitsandbytes", (("momentum", 0.9), ("nesterov", True))),
    "lion8bit": OptimizerEntry(_BNB, "Lion8bit", "bitsandbytes"),
    "pagedadamw8bit": OptimizerEntry(_BNB, "PagedAdamW8bit", "bitsandbytes"),
    "pagedlion8bit": OptimizerEntry(_BNB, "PagedLion8bit", "bitsandbytes"),
    "pagedadamw": OptimizerEntry(_BNB, "PagedAdamW", "bitsandbytes"),
    "pagedadamw32bit": OptimizerEntry(_BNB, "PagedAdamW32bit", "bitsandbytes"),
    "adafactor": OptimizerEntry("transformers.optimization", "Adafactor", "transformers"),
    "lion": OptimizerEntry("lion_pytorch", "Lion", "lion-pytorch"),
    "prodigy": OptimizerEntry("prodigyopt", "Prodigy", "prodigyopt", adaptive=True),
    "dadaptadam": OptimizerEntry("dadaptation", "DAdaptAdam", "dadaptation", adaptive=True),
    "dadaptlion": OptimizerEntry("dadaptation", "DAdaptLion", "dadaptation", adaptive=True),
    "dadaptadagrad": OptimizerEntry("dadaptation", "DAdaptAdaGrad", "dadaptation", adaptive=True),
    "dadaptadan": OptimizerEntry("dadaptation", "DAdaptAdan", "dadaptation", adaptive=True),
    "dadaptsgd": OptimizerEntry("dadaptation", "DAdaptSGD", "dadaptation", adaptive=True),
    "radamschedulefree": OptimizerEntry("schedulefree", "RAdamScheduleFree", "schedulefree", schedule_free=True),
    "adamwschedulefree": OptimizerEntry("schedulefree", "AdamWScheduleFree", "schedulefree", schedule_free=True),
    "sgdschedulefree": OptimizerEntry("schedulefree", "SGDScheduleFree", "schedulefree", schedule_free=True),
    "came": OptimizerEntry("pytorch_optimizer", "CAME", "pytorch-optimizer"),
    "tiger": OptimizerEntry("pytorch_optimizer", "Tiger", "pytorch-optimizer"),
    "adammini": OptimizerEntry("pytorch_optimizer", "AdamMini", "pytorch-optimizer", takes_model=True),
}


def _import(entry: OptimizerEntry, what: str):
    try:
        return getattr(importlib.import_module(entry.module), entry.attr)
    except AttributeError:
        raise UserError(f"{what} needs a newer {entry.package} (it has no {entry.attr})") from None
    except Exception as err:  # ImportError, or a package that fails at import (e.g. no GPU support)
        raise UserError(f"{what} needs the {entry.package} package, which cannot be used here "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None


def build_optimizer(name: str, param_groups: list[dict], network: torch.nn.Module, lr: float,
                    settings: dict) -> torch.optim.Optimizer:
    entry = OPTIMIZERS.get(name.lower())
    if entry is None:
        raise UserError(f"unknown optimizer {name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    cls = _import(entry, f"optimizer {name}")
    kwargs = {**dict(entry.defaults), **settings}
    if entry.adaptive and lr <= 0.1:
        log.warning("%s adapts the step size itself and expects a learning rate around 1.0 (got %g)", name, lr)
    if entry.attr == "Adafactor":
        kwargs.setdefault("relative_step", True)
        if kwargs.get("warmup_init"):
            kwargs["relative_step"] = True
        if kwargs["relative_step"]:
            # Adafactor computes its own step size; group learning rates would be ignored anyway.
            kwargs.setdefault("scale_parameter", True)
            param_groups = [{k: v for k, v in g.items() if k != "lr"} for g in param_groups]
            lr = None
    try:
        if entry.takes_model:
            optimizer = cls(network, lr=lr, **kwargs)
        else:
            optimizer = cls(param_groups, lr=lr, **kwargs)
    except TypeError as err:
        raise UserError(f"train_optimizer_settings: {name} does not accept these arguments ({err})") from None
    except (RuntimeError, ValueError) as err:
        raise UserError(f"optimizer {name} cannot run here: {str(err).splitlines()[0][:160]}") from None
    if entry.schedule_free:
        optimizer.train()
    return optimizer


def is_schedule_free(optimizer) -> bool:
    return any(entry.schedule_free and type(optimizer).__name__ == entry.attr for entry in OPTIMIZERS.values())


class ScheduleFreeLR:
    """Stand-in scheduler for schedule-free optimizers: nothing to step; reports their current lr."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, *args, **kwargs):
        pass

    def get_last_lr(self):
        return [g.get("scheduled_lr", g["lr"]) for g in self.optimizer.param_groups]


# -- schedules -------------------------------------------------------------------------------------------------
DIFFUSERS_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                       "piecewise_constant")
_GET_SCHEDULER_ARGS = ("step_rules", "num_warmup_steps", "num_training_steps", "num_cycles", "power")


def build_scheduler(name: str, optimizer, iterations: int, settings, extra: dict):
    """`settings` gives train_lr_warmup_steps / _num_cycles / _power / _step_rules; `extra` the k=v string."""
    if type(optimizer).__name__ == "Adafactor" and optimizer.defaults.get("relative_step"):
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer)
    if is_schedule_free(optimizer):
        return ScheduleFreeLR(optimizer)
    sched = torch.optim.lr_scheduler
    try:
        if name in DIFFUSERS_SCHEDULES:
            from diffusers.optimization import get_scheduler

            kwargs = dict(
                step_rules=settings.train_lr_step_rules or None,
                num_warmup_steps=max(settings.train_lr_warmup_steps, 0),
                num_training_steps=iterations,
                num_cycles=max(settings.train_lr_scheduler_num_cycles, 1),
                power=settings.train_lr_scheduler_power,
            )
            unknown = [k for k in extra if k not in _GET_SCHEDULER_ARGS]
            if unknown:
                raise UserError(f"train_lr_scheduler_settings: {name} takes none of {unknown}; "
                                f"use {', '.join(_GET_SCHEDULER_ARGS)} or the fields of this panel")
            kwargs.update(extra)
            if name == "piecewise_constant" and not kwargs["step_rules"]:
                raise UserError("train_lr_step_rules: piecewise_constant needs rules, e.g. 1:100,0.1:200,0.01")
            return get_scheduler(name, optimizer, **kwargs)
        if name == "cosine_annealing":
            return sched.CosineAnnealingLR(optimizer, **{"T_max": iterations, **extra})
        if name == "cosine_annealing_with_restarts":
            return sched.CosineAnnealingWarmRestarts(optimizer, **{"T_0": 10, **extra})
        if name == "exponential":
            return sched.ExponentialLR(optimizer, **{"gamma": 0.9, **extra})
        if name == "step":
            return sched.StepLR(optimizer, **{"step_size": 10, **extra})
        if name == "multi_step":
            return sched.MultiStepLR(optimizer, **{"milestones": [30, 60, 90], **extra})
        if name == "reduce_on_plateau":
            return sched.ReduceLROnPlateau(optimizer, **{"mode": "min", **extra})
        if name == "cyclic":
            return sched.CyclicLR(optimizer, **{"base_lr": 1e-5, "max_lr": 1e-3, "mode": "triangular",
                                                "cycle_momentum": _has_momentum(optimizer), **extra})
        if name == "one_cycle":
            return sched.OneCycleLR(optimizer, **{"max_lr": 1e-3, "total_steps": iterations,
                                                  "cycle_momentum": _has_momentum(optimizer), **extra})
    except TypeError as err:
        raise UserError(f"train_lr_scheduler_settings: {name} does not accept these arguments ({err})") from None
    except ValueError as err:
        raise UserError(f"train_lr_scheduler {name}: {str(err).splitlines()[0][:160]}") from None
    raise UserError(f"unknown train_lr_scheduler {name!r}")


def _has_momentum(optimizer) -> bool:
    return "momentum" in optimizer.defaults or "betas" in optimizer.defaults


def step_scheduler(scheduler, loss_value: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(loss_value)  # fed the loss (upstream stepped it without a metric)
    else:
        scheduler.step()


def current_lrs(scheduler, optimizer) -> list[float]:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or not hasattr(scheduler, "get_last_lr"):
        return [float(g.get("lr") or 0.0) for g in optimizer.param_groups]
    return [float(x) for x in scheduler.get_last_lr()]
