"""Scripted demonstrators for actchunk's tasks and ``make_expert`` to build one by env id."""

from __future__ import annotations

import importlib
from typing import Protocol

import gymnasium
import numpy as np

from envs.metaworld_tasks import METAWORLD_TASK_NAMES, metaworld_env_id

# env id -> "module:Class" of its expert (imported on demand, like gymnasium entry points)
EXPERTS: dict[str, str] = {
    "actchunk/PushT-v0": "envs.experts.push_t:PushTExpert",
    "actchunk/PushAround-v0": "envs.experts.push_around:PushAroundExpert",
    "actchunk/PickPlace-v0": "envs.experts.pick_place:PickPlaceExpert",
    **{metaworld_env_id(name): "envs.experts.metaworld:MetaWorldExpert" for name in METAWORLD_TASK_NAMES},
}


class Expert(Protocol):
    """Closed-loop scripted demonstrator reading the low-dim state."""

    mode_names: tuple[str, ...]
    mode: int
    instruction: str  # the current episode's task instruction

    def reset(self, env: gymnasium.Env, rng: np.random.Generator) -> None:
        """Pick a mode uniformly at random and any per-episode plan."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Return the next action, including small Gaussian noise."""


def make_expert(env_id: str, *, noise_std: float | None = None) -> Expert:
    """Build the scripted expert for a registered task; noise_std None keeps the expert's default."""
    if env_id not in EXPERTS:
        raise ValueError(f"no scripted expert for {env_id!r}; choose one of {sorted(EXPERTS)}")
    module_name, class_name = EXPERTS[env_id].split(":")
    expert_cls = getattr(importlib.import_module(module_name), class_name)
    return expert_cls() if noise_std is None else expert_cls(noise_std=noise_std)
