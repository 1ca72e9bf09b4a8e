"""Shared plumbing of the scripted experts: noise level, per-episode generator and uniform mode draw."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import gymnasium
import numpy as np


class ScriptedExpert(ABC):
    """Base of our experts: ``reset`` draws the mode uniformly, then ``_plan_episode`` reads the task."""

    mode_names: tuple[str, ...]
    mode_instructions: tuple[str, ...]  # the task instruction of each mode, in mode_names order

    @property
    def instruction(self) -> str:
        """The instruction of the current episode's mode (what collection stores in meta/instruction)."""
        return self.mode_instructions[self.mode]

    def __init__(self, noise_std: float = 0.003) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std={noise_std} must be >= 0")
        self.noise_std = noise_std
        self.mode = 0
        self._rng = np.random.default_rng(0)

    def reset(self, env: gymnasium.Env, rng: np.random.Generator) -> None:
        """Adopt the episode's generator, draw the mode uniformly (its first draw) and plan the episode."""
        self._rng = rng
        self.mode = int(rng.integers(len(self.mode_names)))
        self._plan_episode(env.unwrapped)

    @abstractmethod
    def _plan_episode(self, task: Any) -> None:
        """Read the task's constants (goal, obstacles, bounds) and set up the plan for ``self.mode``."""

    @abstractmethod
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Next action from the low-dim state, including Gaussian noise (``self._noise``)."""

    def _noise(self, dim: int) -> np.ndarray:
        """Gaussian action noise (dim,) with std ``noise_std``."""
        return self._rng.normal(0.0, self.noise_std, dim)
