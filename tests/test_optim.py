"""Every optimizer and schedule in the dropdowns constructs and steps; each schedule gives the values its definition
gives (worked by hand below, not through the code path the implementation calls)."""

from __future__ import annotations

import math

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


# -- each schedule's values, worked from its definition ---------------------------------------------------------
# T steps, W warm-up steps, C cycles, P power, step rules "1:30,0.5:60,0.1" (×1 before step 30, ×0.5 before 60,
# then ×0.1). k is the 0-based index of the optimizer step; the value is the factor on a group's initial lr.
T, W, C, P = 100, 10, 3, 2.0
LR0, LR_TE = 1e-3, 2e-4  # the optimizer's default lr (polynomial's lr_init) and a second group's lr
POLY_END = 1e-7  # diffusers' polynomial lr_end
E64 = 2.0 ** -53  # float64 unit round-off
SCHEDULE_SETTINGS = {"train_lr_warmup_steps": str(W), "train_lr_scheduler_num_cycles": str(C),
                     "train_lr_scheduler_power": str(P), "train_lr_step_rules": "1:30,0.5:60,0.1"}


def _warm(k, after):
    return k / W if k < W else after((k - W) / (T - W))


FACTOR = {
    # diffusers schedules: a linear warm-up 0 → 1 over W steps, then p = (k − W)/(T − W) runs 0 → 1
    "constant": lambda k: 1.0,  # no warm-up
    "constant_with_warmup": lambda k: _warm(k, lambda p: 1.0),
    "linear": lambda k: _warm(k, lambda p: 1 - p),
    "cosine": lambda k: _warm(k, lambda p: 0.5 * (1 + math.cos(math.pi * p))),  # half a cosine, 1 → 0
    "cosine_with_restarts": lambda k: _warm(k, lambda p: 0.5 * (1 + math.cos(math.pi * ((C * p) % 1)))),
    "polynomial": lambda k: _warm(k, lambda p: ((LR0 - POLY_END) * (1 - p) ** P + POLY_END) / LR0),
    "piecewise_constant": lambda k: 1.0 if k < 30 else 0.5 if k < 60 else 0.1,
    # torch schedules with this trainer's defaults
    "cosine_annealing": lambda k: 0.5 * (1 + math.cos(math.pi * k / T)),  # T_max = train_iterations, η_min 0
    "cosine_annealing_with_restarts": lambda k: 0.5 * (1 + math.cos(math.pi * (k % 10) / 10)),  # T_0 = 10
    "exponential": lambda k: 0.9 ** k,  # γ = 0.9
    "step": lambda k: 0.1 ** (k // 10),  # every 10 steps ×0.1
    "multi_step": lambda k: 0.1 ** sum(k >= m for m in (30, 60, 90)),  # ×0.1 at 30, 60, 90
}


def _lr_trace(name, steps, extra=None, settings=None):
    """[(lr of group 1, lr of group 2)] in effect at optimizer steps 0 … steps−1, as the engine steps them."""
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([{"params": [a]}, {"params": [b], "lr": LR_TE}], lr=LR0)
    scheduler = build_scheduler(name, optimizer, steps, validate(settings or SCHEDULE_SETTINGS), extra or {})
    trace = []
    for _ in range(steps):
        trace.append(tuple(g["lr"] for g in optimizer.param_groups))
        optimizer.step()
        step_scheduler(scheduler, 1.0)
    return trace


CLOSED_FORM = 1e-12  # relative: a closed-form schedule value is a handful of float64 operations (≲ 1e3·2⁻⁵³)


def _lr_tolerance(steps: int, lr: float) -> float:
    """float64 schedules: torch's chainable forms update lr_k from lr_{k−1} (one product or quotient, a few
    roundings each), so after `steps` updates the error is at most ~4·steps roundings of the initial lr."""
    return 4 * steps * E64 * lr


@pytest.mark.parametrize("name", sorted(FACTOR))
def test_schedule_values_by_hand(name):
    trace = _lr_trace(name, T)
    for k, (lr, lr_te) in enumerate(trace):
        assert abs(lr - LR0 * FACTOR[name](k)) <= _lr_tolerance(T, LR0), (name, k, lr, LR0 * FACTOR[name](k))
        assert abs(lr_te - LR_TE * FACTOR[name](k)) <= _lr_tolerance(T, LR0), (name, k, "second group")


def test_schedule_fixed_points_by_hand():
    """A few values written out, so a wrong FACTOR formula above cannot hide a wrong schedule."""
    at = {name: [lr for lr, _ in _lr_trace(name, T)] for name in ("linear", "cosine", "cosine_with_restarts",
                                                                  "polynomial", "step", "constant_with_warmup")}
    assert at["constant_with_warmup"][:2] == [0.0, LR0 / 10] and at["constant_with_warmup"][10] == LR0
    assert at["linear"][5] == pytest.approx(LR0 / 2) and at["linear"][55] == pytest.approx(LR0 / 2)
    assert at["cosine"][10] == pytest.approx(LR0) and at["cosine"][55] == pytest.approx(LR0 / 2)  # p = ½: cos = 0
    # 3 restarts over the 90 decay steps: back to the full lr at k = 40 and k = 70
    assert at["cosine_with_restarts"][40] == pytest.approx(LR0) == at["cosine_with_restarts"][70]
    assert at["cosine_with_restarts"][25] == pytest.approx(LR0 / 2)
    assert at["polynomial"][55] == pytest.approx((LR0 - POLY_END) / 4 + POLY_END)  # (1 − ½)² = ¼
    assert at["step"][9] == pytest.approx(LR0) and at["step"][10] == pytest.approx(LR0 / 10)


def test_cyclic_is_a_triangle_between_its_bounds():
    # defaults: base_lr 1e-5, max_lr 1e-3, step_size_up 2000, triangular: lr_k = 1e-5 + (1e-3 − 1e-5)·k/2000
    # for every group (absolute values, not factors)
    for k, (lr, lr_te) in enumerate(_lr_trace("cyclic", T)):
        expected = 1e-5 + (1e-3 - 1e-5) * k / 2000
        assert lr == pytest.approx(expected, rel=CLOSED_FORM) and lr_te == pytest.approx(expected, rel=CLOSED_FORM)
    # step_size_up 20: up over 20 steps, down over 20, period 40
    trace = [lr for lr, _ in _lr_trace("cyclic", 90, {"step_size_up": 20})]
    for k, lr in enumerate(trace):
        x = k % 40
        expected = 1e-5 + (1e-3 - 1e-5) * (x / 20 if x <= 20 else (40 - x) / 20)
        assert lr == pytest.approx(expected, rel=CLOSED_FORM), k
    assert trace[20] == pytest.approx(1e-3) and trace[40] == pytest.approx(1e-5) and trace[60] == pytest.approx(1e-3)


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


def _one_cycle(k, total, max_lr=1e-3):
    """OneCycleLR by its definition (Smith & Topin): lr rises from max_lr/25 to max_lr over the first 30 % of the
    steps (ending at step 0.3·total − 1), then falls to max_lr/25/1e4 at step total − 1, each along a half cosine
    anneal(a, b, pct) = b + (a − b)·(1 + cos π·pct)/2."""
    initial, final = max_lr / 25, max_lr / 25 / 1e4
    peak = 0.3 * total - 1
    anneal = lambda a, b, pct: b + (a - b) * (1 + math.cos(math.pi * pct)) / 2
    if k <= peak:
        return anneal(initial, max_lr, k / peak)
    return anneal(max_lr, final, (k - peak) / (total - 1 - peak))


def test_one_cycle_runs_exactly_the_iterations():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    sched = build_scheduler("one_cycle", optimizer, 10, validate(), {})
    trace, betas = [], []
    for _ in range(10):  # train_iterations optimizer steps, each followed by one schedule step, as the engine does
        trace.append(optimizer.param_groups[0]["lr"])
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        step_scheduler(sched, 1.0)
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        step_scheduler(sched, 1.0)  # the schedule is sized to exactly train_iterations steps
    # by hand for 10 steps: peak at step 0.3·10 − 1 = 2
    assert trace[0] == pytest.approx(4e-5) and trace[1] == pytest.approx((4e-5 + 1e-3) / 2)
    assert trace[2] == pytest.approx(1e-3) and trace[9] == pytest.approx(4e-9)
    assert trace[:3] == sorted(trace[:3]) and trace[2:] == sorted(trace[2:], reverse=True)
    for k, lr in enumerate(trace):
        assert lr == pytest.approx(_one_cycle(k, 10), rel=CLOSED_FORM), k
    # with momentum cycling (AdamW's β₁): 0.95 → 0.85 at the peak → 0.95 at the end
    assert betas[0] == pytest.approx(0.95) and betas[2] == pytest.approx(0.85) and betas[9] == pytest.approx(0.95)


def test_one_cycle_in_a_training_run(lora_job):
    """The engine builds the schedule for train_iterations: every step runs, the LRs follow the cycle."""
    from trainer.engine.control import JobControl
    from trainer.runner import run_job

    events = []
    job, host = lora_job(train_lr_scheduler="one_cycle", train_iterations="5")
    result = run_job(job, host, JobControl(on_event=events.append))
    steps = [e for e in events if e["kind"] == "step"]
    assert result.status == "finished" and [e["step"] for e in steps] == [1, 2, 3, 4, 5]
    # the LR reported with step n is the one step n trained at: index n − 1 of a 5-step cycle (an earlier engine
    # reported the next step's rate)
    for event in steps:
        assert event["lrs"] == pytest.approx([_one_cycle(event["step"] - 1, 5)] * 2, rel=CLOSED_FORM), event["step"]
    assert steps[-1]["lrs"][0] == pytest.approx(4e-9)  # the last step runs at the final lr


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
