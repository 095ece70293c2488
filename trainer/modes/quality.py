"""Quality reports in noise-prediction space, on held-out noise and timesteps (as peer slider and erasure
trainers measure them; the report file carries the definitions below).

ε₀ is the model without the LoRA, ε_L with it at multiplier m; ‖·‖² is a mean squared difference.

- iLECO erase efficacy  E = ‖ε_L(c_orig) − ε_L(c_target)‖² / ‖ε₀(c_orig) − ε₀(c_target)‖²   (→ 0: erased)
- iLECO transfer        T = ‖ε_L(c_orig) − ε₀(c_target)‖² / ‖ε₀(c_orig) − ε₀(c_target)‖²   (→ 0: replaced)
- preservation          P = mean over unrelated prompts of ‖ε_L(c) − ε₀(c)‖² / ‖ε₀(c) − ε₀(∅)‖²   (→ 0: untouched)
- pair fit              R = ‖ε_L(x_t(T)) − ε_ref(x_t(O))‖² / ‖ε_ref(x_t(T)) − ε_ref(x_t(O))‖²  with shared noise:
                        the LoRA makes the model read the target as the reference reads the original (ADDifT's
                        training relation; for Difference the reference has the copier on)
- slider                Δ(m) = ε_L(m) − ε_L(0) on x_t(T): cos(Δ(+u), Δ(−u)) (→ −1) and ‖Δ(2u)‖/‖Δ(u)‖ (→ 2), u the
                        trained multiplier (ADDifT 0.25, Difference 1)
"""

from __future__ import annotations

import torch

from ..engine import diffusion
from . import common

DEFINITIONS = {
    "E": "|eps_L(orig) - eps_L(target)|^2 / |eps_0(orig) - eps_0(target)|^2 (erase; 0 = erased)",
    "T": "|eps_L(orig) - eps_0(target)|^2 / |eps_0(orig) - eps_0(target)|^2 (replace; 0 = replaced)",
    "P": "mean over unrelated prompts c of |eps_L(c) - eps_0(c)|^2 / |eps_0(c) - eps_0(empty)|^2 (0 = untouched)",
    "R": "ADDifT: |eps_L(x_t(T)) - eps_ref(x_t(O))|^2 / |eps_ref(x_t(T)) - eps_ref(x_t(O))|^2; "
         "Difference: |eps_{copier+L}(x_t(T)) - y_T|^2 / |eps_copier(x_t(T)) - y_T|^2 (y_T = noise or v of T)",
    "copy_fit": "Difference pass 1: |eps_copier(x_t(O)) - y_O|^2 / |eps_0(x_t(O)) - y_O|^2",
    "slider_cos": "cos(D(+u), D(-u)), D(m) = eps_L(m) - eps_L(0), u = trained multiplier (-1 = signed slider)",
    "slider_ratio": "|D(2u)| / |D(u)| (2 = linear)",
}
REPORT_SEED_OFFSET = 1_000_003  # held-out noise: never the training generator's stream
EVAL_TIMESTEPS = 6
EVAL_SAMPLES = 2
EVAL_BUCKETS = 2  # the evaluation loss (engine/evaluation.py) uses EVAL_SAMPLES items of this many buckets


def eval_timesteps(t_min: int, t_max: int, count: int = EVAL_TIMESTEPS) -> list[int]:
    """Mid-points of `count` equal slices of [t_min, t_max) — off the deterministic ADDifT grid."""
    span = (t_max - t_min) / count
    return [min(999, int(t_min + span * (i + 0.25))) for i in range(count)]


def timestep_rows(t_values: list[int], items: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One evaluation batch for `items` items at every timestep: (item index per row, timestep per row), item-major,
    so a mode noises each of its items at each timestep in a single forward."""
    index = torch.arange(items).repeat_interleave(len(t_values))
    t = torch.tensor(t_values, device=device).repeat(items)
    return index, t


def _generator(ctx) -> torch.Generator:
    return torch.Generator().manual_seed(ctx.seed + REPORT_SEED_OFFSET)


def _msd(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean())


@torch.no_grad()
def ileco_report(ctx, mode, n_unrelated: int, size_px, erase: bool, unrelated_prompts) -> dict:
    s = ctx.settings
    g = _generator(ctx)
    shape = (EVAL_SAMPLES, 4, size_px[0] // 8, size_px[1] // 8)
    num = {"E": 0.0, "T": 0.0}
    den = 0.0
    p_num = [0.0] * n_unrelated
    p_den = [0.0] * n_unrelated
    per_t = {}
    for t_value in eval_timesteps(s.train_min_timesteps, s.train_max_timesteps):
        x = torch.randn(shape, generator=g).to(ctx.device, ctx.model_dtype)
        t = torch.full((EVAL_SAMPLES,), t_value, device=ctx.device)

        def eps(which, m):
            with ctx.network.at(m):
                return common.predict(ctx, x, t, *mode.cond_at(ctx, which, m), size_px)

        orig0, orig1, targ0 = eps("original", 0.0), eps("original", 1.0), eps("target", 0.0)
        d, e, tr = _msd(orig0, targ0), _msd(orig1, eps("target", 1.0)), _msd(orig1, targ0)
        den, num["E"], num["T"] = den + d, num["E"] + e, num["T"] + tr
        per_t[t_value] = {"E": e / max(d, 1e-12), "T": tr / max(d, 1e-12)}
        empty0 = eps("empty", 0.0)
        for i in range(n_unrelated):
            other0 = eps(i, 0.0)
            p_num[i] += _msd(eps(i, 1.0), other0)
            p_den[i] += _msd(other0, empty0)
    per_prompt = {prompt: p_num[i] / max(p_den[i], 1e-12) for i, prompt in enumerate(unrelated_prompts)}
    key = "E" if erase else "T"
    value = num[key] / max(den, 1e-12)
    preservation = sum(per_prompt.values()) / len(per_prompt)
    return {
        "mode": "iLECO",
        "headline": {key: value, "P": preservation},
        "erase" if erase else "transfer": value,
        "preservation": preservation,
        "preservation_per_prompt": per_prompt,
        "per_timestep": per_t,
        "held_out": {"timesteps": eval_timesteps(s.train_min_timesteps, s.train_max_timesteps),
                     "samples_per_timestep": EVAL_SAMPLES, "seed": ctx.seed + REPORT_SEED_OFFSET},
        "definitions": DEFINITIONS,
    }


@torch.no_grad()
def pair_report(ctx, original: torch.Tensor, target: torch.Tensor, cond_original, cond_target, unit: float,
                size_px, mode_name: str, extra: dict | None = None, fit: str = "relation") -> dict:
    """`original`/`target`: latents (1, 4, h, w); conds: (hidden, pooled) as the mode uses them.

    fit="relation" (ADDifT): R compares ε_L(x_t(T)) with ε_ref(x_t(O)); fit="denoise" (Difference pass 2):
    R = ‖ε_L(x_t(T)) − y‖² / ‖ε_ref(x_t(T)) − y‖², y the diffusion target of T — the LoRA, on top of the copier,
    makes the model reproduce the target image."""
    s = ctx.settings
    g = _generator(ctx)
    timesteps = eval_timesteps(s.train_min_timesteps, s.train_max_timesteps)
    r_num = r_den = 0.0
    cosines, ratios = [], []
    for t_value in timesteps:
        noise = torch.randn(original.shape, generator=g).to(original)
        t = torch.full((original.shape[0],), t_value, device=ctx.device)
        x_orig = diffusion.add_noise(original, noise, t, ctx.alpha_bar)
        x_targ = diffusion.add_noise(target, noise, t, ctx.alpha_bar)

        def eps(x, cond, m):
            with ctx.network.at(m):
                return common.predict(ctx, x, t, *cond, size_px).float()

        ref_targ = eps(x_targ, cond_target, 0.0)
        lora_targ = eps(x_targ, cond_target, unit)
        goal = eps(x_orig, cond_original, 0.0) if fit == "relation" else ctx.diffusion_target(target, noise, t).float()
        r_num += _msd(lora_targ, goal)
        r_den += _msd(ref_targ, goal)
        plus, minus = lora_targ - ref_targ, eps(x_targ, cond_target, -unit) - ref_targ
        double = eps(x_targ, cond_target, 2 * unit) - ref_targ
        cosines.append(float(torch.nn.functional.cosine_similarity(plus.flatten(), minus.flatten(), dim=0)))
        ratios.append(float(double.norm() / plus.norm().clamp(min=1e-12)))
    fit = r_num / max(r_den, 1e-12)
    cos = sum(cosines) / len(cosines)
    ratio = sum(ratios) / len(ratios)
    return {
        "mode": mode_name,
        "headline": {"R": fit, "slider_cos": cos, "slider_ratio": ratio, **(extra or {})},
        "pair_fit": fit,
        "slider": {"unit_multiplier": unit, "cos_plus_minus": cos, "norm_ratio_2_to_1": ratio,
                   "per_timestep_cos": cosines, "per_timestep_ratio": ratios},
        "held_out": {"timesteps": timesteps, "seed": ctx.seed + REPORT_SEED_OFFSET},
        "definitions": DEFINITIONS,
        **(extra or {}),
    }
