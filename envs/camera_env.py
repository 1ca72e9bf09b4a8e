"""What every actchunk env shares: an observation dict with an optional camera image, fast offscreen
rendering, strict action checks and ``close()``.

``CameraTaskEnv`` is the base of our own MuJoCo tasks (``envs.mujoco_env.MujocoTaskEnv``) and of the
MetaWorld adapter (``envs.metaworld.MetaWorldEnv``). A subclass builds its MuJoCo model, then calls
``_setup_rendering`` (render settings, camera checks, renderers) and ``_setup_observation_space``, and
implements ``_low_dim_obs`` (the low-dim keys of the current state) and ``_render_data`` (the ``MjData`` to
draw). Rendering turns shadows and multisampling off: on a CPU that is far faster than MuJoCo's defaults.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import gymnasium
import mujoco
import numpy as np
from gymnasium import spaces

from envs.rendering import OffscreenRenderers


class CameraTaskEnv(gymnasium.Env):
    """Base: obs dict {image?, low-dim keys}, render()/close(), action shape/finiteness checks and clipping."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def _setup_rendering(
        self,
        model: mujoco.MjModel,
        *,
        image_size: int,
        render_size: int,
        obs_camera: str,
        render_camera: str,
        render_mode: str | None,
        include_image: bool,
        terminate_on_success: bool,
        scene: str,
    ) -> None:
        """Validate the render settings and cameras (``scene`` names the model in errors), set fast quality."""
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r} is not supported; use 'rgb_array' or None")
        if image_size <= 0 or render_size <= 0:
            raise ValueError(f"image_size={image_size} and render_size={render_size} must be positive")
        names = [model.camera(i).name for i in range(model.ncam)]
        for camera in (obs_camera, render_camera):
            if camera not in names:
                raise ValueError(f"camera {camera!r} is not in the {scene}; choose one of {names}")
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        largest = max(image_size, render_size)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, largest)
        model.vis.global_.offheight = max(model.vis.global_.offheight, largest)
        self.image_size = image_size
        self.render_size = render_size
        self.obs_camera = obs_camera
        self.render_camera = render_camera
        self.render_mode = render_mode
        self.include_image = include_image
        self.terminate_on_success = terminate_on_success
        self._renderers = OffscreenRenderers(model)

    def _setup_observation_space(self) -> None:
        """Dict space: the uint8 camera image (if included) and one float32 Box per low-dim key."""
        obs_spaces: dict[str, spaces.Space] = {}
        if self.include_image:
            obs_spaces["image"] = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        for key, value in self._low_dim_obs().items():
            obs_spaces[key] = spaces.Box(-np.inf, np.inf, value.shape, np.float32)
        self.observation_space = spaces.Dict(obs_spaces)

    @abstractmethod
    def _low_dim_obs(self) -> dict[str, np.ndarray]:
        """Return {"agent_pos": float32 (Dp,), "state": float32 (Ds,)} for the current state."""

    @abstractmethod
    def _render_data(self) -> mujoco.MjData:
        """The simulation state to draw."""

    def _upright(self, camera: str, image: np.ndarray) -> np.ndarray:
        """Post-process a camera image (identity; MetaWorld rotates its upside-down cameras)."""
        return image

    def check_action(self, action: np.ndarray | Sequence[float]) -> np.ndarray:
        """The action as float64 clipped to the action space; ValueError for a wrong shape or NaN/inf."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(f"action shape {action.shape} != action space shape {self.action_space.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action contains NaN or inf: {action}; the policy output must be finite")
        return np.clip(action, self.action_space.low, self.action_space.high)

    def render(self) -> np.ndarray | None:
        """An RGB frame (render_size, render_size, 3) uint8 from render_camera, or None if render_mode is None."""
        if self.render_mode is None:
            return None
        return self.render_camera_image(self.render_camera, self.render_size)

    def close(self) -> None:
        """Release the offscreen renderers (OpenGL contexts)."""
        self._renderers.close()

    def render_camera_image(self, camera: str, size: int) -> np.ndarray:
        """Render a (size, size, 3) uint8 image from a named camera, reusing one renderer per size."""
        return self._upright(camera, self._renderers.render(self._render_data(), camera, size))

    def _get_obs(self) -> dict[str, np.ndarray]:
        """Assemble the observation dict: optional camera image plus the task's low-dim keys."""
        obs: dict[str, np.ndarray] = {}
        if self.include_image:
            obs["image"] = self.render_camera_image(self.obs_camera, self.image_size)  # (H, W, 3) uint8
        obs.update(self._low_dim_obs())
        return obs
