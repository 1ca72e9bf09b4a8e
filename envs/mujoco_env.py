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

from abc import ABC, abstractmethod
from typing import Any

from envs.gl import select_gl_backend

select_gl_backend()

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from envs.rendering import OffscreenRenderers  # noqa: E402

# MuJoCo resets the state itself when it detects these, so they are the only trace of a blow-up.
_INSTABILITY_WARNINGS = tuple(
    int(w) for w in (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL, mujoco.mjtWarning.mjWARN_BADQACC)
)


class SimulationError(RuntimeError):
    """The physics state became non-finite (unstable simulation)."""


class MujocoTaskEnv(gymnasium.Env, ABC):
    """Base for our MuJoCo tasks: MJCF from a string, fast offscreen rendering, obs dict, NaN check, action clipping, close()."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

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
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None")
        if image_size <= 0 or render_size <= 0:
            raise ValueError(f"image_size={image_size} and render_size={render_size} must be positive")
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
        for camera in (obs_camera, render_camera):
            if camera is not None and mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera) < 0:
                raise ValueError(f"camera {camera!r} is not in the MJCF; add it or pass an existing camera name")

        quality = self.model.vis.quality
        quality.shadowsize = 0
        quality.offsamples = 0
        largest = max(image_size, render_size)
        self.model.vis.global_.offwidth = max(self.model.vis.global_.offwidth, largest)
        self.model.vis.global_.offheight = max(self.model.vis.global_.offheight, largest)

        self.frame_skip = frame_skip
        self.control_dt = control_dt
        self.image_size = image_size
        self.render_size = render_size
        self.obs_camera = obs_camera
        self.render_camera = obs_camera if render_camera is None else render_camera
        self.render_mode = render_mode
        self.include_image = include_image
        self.terminate_on_success = terminate_on_success
        self.metadata = {**self.metadata, "render_fps": round(1.0 / control_dt)}
        self._renderers = OffscreenRenderers(self.model)

        mujoco.mj_forward(self.model, self.data)
        obs_spaces: dict[str, spaces.Space] = {}
        if include_image:
            obs_spaces["image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        for key, value in self._low_dim_obs().items():
            obs_spaces[key] = spaces.Box(-np.inf, np.inf, value.shape, np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

    # ----- hooks implemented by each task -----

    @abstractmethod
    def _reset_task(self, rng: np.random.Generator) -> None:
        """Randomize initial object and agent poses in ``self.data`` (the base then calls mj_forward)."""

    @abstractmethod
    def _apply_action(self, action: np.ndarray) -> None:
        """Set ctrl / mocap targets from the clipped action; called once per control step."""

    @abstractmethod
    def _low_dim_obs(self) -> dict[str, np.ndarray]:
        """Return {"agent_pos": float32 (Dp,), "state": float32 (Ds,)} for the current state."""

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
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} != action space shape {self.action_space.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}; the policy output must be finite")
        action = np.clip(action, self.action_space.low, self.action_space.high)
        self._apply_action(action)
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        if any(self.data.warning[w].number for w in _INSTABILITY_WARNINGS):
            raise SimulationError(
                f"{type(self).__name__}: physics state became non-finite (MuJoCo reset it); the MJCF is unstable"
            )
        reward, success = self._evaluate()
        terminated = bool(success and self.terminate_on_success)
        return self._get_obs(), float(reward), terminated, False, {"is_success": success}

    def render(self) -> np.ndarray | None:
        """Return an RGB frame (render_size, render_size, 3) uint8 from render_camera, or None if render_mode is None."""
        if self.render_mode is None:
            return None
        return self.render_camera_image(self.render_camera, self.render_size)

    def close(self) -> None:
        """Release the offscreen renderers (OpenGL contexts)."""
        self._renderers.close()

    # ----- helpers -----

    def render_camera_image(self, camera: str, size: int) -> np.ndarray:
        """Render a (size, size, 3) uint8 image from a named camera, reusing one renderer per size."""
        return self._renderers.render(self.data, camera, size)

    def _get_obs(self) -> dict[str, np.ndarray]:
        """Assemble the observation dict: optional camera image plus the task's low-dim keys."""
        obs: dict[str, np.ndarray] = {}
        if self.include_image:
            obs["image"] = self.render_camera_image(self.obs_camera, self.image_size)  # (H, W, 3) uint8
        obs.update(self._low_dim_obs())
        return obs
