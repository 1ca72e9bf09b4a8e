"""A training run's log: one JSON line per record, TensorBoard scalars, and a PNG of the loss curves.

``log.jsonl`` is the record of truth (resume drops the records newer than the checkpoint it continues
from, so a resumed run's log matches an uninterrupted one); TensorBoard mirrors the scalars.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from data.atomic import atomic_path, write_text_atomic


class RunLog:
    """Appends one JSON line per record and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        self.path = run_dir / "log.jsonl"
        if self.path.exists():  # drop records newer than the checkpoint we resume from
            kept = [
                line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step
            ]
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)

    def write(self, step: int, **scalars: float | None) -> None:
        """Record the non-None scalars at ``step``."""
        values = {k: v for k, v in scalars.items() if v is not None}
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        self.writer.close()


def plot_losses(log_path: Path, out: Path) -> None:
    """Write a PNG of training and validation loss against step."""
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    fig = Figure(figsize=(6, 4))  # no pyplot: no GUI backend, no global figure registry
    ax = fig.subplots()
    for key in ("loss", "val_loss"):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), label=key, marker="o" if key == "val_loss" else None)
    ax.set(xlabel="optimizer step", ylabel="loss", yscale="log", title=out.parent.name)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
