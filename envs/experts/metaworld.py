"""MetaWorld's own scripted policy for the task at hand (``metaworld.policies``), as an actchunk expert.

The policy is looked up by the env's task name at every reset, so one expert class serves all 50
tasks; it reads the 39-d ``state`` observation (goal included). Optional Gaussian noise is added to
each action, which is then clipped to the action bounds [-1, 1].
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from envs.experts.base import ScriptedExpert
from envs.metaworld import import_metaworld
from envs.metaworld_tasks import METAWORLD_INSTRUCTIONS

# metaworld.policies.policy.move warns about its own gains on most steps; the env clips actions anyway.
_GAIN_WARNING = r"Constant\(s\) may be too high"


class MetaWorldExpert(ScriptedExpert):
    """MetaWorld's scripted policy for the env's task, with optional Gaussian action noise."""

    mode_names = ("expert",)
    mode_instructions = ("",)  # replaced by the task's instruction when an episode is planned

    def __init__(self, noise_std: float = 0.0) -> None:
        super().__init__(noise_std=noise_std)
        self._policy: Any = None

    def _plan_episode(self, task: Any) -> None:
        """Pick MetaWorld's policy for ``task.task_name`` (a MetaWorldEnv)."""
        task_name = getattr(task, "task_name", None)
        policy_map = import_metaworld("metaworld.policies").ENV_POLICY_MAP
        if task_name not in policy_map:
            raise ValueError(f"MetaWorldExpert needs an actchunk MetaWorld env, got {type(task).__name__}")
        self._policy = policy_map[task_name]()
        self.mode_instructions = (METAWORLD_INSTRUCTIONS[task_name],)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Next action (4,) from obs["state"] (39,): MetaWorld's policy plus noise, clipped to [-1, 1]."""
        if self._policy is None:
            raise RuntimeError("call reset(env, rng) before act(obs)")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_GAIN_WARNING, category=UserWarning)
            action = self._policy.get_action(obs["state"].astype(np.float64))  # (4,)
        return np.clip(action + self._noise(action.shape[0]), -1.0, 1.0).astype(np.float32)
