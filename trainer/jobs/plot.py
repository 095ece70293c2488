"""The Plot tab: loss (raw and EMA), the evaluation loss when it was measured, and learning rates of a run on twin
axes, from a CSV under logs/ or from the running job's history. Figures are built without pyplot, so no global
matplotlib backend is touched."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .logs import read_log


def find_log(name: str, logs_dir: Path) -> Path:
    """`<name>.csv` anywhere under logs_dir; blank → the most recently written CSV there."""
    logs_dir = Path(logs_dir)
    name = str(name or "").strip()
    if name:
        stem = name[:-4] if name.lower().endswith(".csv") else name
        found = sorted(logs_dir.rglob(f"{stem}.csv"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise UserError(f"no log named {stem}.csv under {logs_dir}")
        return found[-1]
    found = sorted(logs_dir.rglob("*.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no training logs under {logs_dir} yet (tick logging_save_csv, or train first)")
    return found[-1]


def series_from_log(path: Path) -> dict:
    """{"step": [...], "loss": EMA, "raw": raw loss or None, "lrs": {label: [...]}, "eval": [(step, loss)] or None}
    from a CSV log."""
    frame = read_log(path)
    lr_columns = [c for c in frame.columns if str(c).startswith("Learning Rate")]
    evaluated = frame.dropna(subset=["Eval Loss"]) if "Eval Loss" in frame.columns else None
    return {
        "step": frame["Step"].tolist(),
        "loss": frame["Loss"].tolist(),
        "raw": frame["Raw Loss"].tolist() if "Raw Loss" in frame.columns else None,
        "lrs": {c: frame[c].tolist() for c in lr_columns},
        "eval": list(zip(evaluated["Step"].tolist(), evaluated["Eval Loss"].tolist())) if evaluated is not None
        else None,
    }


def series_from_history(history, eval_history=()) -> dict:
    """The same from RunStatus.history rows (step, raw, ema, *lrs) and eval_history rows (step, eval loss)."""
    rows = list(history)
    if not rows:
        raise UserError("the running job has no steps yet")
    groups = len(rows[0]) - 3
    return {
        "step": [r[0] for r in rows],
        "loss": [r[2] for r in rows],
        "raw": [r[1] for r in rows],
        "lrs": {f"Learning Rate {i + 1}": [r[3 + i] for r in rows] for i in range(groups)},
        "eval": [tuple(r) for r in eval_history] or None,
    }


def loss_figure(series: dict, title: str = "Training Result"):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 6))
    ax = figure.add_subplot(111)
    if series.get("raw") is not None:
        ax.plot(series["step"], series["raw"], color="tab:red", alpha=0.25, linewidth=0.8, label="Loss (raw)")
    ax.plot(series["step"], series["loss"], color="tab:red", label="Loss (EMA)")
    if series.get("eval"):
        steps, values = zip(*series["eval"])
        ax.plot(steps, values, color="tab:green", marker="o", markersize=3, label="Eval Loss")
    ax.set_xlabel("Step")
    ax.set_ylabel("Loss", color="tab:red")
    ax.grid(True, alpha=0.3)
    lr_axis = ax.twinx()
    for label, values in series["lrs"].items():
        lr_axis.plot(series["step"], values, linestyle="--", label=label)
    lr_axis.set_ylabel("Learning Rates", color="tab:blue")
    lines = ax.get_legend_handles_labels()
    more = lr_axis.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    ax.set_title(title)
    figure.tight_layout()
    return figure
