"""Base class for actchunk's MuJoCo tasks: MJCF from a string, offscreen rendering, obs dict, checks.

Written on ``gymnasium.Env`` rather than gymnasium's ``MujocoEnv`` because that class loads MJCF from
files, renders through its own viewer stack with MuJoCo's (slow on CPU) default quality, and returns
flat observation vectors; our tasks need an observation dict with a camera image, fast offscreen
rendering (shadows and multisampling off) and strict action checks.

Subclasses set ``self.action_space`` (a float32 ``Box``) and any task constants, call
``super().__init__(xml, ...)``, and implement four hooks that only use ``self.model`` / ``self.data``
and those constants: ``_reset_task``, ``_apply_action``, ``_low_dim_obs`` and ``_evaluate``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from envs.camera_env import CameraTaskEnv

# MuJoCo resets the state itself when it detects these, so they are the only trace of a blow-up.
_INSTABILITY_WARNINGS = tuple(
    int(w)
    for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQACC)
)


class SimulationError(RuntimeError):
    """The physics state became non-finite (unstable simulation)."""


class MujocoTaskEnv(CameraTaskEnv):
    """Base for our MuJoCo tasks: MJCF from a string, control timing, physics stability check, task hooks."""

    def __init__(
        self,
        xml: str,
        *,
        image_size: int = 96,
        obs_camera: str,
        render_size: int = 256,
        render_camera: str | None = None,
        frame_skip: int,
        control_dt: float = 0.1,
        render_mode: str | None = "rgb_array",
        include_image: bool = True,
        terminate_on_success: bool = False,
    ) -> None:
        action_space = getattr(self, "action_space", None)
        if not isinstance(action_space, spaces.Box) or action_space.dtype != np.float32:
            raise TypeError(
                f"{type(self).__name__} must set self.action_space to a float32 gymnasium.spaces.Box "
                "before calling MujocoTaskEnv.__init__"
            )
        if frame_skip < 1:
            raise ValueError(f"frame_skip={frame_skip} must be >= 1")

        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        sim_dt = self.model.opt.timestep * frame_skip
        if not np.isclose(sim_dt, control_dt, rtol=1e-6, atol=1e-9):
            raise ValueError(
                f"timestep {self.model.opt.timestep} x frame_skip {frame_skip} = {sim_dt} s differs from "
                f"control_dt {control_dt} s; change frame_skip or the MJCF <option timestep>"
            )
        self._setup_rendering(
            self.model,
            image_size=image_size,
            render_size=render_size,
            obs_camera=obs_camera,
            render_camera=obs_camera if render_camera is None else render_camera,
            render_mode=render_mode,
            include_image=include_image,
            terminate_on_success=terminate_on_success,
            scene="MJCF",
        )
        self.frame_skip = frame_skip
        self.control_dt = control_dt
        self.metadata = {**self.metadata, "render_fps": round(1.0 / control_dt)}
        mujoco.mj_forward(self.model, self.data)
        self._setup_observation_space()

    # ----- hooks implemented by each task -----

    @abstractmethod
    def _reset_task(self, rng: np.random.Generator) -> None:
        """Randomize initial object and agent poses in ``self.data`` (the base then calls mj_forward)."""

    @abstractmethod
    def _apply_action(self, action: np.ndarray) -> None:
        """Set ctrl / mocap targets from the clipped action; called once per control step."""

    @abstractmethod
    def _evaluate(self) -> tuple[float, bool]:
        """Return (reward, is_success) for the current state."""

    # ----- gymnasium API -----

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset the physics, randomize the task from ``self.np_random`` and return (obs, info)."""
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self._reset_task(self.np_random)
        mujoco.mj_forward(self.model, self.data)
        _, success = self._evaluate()
        return self._get_obs(), {"is_success": success}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Clip the action, advance one control step (frame_skip physics steps) and return the 5-tuple."""
        self._apply_action(self.check_action(action))
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        if any(self.data.warning[w].number for w in _INSTABILITY_WARNINGS):
            raise SimulationError(
                f"{type(self).__name__}: physics state became non-finite (MuJoCo reset it); the MJCF is unstable"
            )
        reward, success = self._evaluate()
        terminated = bool(success and self.terminate_on_success)
        return self._get_obs(), float(reward), terminated, False, {"is_success": success, **self._step_info()}

    def _step_info(self) -> dict[str, Any]:
        """Task-specific entries of a step's info (e.g. PickPlace's ``outcome``, the bin holding the cube)."""
        return {}

    def _render_data(self) -> mujoco.MjData:
        """The simulation state to draw."""
        return self.data
