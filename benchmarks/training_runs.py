"""Training runs that benchmarks keep in fixed run dirs: train.py's config composed in-process, and the guard that
lets a rerun reuse a checkpoint only when it was trained with the settings the benchmark asks for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from policy.checkpoint import checkpoint_config, config_to_yaml, load_checkpoint

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked (bad arguments, a run dir or store holding something else)."""


def compose_train_config(overrides: Sequence[str]) -> DictConfig:
    """configs/train.yaml composed with ``overrides`` (hydra's compose API, no run dir)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("train", overrides=list(overrides))


def differing_settings(cfg: DictConfig, ckpt: Mapping[str, Any], keys: Sequence[str]) -> list[str]:
    """The top-level config ``keys`` whose values in the checkpoint differ from ``cfg``'s."""
    stored = checkpoint_config(ckpt)
    wanted = yaml.safe_load(config_to_yaml(OmegaConf.to_container(cfg, resolve=True)))  # same round trip as stored
    return [key for key in keys if stored.get(key) != wanted.get(key)]


def existing_checkpoint(cfg: DictConfig, run_dir: Path, reuse: bool, same_model_keys: Sequence[str]) -> dict[str, Any] | None:
    """run_dir's latest checkpoint (None if there is none); BenchmarkError unless reuse and it matches cfg's model."""
    latest = Path(run_dir) / "checkpoints" / "latest.ckpt"
    if not latest.exists():
        return None
    if not reuse:
        raise BenchmarkError(f"{run_dir} already holds a checkpoint; pass --reuse to keep it or delete the dir")
    ckpt = load_checkpoint(latest)
    differ = differing_settings(cfg, ckpt, same_model_keys)
    if differ:
        raise BenchmarkError(f"{run_dir} holds a model trained with other {differ} settings; delete it or pass "
                             "another --work-dir")
    return ckpt
