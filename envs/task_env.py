"""A task's env as evaluation needs it: a picklable factory built from a resolved ``configs/task/*.yaml``.

``TaskEnv`` is what ``policy.evaluation`` receives (it never imports ``envs``): the env id, the control
rate for videos, and a no-argument factory per observation set. The factory is a module-level function
bound with ``functools.partial``, so vector-env workers that unpickle it import ``envs`` and with it the
``actchunk/*`` registrations.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium

from envs import check_env_id

TASK_ENV_KEYS = ("env_id", "env_kwargs", "max_episode_steps", "fps")


def make_task_env(env_id: str, **kwargs: Any) -> gymnasium.Env:
    """``gymnasium.make(env_id, **kwargs)`` after checking that the id is one of ours."""
    check_env_id(env_id)
    return gymnasium.make(env_id, **kwargs)


@dataclass(frozen=True)
class TaskEnv:
    """Env id, episode length, control rate and env kwargs of one task."""

    env_id: str
    env_kwargs: Mapping[str, Any]
    max_episode_steps: int
    fps: int

    @classmethod
    def from_config(cls, task_cfg: Mapping[str, Any]) -> TaskEnv:
        """Read a resolved task config; ValueError naming the missing keys."""
        missing = [key for key in TASK_ENV_KEYS if key not in task_cfg]
        if missing:
            raise ValueError(f"task config lacks {missing}; it must be a resolved configs/task/<name>.yaml")
        check_env_id(str(task_cfg["env_id"]))
        return cls(
            env_id=str(task_cfg["env_id"]),
            env_kwargs=dict(task_cfg["env_kwargs"]),
            max_episode_steps=int(task_cfg["max_episode_steps"]),
            fps=int(task_cfg["fps"]),
        )

    def factory(self, include_image: bool = True) -> Callable[[], gymnasium.Env]:
        """A picklable no-argument factory for the env, ending episodes at the first success.

        ``include_image=False`` skips rendering the observation camera (for state-based policies); the
        task's own env_kwargs win over both defaults.
        """
        kwargs = {"terminate_on_success": True, "include_image": include_image, **self.env_kwargs}
        return functools.partial(
            make_task_env, self.env_id, max_episode_steps=self.max_episode_steps, disable_env_checker=True, **kwargs
        )
