"""Any MetaWorld v3 task as an actchunk env: observation dict, seeded randomization, fast rendering.

Wraps MetaWorld's own ``SawyerXYZEnv`` (physics, rewards, success) rather than reimplementing it, but
owns three things MetaWorld gets in the way of:

* randomization: MetaWorld's goal-observable classes draw one object/goal layout at construction and
  then freeze it, and its unseeded draws use numpy's global generator. Here the goal stays in the
  39-d observation, a new layout is drawn on every reset, from this env's ``np_random``, so
  ``reset(seed=s)`` is reproducible and different seeds give different layouts;
* rendering: MetaWorld renders through gymnasium's viewer stack at MuJoCo's default quality. Here one
  offscreen ``mujoco.Renderer`` per image size is created lazily (one GL context per vector-env
  worker) with shadows, multisampling and reflections off, and images from cameras mounted upside down (image up
  pointing below the horizon at construction: ``corner``, ``corner2``, ``corner3``, ``corner4``) are
  rotated by 180 degrees, which is the view of the same camera rolled upright;
* episode length: MetaWorld raises after its 500-step horizon; here ``max_episode_steps`` (gymnasium's
  ``TimeLimit``) alone decides truncation.

MetaWorld is an optional extra and is imported when an env is built, not when ``envs`` is imported.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import mujoco
import numpy as np
from gymnasium import spaces

from envs.camera_env import CameraTaskEnv
from envs.metaworld_tasks import METAWORLD_TASK_NAMES

STATE_DIM = 39  # MetaWorld's observation: hand xyz, gripper opening, objects, previous frame, goal xyz
AGENT_POS_DIM = 4  # hand xyz (m) + gripper opening (0 closed .. 1 open)
ACTION_DIM = 4  # hand displacement xyz (x 1 cm per step) + gripper effort, each in [-1, 1]
# MetaWorld 3.1 internals the adapter sets (see __init__); checked so a different version fails loudly.
_SIM_ATTRIBUTES = (
    "_set_task_called",
    "_partially_observable",
    "_freeze_rand_vec",
    "seeded_rand_vec",
    "max_path_length",
)


class MetaWorldNotInstalledError(ImportError):
    """MetaWorld (the optional extra ``metaworld``) is not installed."""


def import_metaworld(module: str = "metaworld") -> ModuleType:
    """Import a MetaWorld module, or raise MetaWorldNotInstalledError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != "metaworld":
            raise
        raise MetaWorldNotInstalledError(
            "MetaWorld tasks need the optional extra: pip install -e .[metaworld]"
        ) from err


class MetaWorldEnv(CameraTaskEnv):
    """A MetaWorld v3 task with observation dict {image, agent_pos, state}, seeded layouts and fast rendering."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task_name: str,
        *,
        image_size: int = 96,
        camera: str = "corner",
        camera_pos: Sequence[float] | None = None,
        render_size: int = 256,
        render_camera: str | None = None,
        render_mode: str | None = "rgb_array",
        include_image: bool = True,
        terminate_on_success: bool = False,
    ) -> None:
        if task_name not in METAWORLD_TASK_NAMES:
            raise ValueError(f"unknown MetaWorld task {task_name!r}; choose one of {list(METAWORLD_TASK_NAMES)}")
        env_dict = import_metaworld("metaworld.env_dict")
        self.sim = env_dict.ALL_V3_ENVIRONMENTS[task_name]()  # MetaWorld's SawyerXYZEnv, no renderer of its own
        missing = [name for name in _SIM_ATTRIBUTES if not hasattr(self.sim, name)]
        if missing:
            raise RuntimeError(f"this MetaWorld lacks {missing}, which the adapter sets; pip install -e .[metaworld]")
        self.sim._set_task_called = True  # the layout comes from _get_state_rand_vec, not from a Task
        self.sim._partially_observable = False  # keep the goal in the observation
        self.sim.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden; MetaWorld clips to it
        self.sim._freeze_rand_vec = False  # draw a new layout on every reset ...
        self.sim.seeded_rand_vec = True  # ... from sim.np_random, which reset() sets to this env's generator
        self.sim.max_path_length = sys.maxsize  # truncation is TimeLimit's job

        model = self.sim.model
        model.mat_reflectance[:] = 0  # the floor's mirror pass: 40% of a CPU render, < 0.2% of pixels change
        if camera_pos is not None:  # e.g. DP3's corner2 moved close to the table: [0.6, 0.295, 0.8]
            camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
            if camera_id < 0 or len(camera_pos) != 3:
                raise ValueError(f"camera_pos={list(camera_pos)} needs 3 coordinates and an existing camera {camera!r}")
            model.cam_pos[camera_id] = np.asarray(camera_pos, dtype=np.float64)
        self._setup_rendering(
            model,
            image_size=image_size,
            render_size=render_size,
            obs_camera=camera,
            render_camera=camera if render_camera is None else render_camera,
            render_mode=render_mode,
            include_image=include_image,
            terminate_on_success=terminate_on_success,
            scene="MetaWorld's scene",
        )
        mujoco.mj_forward(model, self.sim.data)
        # cam_xmat rows are world axes, columns camera axes; [2, 1] is the world-z part of the image's up.
        self.upside_down_cameras = frozenset(
            model.camera(i).name for i in range(model.ncam) if self.sim.data.cam_xmat[i].reshape(3, 3)[2, 1] < 0
        )
        self.task_name = task_name
        self.camera = camera
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.sim.dt)}
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._state = np.zeros(STATE_DIM, dtype=np.float32)  # MetaWorld's latest (39,) observation
        self._setup_observation_space()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw a new object/goal layout from ``self.np_random``; returns (obs, info), success judged from step 1 on."""
        super().reset(seed=seed)
        self.sim.np_random = self.np_random
        state, _ = self.sim.reset()  # (39,) float64
        self._state = state.astype(np.float32)
        return self._get_obs(), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Clip the action to [-1, 1], advance MetaWorld one step and return the 5-tuple with MetaWorld's reward."""
        state, reward, _, _, sim_info = self.sim.step(self.check_action(action))  # state (39,) float64
        self._state = state.astype(np.float32)
        success = bool(sim_info["success"])
        terminated = success and self.terminate_on_success
        return self._get_obs(), float(reward), terminated, False, {"is_success": success}

    def close(self) -> None:
        """Release the offscreen renderers (OpenGL contexts) and MetaWorld's env."""
        super().close()
        self.sim.close()

    def _render_data(self) -> mujoco.MjData:
        """MetaWorld's simulation state."""
        return self.sim.data

    def _upright(self, camera: str, image: np.ndarray) -> np.ndarray:
        """Rotate images of upside-down cameras by 180 degrees (the same camera rolled upright)."""
        return np.ascontiguousarray(image[::-1, ::-1]) if camera in self.upside_down_cameras else image

    def _low_dim_obs(self) -> dict[str, np.ndarray]:
        """agent_pos (4,): hand xyz + gripper opening; state (39,): MetaWorld's observation."""
        return {"agent_pos": self._state[:AGENT_POS_DIM].copy(), "state": self._state.copy()}
