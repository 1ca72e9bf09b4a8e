"""Open a task's demonstration store for training: collect it with the expert if missing, check it, window it.

The one place that decides whether a store fits a task config (same observation env settings, every key
the shape_meta names in its shape, finite low-dim values and actions), so train.py and the benchmarks refuse
a mismatched store with the same one-line message.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from data.collect import collect, format_summary, observation_env_kwargs
from data.dataset import SequenceDataset, TrainingData
from data.multitask import collect_multitask
from data.replay_buffer import ReplayBuffer

OBS_CHOICES = {"image": "shape_meta", "state": "state_shape_meta"}  # cfg.obs -> the task config's shape_meta key


def shape_meta_of(cfg: DictConfig) -> dict[str, Any]:
    """The task's shape_meta for ``cfg.obs`` (image: image + agent_pos; state: low-dim state)."""
    if cfg.obs not in OBS_CHOICES:
        raise ValueError(f"obs={cfg.obs!r} is unknown; choose one of {sorted(OBS_CHOICES)}")
    return OmegaConf.to_container(cfg.task[OBS_CHOICES[cfg.obs]], resolve=True)


def check_store(buffer: ReplayBuffer, path: Path, task_cfg: DictConfig, shape_meta: Mapping[str, Any]) -> None:
    """ValueError naming the problem and the fix unless the store fits the task config and holds finite values."""
    wanted = observation_env_kwargs(task_cfg.env_kwargs)
    if "env_kwargs" in buffer.attrs and buffer.attrs["env_kwargs"] != wanted:
        raise ValueError(
            f"store {path} was collected with env_kwargs {buffer.attrs['env_kwargs']}, the task config has {wanted}; "
            "set task.dataset_path to another store (it is collected if missing)"
        )
    for key, meta in [*shape_meta["obs"].items(), ("action", shape_meta["action"])]:
        if key not in buffer:
            raise ValueError(
                f"store {path} has no key {key!r} that the task's shape_meta needs; it has {buffer.keys()}"
            )
        stored = tuple(buffer.array(key).shape[1:])
        if stored != tuple(meta["shape"]):
            raise ValueError(
                f"store {path} holds {key!r} with shape {stored} but the task config says {tuple(meta['shape'])}; "
                "re-collect the store or fix the task config"
            )
    for key in [k for k, meta in shape_meta["obs"].items() if meta["type"] == "low_dim"] + ["action"]:
        values = np.asarray(buffer.array(key)[: buffer.n_steps])
        bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
        if len(bad):
            raise ValueError(
                f"store {path} has NaN/inf in {key!r} at step {bad[0]} ({len(bad)} steps); fix or re-collect it"
            )


def open_training_data(cfg: DictConfig, progress: bool = True) -> TrainingData:
    """Train and validation windows over the task's store (collected with the expert first if missing)."""
    shape_meta = shape_meta_of(cfg)
    path = Path(cfg.task.dataset_path)
    if not path.exists() and cfg.task.get("tasks"):
        print(f"dataset {path} not found: collecting {cfg.task.n_demos} expert episodes of each of its tasks first")
        collect_multitask(
            OmegaConf.to_container(cfg.task, resolve=True),
            cfg.task.n_demos,
            seed=cfg.dataset.collect_seed,
            n_workers=cfg.dataset.collect_workers,
            progress=progress,
        )
    elif not path.exists():
        print(f"dataset {path} not found: collecting {cfg.task.n_demos} expert episodes first")
        summary = collect(
            OmegaConf.to_container(cfg.task, resolve=True),
            cfg.task.n_demos,
            path,
            seed=cfg.dataset.collect_seed,
            n_workers=cfg.dataset.collect_workers,
            progress=progress,
        )
        print(format_summary(summary))
    buffer = ReplayBuffer.open(
        path,
        "r",
        in_memory=True,
        wait_for_writer=None,  # another process collecting the store: train on the finished store, not half of it
        on_wait=lambda pid: print(f"{path} is being written by PID {pid}; waiting for it to finish", flush=True),
    )
    check_store(buffer, path, cfg.task, shape_meta)
    horizons = dict(
        horizon=cfg.policy.horizon, n_obs_steps=cfg.policy.n_obs_steps, n_action_steps=cfg.policy.n_action_steps
    )
    train_set = SequenceDataset(
        buffer,
        obs_keys=list(shape_meta["obs"]),
        val_ratio=cfg.dataset.val_ratio,
        max_train_episodes=cfg.dataset.max_train_episodes,
        seed=cfg.seed,
        **horizons,
    )
    val_set = train_set.get_validation_dataset()
    if cfg.dataset.val_ratio > 0 and len(val_set) == 0:
        warnings.warn(
            f"dataset.val_ratio={cfg.dataset.val_ratio} of {buffer.n_episodes} episodes leaves no validation windows: "
            "no validation loss will be logged; raise dataset.val_ratio, or set it to 0 to train on every episode",
            stacklevel=2,
        )
    return TrainingData(train_set, val_set, shape_meta)
