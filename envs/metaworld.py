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
from types import ModuleType
from typing import Any

from envs.gl import select_gl_backend

select_gl_backend()

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from envs.metaworld_tasks import METAWORLD_TASK_NAMES  # noqa: E402
from envs.rendering import OffscreenRenderers  # noqa: E402

STATE_DIM = 39  # MetaWorld's observation: hand xyz, gripper opening, objects, previous frame, goal xyz
AGENT_POS_DIM = 4  # hand xyz (m) + gripper opening (0 closed .. 1 open)
ACTION_DIM = 4  # hand displacement xyz (x 1 cm per step) + gripper effort, each in [-1, 1]
# MetaWorld 3.1 internals the adapter sets (see __init__); checked so a different version fails loudly.
_SIM_ATTRIBUTES = ("_set_task_called", "_partially_observable", "_freeze_rand_vec", "seeded_rand_vec", "max_path_length")


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


class MetaWorldEnv(gymnasium.Env):
    """A MetaWorld v3 task with observation dict {image, agent_pos, state}, seeded layouts and fast rendering."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task_name: str,
        *,
        image_size: int = 96,
        camera: str = "corner",
        render_size: int = 256,
        render_camera: str | None = None,
        render_mode: str | None = "rgb_array",
        include_image: bool = True,
        terminate_on_success: bool = False,
    ) -> None:
        if task_name not in METAWORLD_TASK_NAMES:
            raise ValueError(f"unknown MetaWorld task {task_name!r}; choose one of {list(METAWORLD_TASK_NAMES)}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None")
        if image_size <= 0 or render_size <= 0:
            raise ValueError(f"image_size={image_size} and render_size={render_size} must be positive")

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
        camera_names = [model.camera(i).name for i in range(model.ncam)]
        render_camera = camera if render_camera is None else render_camera
        for name in (camera, render_camera):
            if name not in camera_names:
                raise ValueError(f"camera {name!r} is not in MetaWorld's scene; choose one of {camera_names}")
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.mat_reflectance[:] = 0  # the floor's mirror pass: 40% of a CPU render, < 0.2% of pixels change
        largest = max(image_size, render_size)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, largest)
        model.vis.global_.offheight = max(model.vis.global_.offheight, largest)
        mujoco.mj_forward(model, self.sim.data)
        # cam_xmat rows are world axes, columns camera axes; [2, 1] is the world-z part of the image's up.
        self.upside_down_cameras = frozenset(
            name for i, name in enumerate(camera_names) if self.sim.data.cam_xmat[i].reshape(3, 3)[2, 1] < 0
        )

        self.task_name = task_name
        self.image_size = image_size
        self.camera = camera
        self.render_size = render_size
        self.render_camera = render_camera
        self.render_mode = render_mode
        self.include_image = include_image
        self.terminate_on_success = terminate_on_success
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.sim.dt)}
        self._renderers = OffscreenRenderers(self.sim.model)

        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        obs_spaces: dict[str, spaces.Space] = {}
        if include_image:
            obs_spaces["image"] = spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        obs_spaces["agent_pos"] = spaces.Box(-np.inf, np.inf, (AGENT_POS_DIM,), np.float32)
        obs_spaces["state"] = spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Draw a new object/goal layout from ``self.np_random`` and return (obs, info); success is judged from the first step on."""
        super().reset(seed=seed)
        self.sim.np_random = self.np_random
        state, _ = self.sim.reset()  # (39,) float64
        return self._get_obs(state), {"is_success": False}

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Clip the action to [-1, 1], advance MetaWorld one step and return the 5-tuple with MetaWorld's reward."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} != action space shape {self.action_space.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}; the policy output must be finite")
        state, reward, _, _, sim_info = self.sim.step(np.clip(action, -1.0, 1.0))  # state (39,) float64
        success = bool(sim_info["success"])
        terminated = success and self.terminate_on_success
        return self._get_obs(state), float(reward), terminated, False, {"is_success": success}

    def render(self) -> np.ndarray | None:
        """Return an RGB frame (render_size, render_size, 3) uint8 from render_camera, or None if render_mode is None."""
        if self.render_mode is None:
            return None
        return self.render_camera_image(self.render_camera, self.render_size)

    def close(self) -> None:
        """Release the offscreen renderers (OpenGL contexts) and MetaWorld's env."""
        self._renderers.close()
        self.sim.close()

    def render_camera_image(self, camera: str, size: int) -> np.ndarray:
        """Render a (size, size, 3) uint8 image from a named camera, upright, reusing one renderer per size."""
        image = self._renderers.render(self.sim.data, camera, size)  # (size, size, 3) uint8
        return np.ascontiguousarray(image[::-1, ::-1]) if camera in self.upside_down_cameras else image

    def _get_obs(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Observation dict from MetaWorld's (39,) state: optional camera image, agent_pos (4,), state (39,)."""
        obs: dict[str, np.ndarray] = {}
        if self.include_image:
            obs["image"] = self.render_camera_image(self.camera, self.image_size)  # (H, W, 3) uint8
        state = state.astype(np.float32)
        obs["agent_pos"] = state[:AGENT_POS_DIM].copy()
        obs["state"] = state
        return obs
