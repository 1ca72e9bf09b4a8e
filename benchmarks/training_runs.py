"""Training runs that benchmarks keep in fixed run dirs: train.py's config composed in-process, the same wiring as
train.py (store, env, training loop), and the guard that lets a rerun reuse a checkpoint only when it was trained
with the settings the benchmark asks for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from configs import compose_config
from data.task_store import open_training_data
from envs.task_env import TaskEnv
from policy.checkpoint import checkpoint_config, config_to_yaml, load_checkpoint
from policy.training import train


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
    return [key for key in keys if stored.get(key) != wanted.get(key)]


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
