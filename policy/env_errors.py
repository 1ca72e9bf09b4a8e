"""Env exceptions as ended episodes, so one failing env never aborts a whole evaluation.

``ReportEnvErrors`` turns an exception from ``reset``/``step`` into an ended episode whose
``info["error"]`` names it; ``policy.rollout`` wraps every env it makes in it, so a rollout records a
failed episode with its seed instead of stopping. This module imports only gymnasium and numpy:
vector-env workers unpickle it without loading torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np


def describe(exc: BaseException) -> str:
    """One line: exception type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


class ReportEnvErrors(gymnasium.Wrapper):
    """Turn an exception from reset/step into an ended episode with ``info["error"] = "<Type>: <message>"``."""

    def __init__(self, env: gymnasium.Env) -> None:
        super().__init__(env)
        self._last_obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the env; on an exception return a zero observation and the error in info."""
        try:
            self._last_obs, info = self.env.reset(**kwargs)
        except Exception as exc:  # any env failure ends the episode, reported with its seed
            self._last_obs = _zeros(self.observation_space)
            return self._last_obs, {"is_success": False, "error": describe(exc)}
        return self._last_obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step the env; on an exception end the episode (terminated) with the error in info."""
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as exc:  # any env failure ends the episode, reported with its seed
            return self._last_obs, 0.0, True, False, {"is_success": False, "error": describe(exc)}
        self._last_obs = obs
        return obs, reward, terminated, truncated, info


def make_reporting_env(make_env: Callable[[], gymnasium.Env]) -> ReportEnvErrors:
    """``make_env()`` wrapped in ``ReportEnvErrors`` (picklable through functools.partial)."""
    return ReportEnvErrors(make_env())


def _zeros(space: gymnasium.spaces.Space) -> Any:
    """A zero-filled observation of a Box or Dict-of-Box space."""
    if isinstance(space, gymnasium.spaces.Dict):
        return {key: _zeros(sub) for key, sub in space.spaces.items()}
    return np.zeros(space.shape, dtype=space.dtype)
