"""The CSV loss log, in upstream's layout: a header block of key,value lines, then
`Step,Loss,Learning Rate 1[,Learning Rate 2 ...],Raw Loss[,Eval Loss]` rows (Loss is the EMA; the raw loss comes
after upstream's columns so tools that read them by position still work; Eval Loss only when the evaluation loss is
on, blank on the steps it is not measured)."""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path

from ..fileio import write_text_atomic
from ..paths import LOGS_DIR

HEADER_KEYS = ("network_rank", "network_alpha", "train_learning_rate", "train_iterations", "train_lr_scheduler",
               "model_version", "train_optimizer", "save_lora_name")
# Values a step may log beyond the loss (engine hooks), by event key → column name, in column order.
EXTRA_COLUMNS = {"eval_loss": "Eval Loss"}


def csv_path(name: str, when: datetime.datetime | None = None, logs_dir: Path = LOGS_DIR, suffix: str = "") -> Path:
    when = when or datetime.datetime.now()
    return Path(logs_dir) / when.strftime("%Y%m%d") / f"{name}{suffix}-{when.strftime('%Y%m%d_%H%M%S')}.csv"


class LossLog:
    """Created whole (header block and column names, through fileio), then one whole row appended per step."""

    def __init__(self, path: Path, header: dict, lr_groups: int, extra: tuple[str, ...] = ()):
        """`extra`: keys of EXTRA_COLUMNS this log has."""
        self.path = Path(path)
        self.extra = tuple(extra)
        text = io.StringIO()
        writer = csv.writer(text)
        for key in HEADER_KEYS:
            writer.writerow([key, header.get(key, "")])
        writer.writerow(["Step", "Loss", *[f"Learning Rate {i + 1}" for i in range(lr_groups)], "Raw Loss",
                         *[EXTRA_COLUMNS[key] for key in self.extra]])
        write_text_atomic(self.path, text.getvalue())

    def add_header(self, key: str, value) -> None:
        """One more key,value line at the end of the header block (e.g. the peak GPU memory, known at the end)."""
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith("Step,"))
        row = io.StringIO()
        csv.writer(row).writerow([key, value])
        write_text_atomic(self.path, "".join(lines[:at]) + row.getvalue() + "".join(lines[at:]))

    def append(self, step: int, loss_ema: float, lrs: list[float], raw_loss: float, **values) -> None:
        """One row; `values` by EXTRA_COLUMNS key (missing: blank); other keys (a step event's) are not logged."""
        extra = ["" if values.get(key) is None else values[key] for key in self.extra]
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerow([step, loss_ema, *lrs, raw_loss, *extra])


def read_log(path: str | Path):
    """The data rows of a log as a pandas DataFrame (the header block is skipped)."""
    import pandas as pd

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Step"))
    return pd.read_csv(path, skiprows=start)
