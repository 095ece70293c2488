"""Every optimizer and schedule in the dropdowns constructs and takes two steps."""

from __future__ import annotations

import pytest
import torch

from trainer.engine.optim import build_optimizer, build_scheduler, current_lrs, step_scheduler
from trainer.errors import UserError
from trainer.settings import OPTIMIZERS, SCHEDULERS, SEPARATOR, validate

pytestmark = pytest.mark.filterwarnings("ignore")


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))


def _two_steps(optimizer, scheduler, net, steps=2):
    for _ in range(steps):
        loss = net(torch.randn(4, 8)).pow(2).mean()
        loss.backward()
        optimizer.step()
        step_scheduler(scheduler, loss.item())
        optimizer.zero_grad(set_to_none=True)
    return current_lrs(scheduler, optimizer)


@pytest.mark.parametrize("name", [o for o in OPTIMIZERS if o != SEPARATOR])
def test_every_optimizer_takes_two_steps(name):
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    lr = 1.0 if name.lower().startswith(("prodigy", "dadapt")) else 1e-3
    groups = [{"params": list(net[0].parameters()), "lr": lr}, {"params": list(net[1].parameters()), "lr": lr}]
    optimizer = build_optimizer(name, groups, net, lr, {})
    scheduler = build_scheduler("cosine", optimizer, 10, validate(), {})
    # RAdam's rectification makes no update while its variance estimate is unreliable (the first ~5 steps)
    lrs = _two_steps(optimizer, scheduler, net, steps=8 if name == "RAdamScheduleFree" else 2)
    assert len(lrs) >= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters())), f"{name} changed nothing"


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_takes_two_steps(name):
    net = _net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    s = validate({"train_lr_step_rules": "1:1,0.5:2,0.1", "train_lr_warmup_steps": "1"})
    scheduler = build_scheduler(name, optimizer, 10, s, {})
    assert all(lr >= 0 for lr in _two_steps(optimizer, scheduler, net))


def test_schedule_settings_are_passed_and_checked():
    optimizer = torch.optim.AdamW(_net().parameters(), lr=1e-3)
    sched = build_scheduler("cosine_annealing", optimizer, 10, validate(), {"eta_min": 1e-5})
    assert sched.eta_min == 1e-5
    with pytest.raises(UserError, match="cosine takes none of"):
        build_scheduler("cosine", optimizer, 10, validate(), {"eta_min": 1e-5})
    with pytest.raises(UserError, match="does not accept"):
        build_scheduler("step", optimizer, 10, validate(), {"nonsense": 1})


def test_plateau_is_fed_the_loss():
    net = _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    sched = build_scheduler("reduce_on_plateau", optimizer, 10, validate(), {"patience": 0, "factor": 0.5})
    step_scheduler(sched, 1.0)
    step_scheduler(sched, 2.0)  # worse: halves the lr
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_one_cycle_runs_exactly_the_iterations():
    net = _net()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = build_scheduler("one_cycle", optimizer, 5, validate(), {})
    for _ in range(5):
        optimizer.step()
        sched.step()  # a 6th step would raise in OneCycleLR


def test_adafactor_relative_step_and_schedule_free_eval():
    net = _net()
    groups = [{"params": list(net.parameters()), "lr": 1e-3}]
    ada = build_optimizer("AdaFactor", groups, net, 1e-3, {})
    assert type(build_scheduler("cosine", ada, 10, validate(), {})).__name__ == "AdafactorSchedule"
    fixed = build_optimizer("AdaFactor", groups, net, 1e-3, {"relative_step": False})
    assert type(build_scheduler("cosine", fixed, 10, validate(), {})).__name__ == "LambdaLR"
    sf = build_optimizer("AdamWScheduleFree", groups, net, 1e-3, {})
    assert sf.param_groups[0]["train_mode"]


def test_optimizer_settings_and_errors():
    net = _net()
    groups = [{"params": list(net.parameters()), "lr": 1e-3}]
    opt = build_optimizer("AdamW", groups, net, 1e-3, {"weight_decay": 0.05, "betas": (0.8, 0.9)})
    assert opt.defaults["weight_decay"] == 0.05 and opt.defaults["betas"] == (0.8, 0.9)
    with pytest.raises(UserError, match="does not accept these arguments"):
        build_optimizer("AdamW", groups, net, 1e-3, {"nonsense": 1})
    with pytest.raises(UserError, match="unknown optimizer"):
        build_optimizer("Nope", groups, net, 1e-3, {})


def test_missing_package_says_so(monkeypatch):
    import importlib

    from trainer.engine import optim

    real = importlib.import_module

    def no_bnb(name, *args, **kwargs):
        if name.startswith("bitsandbytes"):
            raise RuntimeError("bitsandbytes was compiled without GPU support")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(optim.importlib, "import_module", no_bnb)
    net = _net()
    with pytest.raises(UserError, match="AdamW8bit needs the bitsandbytes package, which cannot be used here"):
        build_optimizer("AdamW8bit", [{"params": list(net.parameters())}], net, 1e-3, {})
