"""Shared base of the planar pushing tasks (PushT, PushAround): a pusher on x/y slides, a block on x/y/yaw.

Subclass MJCF contract: joints in qpos order ``block x, block y, block yaw, pusher x, pusher y`` and two
position actuators on the pusher joints; a camera named ``top``. The action is the pusher's absolute
(x, y) target in the workspace frame, at 10 Hz.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from envs.mujoco_env import MujocoTaskEnv


class PlanarPushEnv(MujocoTaskEnv):
    """Pusher-and-block task: action = pusher (x, y) target; agent_pos = pusher; state = pusher, block pose."""

    def __init__(
        self, xml: str, *, workspace: float, image_size: int = 96, render_size: int = 256, **kwargs: Any
    ) -> None:
        self.action_space = spaces.Box(-workspace, workspace, (2,), np.float32)
        self.workspace = workspace
        kwargs = {"obs_camera": "top", "frame_skip": 10, **kwargs}
        super().__init__(xml, image_size=image_size, render_size=render_size, **kwargs)

    def _apply_action(self, action: np.ndarray) -> None:
        """The action is the pusher's absolute (x, y) position target."""
        self.data.ctrl[:] = action

    def _low_dim_obs(self) -> dict[str, np.ndarray]:
        """agent_pos: pusher (x, y); state: pusher (x, y), block (x, y), block (cos yaw, sin yaw)."""
        qpos = self.data.qpos  # (5,) block x, y, yaw, pusher x, y
        pusher = qpos[3:5]
        yaw = qpos[2]
        state = np.array([pusher[0], pusher[1], qpos[0], qpos[1], np.cos(yaw), np.sin(yaw)], np.float32)
        return {"agent_pos": pusher.astype(np.float32), "state": state}
