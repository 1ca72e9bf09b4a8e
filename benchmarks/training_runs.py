"""Training runs that benchmarks keep in fixed run dirs: train.py's config composed in-process, the same wiring as
train.py (store, env, training loop), and the guard that lets a rerun reuse a checkpoint only when it was trained
with the settings the benchmark asks for."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from configs import compose_config
from data.atomic import atomic_path
from data.task_store import open_training_data
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, config_to_yaml, load_checkpoint
from policy.training import train

# train.py config groups that decide what a model is: a run dir trained with others is another model, not reused
MODEL_KEYS = ("task", "obs", "seed", "policy", "objective", "sampler", "training", "dataset", "ema", "amp")


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked (bad arguments, a run dir or store holding something else)."""


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    """configs/train.yaml composed with ``overrides`` (hydra's compose API, no run dir)."""
    return compose_config("train", overrides)


def run_training(cfg: DictConfig, run_dir: Path, progress: bool = True) -> dict[str, Any]:
    """Train cfg's model in run_dir as train.py does (store collected if missing, rollouts on the task's env)."""
    data = open_training_data(cfg, progress)
    task = TaskEnv.from_config(OmegaConf.to_container(cfg.task, resolve=True)) if cfg.rollout.every > 0 else None
    return train(cfg, run_dir, data, rollout_task=task, progress=progress)


def differing_settings(cfg: DictConfig, ckpt: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The top-level config ``keys`` whose values in the checkpoint differ from ``cfg``'s."""
    stored = checkpoint_config(ckpt)
    wanted = yaml.safe_load(config_to_yaml(OmegaConf.to_container(cfg, resolve=True)))  # same round trip as stored
    return [key for key in keys if stored.get(key) != _without_new_neutral(wanted.get(key), stored.get(key))]


def _without_new_neutral(wanted: Any, stored: Any) -> Any:
    """``wanted`` without the options a newer config added at a neutral value (0, False, None) that ``stored``
    lacks: such an option keeps the old behaviour, so a model trained before it existed still matches."""
    if not isinstance(wanted, dict) or not isinstance(stored, dict):
        return wanted
    return {
        k: _without_new_neutral(v, stored.get(k)) for k, v in wanted.items() if k in stored or v not in (0, False, None)
    }


def existing_checkpoint(
    cfg: DictConfig, run_dir: Path, reuse: bool, same_model_keys: Sequence[str]
) -> dict[str, Any] | None:
    """run_dir's latest checkpoint (None if there is none); BenchmarkError unless reuse and it matches cfg's model."""
    latest = Path(run_dir) / "checkpoints" / "latest.ckpt"
    if not latest.exists():
        return None
    if not reuse:
        raise BenchmarkError(f"{run_dir} already holds a checkpoint; pass --reuse to keep it or delete the dir")
    ckpt = load_checkpoint(latest)
    differ = differing_settings(cfg, ckpt, same_model_keys)
    if differ:
        raise BenchmarkError(
            f"{run_dir} holds a model trained with other {differ} settings; delete it or pass another --work-dir"
        )
    return ckpt


def train_or_reuse(
    cfg: DictConfig, run_dir: Path, reuse: bool, same_model_keys: Sequence[str], progress: bool = True
) -> dict[str, Any]:
    """Train cfg's model in run_dir with its periodic rollouts (resuming with reuse); returns what it logged.

    KeyboardInterrupt when a signal stopped the training (its checkpoint is written; --reuse continues it).
    """
    ckpt = existing_checkpoint(cfg, run_dir, reuse, same_model_keys)
    start = time.perf_counter()
    if ckpt is None or ckpt["step"] < cfg.training.max_steps:
        summary = run_training(cfg, run_dir, progress=progress)
        if summary["stopped_by"]:
            raise KeyboardInterrupt(f"training stopped by {summary['stopped_by']}; rerun with --reuse to continue")
        ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.ckpt")
    return {
        "checkpoint": str(run_dir / "checkpoints" / "latest.ckpt"),
        "steps": int(ckpt["step"]),
        "train_time_s": float(ckpt["metrics"]["train_time_s"]),
        "steps_per_s": ckpt["step"] / ckpt["metrics"]["train_time_s"],
        "session_wall_time_s": time.perf_counter() - start,
        "evaluations": learning_curve(run_dir),
        "sampler": checkpoint_config(ckpt)["sampler"]["_target_"].rsplit(".", 1)[-1],
    }


def learning_curve(run_dir: Path) -> list[dict[str, float]]:
    """The rollouts a run logged during training: step, training seconds so far, success rate, mean max reward.

    Tasks whose success is a reward threshold (PushT) also log ``normalized_score``, kept when present.
    """
    records = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines() if line]
    keys = ("step", "train_time_s", "success_rate", "mean_max_reward", "normalized_score")
    return [{k: r[k] for k in keys if k in r} for r in records if "success_rate" in r]


def plot_learning_curves(
    panels: Mapping[str, Sequence[tuple[str, Sequence[Mapping[str, float]]]]],
    out: Path,
    references: Mapping[str, float] | None = None,
    metric: str = "success_rate",
) -> None:
    """``metric`` (success) against training minutes: one panel per key of ``panels``, one line per (label, curve).

    ``references`` draws a dashed line per panel (e.g. a published success rate). Lines of the same
    objective (the label's first word) share a colour.
    """
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))  # no pyplot: no GUI backend, no global figure registry
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = {"ddpm": "tab:blue", "flow": "tab:orange", "shortcut": "tab:green", "consistency": "tab:red"}
    for ax, (title, lines) in zip(axes, panels.items()):
        for label, curve in lines:
            minutes = [e["train_time_s"] / 60 for e in curve]
            color = colors.get(label.split()[0])
            ax.plot(minutes, [e[metric] for e in curve], marker="o", markersize=2.5, color=color, label=label)
        if references and title in references:
            ax.axhline(references[title], color="black", linestyle="--", linewidth=0.8, label="reference")
        ax.set(title=title, ylim=(-0.03, 1.03), xlabel="training minutes", ylabel=metric.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    shown: set[str] = set()
    for ax in axes[: len(panels)]:  # a legend wherever a line appears that no earlier legend named
        labels = set(ax.get_legend_handles_labels()[1])
        if labels - shown:
            ax.legend(fontsize=6)
            shown |= labels
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
