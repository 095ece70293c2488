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
    name: str  # as the dropdown shows it (upstream's spelling)
    module: str  # package module
    attr: str  # class name in it
    package: str  # what to pip install
    group: int  # the dropdown draws a separator line between groups
    defaults: tuple = ()  # (key, value) pairs the user may override
    takes_model: bool = False  # AdamMini wants the module, not parameter groups
    adaptive: bool = False  # Prodigy / D-Adaptation: learning rate ~1.0
    schedule_free: bool = False


_BNB = "bitsandbytes.optim"
_NESTEROV = (("momentum", 0.9), ("nesterov", True))
# The one list of optimizers, in the dropdown's order; settings.OPTIMIZERS (the choices) is derived from it.
OPTIMIZER_ENTRIES: tuple[OptimizerEntry, ...] = (
    OptimizerEntry("AdamW", "torch.optim", "AdamW", "torch", 0),  # torch picks foreach/fused per device
    OptimizerEntry("AdamW8bit", _BNB, "AdamW8bit", "bitsandbytes", 0),
    OptimizerEntry("AdaFactor", "transformers.optimization", "Adafactor", "transformers", 0),
    OptimizerEntry("Lion", "lion_pytorch", "Lion", "lion-pytorch", 0),
    OptimizerEntry("Prodigy", "prodigyopt", "Prodigy", "prodigyopt", 0, adaptive=True),
    OptimizerEntry("DadaptAdam", "dadaptation", "DAdaptAdam", "dadaptation", 1, adaptive=True),
    OptimizerEntry("DadaptLion", "dadaptation", "DAdaptLion", "dadaptation", 1, adaptive=True),
    OptimizerEntry("DAdaptAdaGrad", "dadaptation", "DAdaptAdaGrad", "dadaptation", 1, adaptive=True),
    OptimizerEntry("DAdaptAdan", "dadaptation", "DAdaptAdan", "dadaptation", 1, adaptive=True),
    OptimizerEntry("DAdaptSGD", "dadaptation", "DAdaptSGD", "dadaptation", 1, adaptive=True),
    OptimizerEntry("Adam8bit", _BNB, "Adam8bit", "bitsandbytes", 2),
    OptimizerEntry("SGDNesterov8bit", _BNB, "SGD8bit", "bitsandbytes", 2, _NESTEROV),
    OptimizerEntry("Lion8bit", _BNB, "Lion8bit", "bitsandbytes", 2),
    OptimizerEntry("PagedAdamW8bit", _BNB, "PagedAdamW8bit", "bitsandbytes", 2),
    OptimizerEntry("PagedLion8bit", _BNB, "PagedLion8bit", "bitsandbytes", 2),
    OptimizerEntry("RAdamScheduleFree", "schedulefree", "RAdamScheduleFree", "schedulefree", 3, schedule_free=True),
    OptimizerEntry("AdamWScheduleFree", "schedulefree", "AdamWScheduleFree", "schedulefree", 3, schedule_free=True),
    OptimizerEntry("SGDScheduleFree", "schedulefree", "SGDScheduleFree", "schedulefree", 3, schedule_free=True),
    OptimizerEntry("CAME", "pytorch_optimizer", "CAME", "pytorch-optimizer", 4),
    OptimizerEntry("Tiger", "pytorch_optimizer", "Tiger", "pytorch-optimizer", 4),
    OptimizerEntry("AdamMini", "pytorch_optimizer", "AdamMini", "pytorch-optimizer", 4, takes_model=True),
    OptimizerEntry("PagedAdamW", _BNB, "PagedAdamW", "bitsandbytes", 4),
    OptimizerEntry("PagedAdamW32bit", _BNB, "PagedAdamW32bit", "bitsandbytes", 4),
    OptimizerEntry("SGDNesterov", "torch.optim", "SGD", "torch", 4, _NESTEROV),
    OptimizerEntry("Adam", "torch.optim", "Adam", "torch", 4),
)
OPTIMIZERS: dict[str, OptimizerEntry] = {entry.name.lower(): entry for entry in OPTIMIZER_ENTRIES}


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
        raise UserError(f"unknown optimizer {name!r}; known: {', '.join(e.name for e in OPTIMIZER_ENTRIES)}")
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
_GET_SCHEDULER_ARGS = ("step_rules", "num_warmup_steps", "num_training_steps", "num_cycles", "power")


def _diffusers(name: str):
    """A schedule of diffusers' `get_scheduler`, fed from the panel's fields; `extra` may override them."""

    def build(optimizer, iterations: int, settings, extra: dict):
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

    return build


def _torch(cls_name: str, **defaults):
    """A schedule of torch.optim.lr_scheduler; `defaults` may take (optimizer, iterations) → value callables."""

    def build(optimizer, iterations: int, settings, extra: dict):
        values = {k: v(optimizer, iterations) if callable(v) else v for k, v in defaults.items()}
        return getattr(torch.optim.lr_scheduler, cls_name)(optimizer, **{**values, **extra})

    return build


def _has_momentum(optimizer, iterations=None) -> bool:
    return "momentum" in optimizer.defaults or "betas" in optimizer.defaults


# The one list of schedules, in the dropdown's order; settings.SCHEDULERS (the choices) is derived from it.
SCHEDULES = {
    "cosine_annealing": _torch("CosineAnnealingLR", T_max=lambda optimizer, iterations: iterations),
    "cosine_annealing_with_restarts": _torch("CosineAnnealingWarmRestarts", T_0=10),
    **{name: _diffusers(name) for name in ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                           "constant_with_warmup", "piecewise_constant")},
    "exponential": _torch("ExponentialLR", gamma=0.9),
    "step": _torch("StepLR", step_size=10),
    "multi_step": _torch("MultiStepLR", milestones=[30, 60, 90]),
    "reduce_on_plateau": _torch("ReduceLROnPlateau", mode="min"),
    "cyclic": _torch("CyclicLR", base_lr=1e-5, max_lr=1e-3, mode="triangular", cycle_momentum=_has_momentum),
    "one_cycle": _torch("OneCycleLR", max_lr=1e-3, total_steps=lambda optimizer, iterations: iterations,
                        cycle_momentum=_has_momentum),
}


def build_scheduler(name: str, optimizer, iterations: int, settings, extra: dict):
    """`settings` gives train_lr_warmup_steps / _num_cycles / _power / _step_rules; `extra` the k=v string."""
    if type(optimizer).__name__ == "Adafactor" and optimizer.defaults.get("relative_step"):
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer)
    if is_schedule_free(optimizer):
        return ScheduleFreeLR(optimizer)
    if name not in SCHEDULES:
        raise UserError(f"unknown train_lr_scheduler {name!r}; known: {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](optimizer, iterations, settings, extra)
    except TypeError as err:
        raise UserError(f"train_lr_scheduler_settings: {name} does not accept these arguments ({err})") from None
    except ValueError as err:
        raise UserError(f"train_lr_scheduler {name}: {str(err).splitlines()[0][:160]}") from None


def step_scheduler(scheduler, loss_value: float) -> None:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(loss_value)  # fed the loss (upstream stepped it without a metric)
    else:
        scheduler.step()


def current_lrs(scheduler, optimizer) -> list[float]:
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or not hasattr(scheduler, "get_last_lr"):
        return [float(g.get("lr") or 0.0) for g in optimizer.param_groups]
    return [float(x) for x in scheduler.get_last_lr()]
